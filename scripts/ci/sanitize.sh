#!/usr/bin/env bash
# The C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (build/sanitize).
#   scripts/ci/sanitize.sh [FILTER]      FILTER is passed to the test runner (a test-name substring)
# Any ASan/UBSan report fails the run (halt_on_error / -fno-sanitize-recover).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bdir="$root/build/sanitize"
jobs="${DFL_JOBS:-$(nproc 2>/dev/null || echo 2)}"
start=$(date +%s)
# OpenMP stays on (the threaded paths are what the determinism tests exercise); set
# DFL_SANITIZE_OPENMP=OFF to build the single-threaded fallback instead.
cmake -S "$root" -B "$bdir" -DDFL_BUILD_ADDON=OFF -DDFL_BUILD_TESTS=ON -DDFL_OPENMP="${DFL_SANITIZE_OPENMP:-ON}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDFL_SANITIZE=address,undefined \
  -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=undefined" --log-level=WARNING
cmake --build "$bdir" --parallel "$jobs"
built=$(date +%s)
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
"$bdir/dfl_native_tests" "$@"
end=$(date +%s)
echo "sanitize: build $((built - start)) s, tests $((end - built)) s, total $((end - start)) s (address,undefined): OK"

#!/usr/bin/env bash
# The GPU check, for a session that is lent a GPU machine (no Node.js there, no network). Two calls,
# each under 10 minutes, on one warm machine (the second reuses the first one's build/gpu):
#
#   bash scripts/gpu/check.sh build-test   preflight, configure (CUDA required), build, library
#                                           listings, a smoke test, the backend suite, a batch probe
#   bash scripts/gpu/check.sh bench        step_bench against PyTorch (eager and torch.compile),
#                                           fp32 and bf16, under an elapsed-time guard
#   bash scripts/gpu/check.sh --dry-run    preflight and configure only: what this machine lacks
#
# Results go to $OUT (or /tmp/gpu-check). $OUT/status.json is rewritten after every phase, so a run
# that is cut off still says where it stopped: {mode, phase, state, elapsed_s, passed, failed,
# first_failure, stopped, driver_cuda, toolkit, phases: [{name, result, elapsed_s, note}]}
# (driver_cuda: the CUDA version nvidia-smi names, "none" without a driver). state: running, passed,
# failed or stopped (the run ended early: `stopped` says why). The exit code is 0 when every phase
# passed (--dry-run: when the report was written), else 1.
#
# Environment: GPU_CHECK_BUDGET_S (no phase or timing starts after this many seconds, default 540),
# GPU_CHECK_BUILD (build folder, default build/gpu; --dry-run: $OUT/build), GPU_CHECK_STEPS (timed
# steps per figure, 10), GPU_CHECK_SPECS (every scripts/gpu/specs/*.json), GPU_CHECK_BATCHES (128,512),
# GPU_CHECK_BF16_SPECS (resnet18, vgg16), GPU_CHECK_COMPILE_SPECS (resnet18), GPU_CHECK_CUDNN_LOGLEVEL (3),
# GPU_CHECK_DRY_CONFIGURE (1; 0 skips --dry-run's configure, which status.json then says).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

mode="${1:-}"
case "$mode" in
  build-test | bench) dry=0 ;;
  --dry-run) mode=dry-run dry=1 ;;
  *)
    echo "check.sh: expected build-test, bench or --dry-run as the first argument but received '${1:-}'" >&2
    exit 2
    ;;
esac

out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
budget="${GPU_CHECK_BUDGET_S:-540}"
build="${GPU_CHECK_BUILD:-build/gpu}"
[ "$dry" = 1 ] && build="${GPU_CHECK_BUILD:-$out/build}"
start=$(date +%s)

# ---- status.json ---------------------------------------------------------------------------------
driver_cuda="" toolkit=""
phase="start" state="running" passed=0 failed=0 first_failure="" stopped="" phases_json=""
phase_start=$start
json() {  # a JSON string of $1
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/ }
  s=${s//$'\r'/}
  s=${s//$'\n'/\\n}
  printf '"%s"' "$s"
}
elapsed() { echo $(($(date +%s) - start)); }
write_status() {
  local tmp="$out/status.json.tmp"
  {
    printf '{"mode":%s,"phase":%s,"state":%s,"elapsed_s":%d,' "$(json "$mode")" "$(json "$phase")" "$(json "$state")" "$(elapsed)"
    printf '"driver_cuda":%s,"toolkit":%s,' "$(json "${driver_cuda:-none}")" "$(json "${toolkit:-none}")"
    printf '"passed":%d,"failed":%d,"first_failure":%s,"stopped":%s,"phases":[%s]}\n' "$passed" "$failed" \
      "$(json "$first_failure")" "$(json "$stopped")" "$phases_json"
  } >"$tmp" && mv "$tmp" "$out/status.json"
}
stamp() { echo "== [$(elapsed) s] $*"; }
begin() {  # begin NAME: a phase starts
  phase="$1"
  phase_start=$(date +%s)
  stamp "$phase"
  write_status
}
end_phase() {  # end_phase ok|fail|skipped NOTE: a phase ends (recorded, status.json rewritten)
  local result="$1" note="${2:-}"
  [ -n "$phases_json" ] && phases_json+=","
  phases_json+="{\"name\":$(json "$phase"),\"result\":$(json "$result"),\"elapsed_s\":$(($(date +%s) - phase_start)),\"note\":$(json "$note")}"
  if [ "$result" = fail ] && [ -z "$first_failure" ]; then first_failure="$phase: $note"; fi
  [ "$result" = fail ] && state=failed
  echo "   $phase: $result${note:+ ($note)}"
  write_status
}
finish() {  # finish [STOPPED-REASON]: the last status, the exit code
  [ -n "${1:-}" ] && stopped="$1"
  if [ -n "$stopped" ] && [ "$state" = running ]; then state=stopped; fi
  [ "$state" = running ] && state=passed
  phase="done"
  write_status
  stamp "done: $state${stopped:+ ($stopped)}; status in $out/status.json"
  if [ "$dry" = 1 ]; then exit 0; fi
  [ "$state" = passed ] && exit 0
  exit 1
}
within_budget() { [ "$(elapsed)" -lt "$budget" ]; }
# "native: N passed, N failed" of a test log into $1_passed / $1_failed (0 0 when absent).
counts() {
  local line
  line=$(grep -E '^native: [0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
  count_passed=$(echo "$line" | sed -nE 's/^native: ([0-9]+) passed.*/\1/p')
  count_failed=$(echo "$line" | sed -nE 's/.* ([0-9]+) failed.*/\1/p')
  count_passed=${count_passed:-0} count_failed=${count_failed:-0}
}
write_status

# ---- preflight -----------------------------------------------------------------------------------
# Versions as major*100 + minor, for comparison.
version_number() { echo "$1" | sed -nE 's/^([0-9]+)\.([0-9]+).*/\1 \2/p' | awk '{print $1 * 100 + $2}'; }
begin preflight
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
    nvidia-smi 2>&1 | head -12
  else
    echo "nvidia-smi: not found"
  fi
  echo "nvcc: $(nvcc --version 2>&1 | tail -2 | tr '\n' ' ')"
  echo "cmake: $(cmake --version 2>&1 | head -1)"
  echo "g++: $(g++ --version 2>&1 | head -1)"
  echo "ninja: $(ninja --version 2>&1 | head -1)"
  echo "python3: $(python3 --version 2>&1) at $(command -v python3)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.is_available())" 2>&1 | tail -1
  echo "compute-sanitizer: $(command -v compute-sanitizer || echo 'not found')"
  echo "site-packages/nvidia/*/lib:"
  for site in $(python3 -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null); do
    for lib in "$site"/nvidia/*/lib; do
      [ -d "$lib" ] && echo "  $lib: $(cd "$lib" && printf '%s ' *)"
    done
  done
} >"$out/preflight.txt" 2>&1
cat "$out/preflight.txt"
driver_cuda=""
if command -v nvidia-smi >/dev/null; then
  driver_cuda=$(nvidia-smi 2>/dev/null | sed -nE 's/.*CUDA Version: *([0-9]+\.[0-9]+).*/\1/p' | head -1)
fi
toolkit=$(nvcc --version 2>/dev/null | sed -nE 's/.*release ([0-9]+\.[0-9]+).*/\1/p' | head -1)
if ! command -v nvidia-smi >/dev/null || [ -z "$driver_cuda" ]; then
  why="no NVIDIA driver: nvidia-smi is $(command -v nvidia-smi >/dev/null && echo 'there but names no CUDA version' || echo 'not found'), so nothing can run on a GPU here"
  if [ "$dry" = 1 ]; then
    end_phase ok "$why (a dry run goes on to configure); nvcc ${toolkit:-not found}"
  else
    end_phase fail "$why"
    finish "no driver"
  fi
elif [ -z "$toolkit" ]; then
  end_phase fail "nvcc not found: the CUDA toolkit is not on the PATH"
  [ "$dry" = 1 ] || finish "no nvcc"
elif [ "$(version_number "$driver_cuda")" -lt "$(version_number "$toolkit")" ]; then
  end_phase fail "the driver supports CUDA $driver_cuda but nvcc is $toolkit: code it builds would not start (cudaErrorInsufficientDriver); use a toolkit no newer than the driver"
  [ "$dry" = 1 ] || finish "driver older than the toolkit"
else
  end_phase ok "driver CUDA $driver_cuda, nvcc $toolkit"
fi

# ---- configure and build -------------------------------------------------------------------------
configure() {
  begin configure
  local generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # DFL_CUDA_REQUIRED: a missing nvcc, cuDNN or cuBLAS stops the configuration with CMake's reason.
  # Its messages are kept whole (configure.log) and the tail is printed.
  if cmake -S . -B "$build" "${generator[@]}" -DDFL_BUILD_ADDON=OFF -DDFL_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Release \
    -DDFL_CUDA=ON -DDFL_CUDA_REQUIRED=ON -DDFL_CUDA_ARCHITECTURES=90 >"$out/configure.log" 2>&1; then
    grep -E "dfl-native" "$out/configure.log"
    end_phase ok "$(grep -m1 -oE 'dfl-native: building the CUDA backend.*' "$out/configure.log")"
    return 0
  fi
  tail -30 "$out/configure.log"
  local reason
  # CMake's first error, its wrapped lines joined (up to the blank line that ends it).
  reason=$(awk '/^CMake Error/ {on = 1; next} on && /^$/ {if (text) exit; next} on && /^Call Stack/ {exit} on {sub(/^ +/, ""); text = text (text ? " " : "") $0} END {print text}' "$out/configure.log")
  end_phase fail "${reason:-cmake failed (configure.log)}"
  return 1
}

if [ "$dry" = 1 ]; then
  if [ "${GPU_CHECK_DRY_CONFIGURE:-1}" = 0 ]; then
    begin configure
    end_phase skipped "GPU_CHECK_DRY_CONFIGURE=0"
  else
    configure
  fi
  finish
fi

build_all() {
  begin build
  if cmake --build "$build" --parallel "$(nproc)" >"$out/build.log" 2>&1 && [ -f "$build/libdfl_cuda.so" ]; then
    end_phase ok "$(stat -c %s "$build/libdfl_cuda.so") bytes libdfl_cuda.so"
    return 0
  fi
  tail -40 "$out/build.log"
  end_phase fail "$(grep -m1 -iE 'error' "$out/build.log" || echo 'libdfl_cuda.so was not built (build.log)')"
  return 1
}

if [ "$mode" = bench ] && [ -x "$build/dfl_step_bench" ] && [ -f "$build/libdfl_cuda.so" ]; then
  begin configure
  end_phase skipped "reusing $build from build-test"
else
  configure || finish "configure failed"
  build_all || finish "build failed"
fi

if [ "$mode" = build-test ]; then
  # ---- what the library links against --------------------------------------------------------------
  begin libraries
  mkdir -p "$out/libs"
  ldd "$build/libdfl_cuda.so" >"$out/libs/libdfl_cuda.ldd.txt" 2>&1
  readelf -d "$build/libdfl_cuda.so" >"$out/libs/libdfl_cuda.readelf.txt" 2>&1
  cudnn_dir=$(sed -nE 's/^DFL_CUDNN_FOUND_LIBDIR:INTERNAL=(.*)/\1/p' "$build/CMakeCache.txt")
  for lib in "$cudnn_dir"/libcudnn*.so*; do
    [ -f "$lib" ] || continue
    ldd "$lib" >"$out/libs/$(basename "$lib").ldd.txt" 2>&1
    readelf -d "$lib" >"$out/libs/$(basename "$lib").readelf.txt" 2>&1
  done
  unresolved=$(grep -l "not found" "$out"/libs/*.ldd.txt 2>/dev/null | xargs -r -n1 basename | tr '\n' ' ')
  cat "$out/libs/libdfl_cuda.ldd.txt"
  if [ -n "$unresolved" ]; then
    end_phase fail "unresolved libraries in: $unresolved"
  else
    end_phase ok "cuDNN from ${cudnn_dir:-?}"
  fi

  tests="$build/dfl_native_tests"
  # ---- smoke: one convolution fixture --------------------------------------------------------------
  begin smoke
  timeout 60 "$tests" --backend cuda fixture_conv2d_basic >"$out/smoke.log" 2>&1
  rc=$?
  counts "$out/smoke.log"
  cat "$out/smoke.log"
  if [ "$rc" -eq 0 ] && [ "$count_passed" -ge 1 ] && grep -q "^== backend cuda" "$out/smoke.log"; then
    end_phase ok "fixture_conv2d_basic on $(grep -m1 '^== backend cuda' "$out/smoke.log" | cut -c18-)"
  else
    end_phase fail "exit $rc: $(grep -m1 -E '^(FAIL|skip)' -A1 "$out/smoke.log" | tr '\n' ' ')"
    finish "the smoke test failed: the backend suite would tell no more"
  fi

  # ---- the backend suite, with cuDNN's debug log ---------------------------------------------------
  within_budget || finish "past the budget before the suite"
  begin suite
  CUDNN_LOGLEVEL_DBG="${GPU_CHECK_CUDNN_LOGLEVEL:-3}" CUDNN_LOGDEST_DBG="$out/cudnn-debug.log" \
    timeout 300 "$tests" --backend cuda >"$out/tests.log" 2>&1
  rc=$?
  # The debug log can reach gigabytes: keep its first and last 20 MB.
  if [ -f "$out/cudnn-debug.log" ] && [ "$(stat -c %s "$out/cudnn-debug.log")" -gt 41943040 ]; then
    { head -c 20971520 "$out/cudnn-debug.log"; echo; echo "... (cut by check.sh) ..."; tail -c 20971520 "$out/cudnn-debug.log"; } \
      >"$out/cudnn-debug.cut.log" && mv "$out/cudnn-debug.cut.log" "$out/cudnn-debug.log"
  fi
  counts "$out/tests.log"
  passed=$((passed + count_passed)) failed=$((failed + count_failed))
  grep -E "^(FAIL|skip|==)" -A1 "$out/tests.log" | grep -v "^native:" | head -60
  tail -1 "$out/tests.log"
  first_test=$(sed -nE 's/^FAIL (\[[^]]*\] )?([A-Za-z0-9_]+).*/\2/p' "$out/tests.log" | head -1)
  if ! grep -q "^== backend cuda" "$out/tests.log"; then
    end_phase fail "the cuda backend was not usable: $(grep -m1 '^skip' "$out/tests.log")"
  elif [ "$rc" -eq 124 ]; then
    end_phase fail "timed out after 300 s (${first_test:+first failure $first_test; }tests.log)"
  elif [ "$rc" -ne 0 ] || [ -n "$first_test" ]; then
    end_phase fail "$count_failed failed, first $first_test: $(grep -m1 -A1 "^FAIL .*$first_test" "$out/tests.log" | tail -1 | sed 's/^ *//')"
  else
    end_phase ok "$count_passed passed"
  fi

  # ---- the first failure again, alone: synchronous launches, then memcheck -------------------------
  if [ -n "$first_test" ] && within_budget; then
    begin rerun-first-failure
    CUDA_LAUNCH_BLOCKING=1 timeout 120 "$tests" --backend cuda "$first_test" >"$out/rerun-blocking.log" 2>&1
    rc_blocking=$?
    if command -v compute-sanitizer >/dev/null; then
      timeout 240 compute-sanitizer --tool memcheck --log-file "$out/memcheck.log" "$tests" --backend cuda "$first_test" \
        >"$out/memcheck-run.log" 2>&1
      rc_memcheck=$?
      memcheck_note="memcheck exit $rc_memcheck: $(grep -m1 -E 'ERROR SUMMARY' "$out/memcheck.log")"
    else
      memcheck_note="compute-sanitizer not found"
    fi
    end_phase ok "$first_test: CUDA_LAUNCH_BLOCKING=1 exit $rc_blocking; $memcheck_note"
  fi

  # ---- a smaller batch after a larger one (workspaces and plans per batch) -------------------------
  if within_budget; then
    begin probe
    probe_test=training_at_batches_128_80_7_through_the_checking_backend
    timeout 120 "$tests" --backend checking:cuda "$probe_test" >"$out/probe-checking.log" 2>&1
    rc_checking=$?
    timeout 120 "$tests" --backend cuda "$probe_test" >"$out/probe.log" 2>&1
    rc_plain=$?
    cat "$out/probe-checking.log" "$out/probe.log" | grep -E "^(ok|FAIL|skip)" -A1
    counts "$out/probe-checking.log"
    p1=$count_passed f1=$count_failed
    counts "$out/probe.log"
    passed=$((passed + p1 + count_passed)) failed=$((failed + f1 + count_failed))
    if [ "$rc_checking" -eq 0 ] && [ "$rc_plain" -eq 0 ] && [ "$p1" -ge 1 ] && [ "$count_passed" -ge 1 ]; then
      end_phase ok "batches 128, 80, 7 on checking:cuda and cuda"
    else
      end_phase fail "checking:cuda exit $rc_checking, cuda exit $rc_plain: $(grep -h -m1 -A1 '^FAIL' "$out/probe-checking.log" "$out/probe.log" | head -2 | tr '\n' ' ')"
    fi
  else
    finish "past the budget before the probe"
  fi
  finish
fi

# ---- bench: dfl-native against PyTorch on this GPU -----------------------------------------------
steps="${GPU_CHECK_STEPS:-10}"
batches="${GPU_CHECK_BATCHES:-128,512}"
specs="${GPU_CHECK_SPECS:-$(printf '%s ' scripts/gpu/specs/*.json)}"
bf16_specs="${GPU_CHECK_BF16_SPECS:-scripts/gpu/specs/resnet18.json scripts/gpu/specs/vgg16.json}"
compile_specs="${GPU_CHECK_COMPILE_SPECS:-scripts/gpu/specs/resnet18.json}"
: >"$out/dfl.jsonl"
: >"$out/torch.jsonl"
: >"$out/bench.err"
# One timing: its label and command; skipped (and counted as such) once the budget is spent.
skipped_timings=""
timing() {
  local label="$1" dest="$2"
  shift 2
  if ! within_budget; then
    skipped_timings+="${skipped_timings:+, }$label"
    return
  fi
  if "$@" >>"$dest" 2>>"$out/bench.err"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    [ -z "$first_failure" ] && first_failure="bench: $label: $(tail -1 "$out/bench.err")"
    echo "   failed: $label: $(tail -1 "$out/bench.err")"
  fi
  write_status
}
begin "bench dfl-native"
for precision in fp32 bf16; do
  list="$specs"
  [ "$precision" = bf16 ] && list="$bf16_specs"
  for spec in $list; do
    for b in ${batches//,/ }; do
      timing "step_bench $(basename "$spec" .json) $b $precision" "$out/dfl.jsonl" \
        timeout 120 "$build/dfl_step_bench" --backend cuda --spec "$spec" --batch "$b" --steps "$steps" --teachers 3 \
        --precision "$precision"
    done
  done
done
end_phase "$([ "$failed" -eq 0 ] && echo ok || echo fail)" "$passed timings${skipped_timings:+; past the budget: $skipped_timings}"
begin "bench pytorch"
for torch_mode in eager compile; do
  for precision in fp32 bf16; do
    list="$specs"
    [ "$precision" = bf16 ] && list="$bf16_specs"
    [ "$torch_mode" = compile ] && list="$compile_specs"
    for spec in $list; do
      # One process per spec: a failure (or torch.compile's time) costs that spec alone.
      timing "torch_step $torch_mode $(basename "$spec" .json) $precision" "$out/torch.jsonl" \
        env TORCH_STEP_MODE="$torch_mode" TORCH_STEP_PRECISION="$precision" \
        timeout 240 python3 scripts/gpu/torch_step.py "$steps" 3 "$batches" "$spec"
    done
  done
done
end_phase "$([ -z "$first_failure" ] && echo ok || echo fail)" "${skipped_timings:+past the budget: $skipped_timings}"

begin ratios
python3 - "$out/dfl.jsonl" "$out/torch.jsonl" <<'PY' | tee "$out/summary.txt"
import json, os, sys
def load(p, with_mode):
    rows = {}
    for line in open(p):
        line = line.strip()
        if line.startswith('{'):
            r = json.loads(line)
            key = (os.path.basename(r['spec']), r['batch'], r.get('precision', 'fp32'))
            rows[key + ((r.get('mode', 'eager'),) if with_mode else ())] = r
    return rows
ours, theirs = load(sys.argv[1], False), load(sys.argv[2], True)
print("PyTorch ms / dfl-native ms: above 1 means dfl-native is faster")
print(f"{'model':<18}{'batch':>6} {'prec':>5} {'torch':>8} | {'train ms':>9} {'torch':>8} {'ratio':>6} | {'DFL K=3':>9} {'torch':>8} {'ratio':>6} | {'eval ms':>8} {'torch':>8} {'ratio':>6}")
for key in sorted(ours):
    for mode in ('eager', 'compile'):
        o, t = ours[key], theirs.get(key + (mode,))
        if t is None and mode == 'compile':
            continue
        cells = []
        for f in ('train_ms', 'dfl_ms', 'eval_ms'):
            tv = t[f] if t else float('nan')
            cells.append(f"{o[f]:>9.2f} {tv:>8.2f} {tv / o[f] if o[f] else float('nan'):>6.2f}")
        print(f"{key[0]:<18}{key[1]:>6} {key[2]:>5} {mode:>8} | " + ' | '.join(cells))
PY
ratios_rc=${PIPESTATUS[0]}
end_phase "$([ "$ratios_rc" -eq 0 ] && echo ok || echo fail)" "summary.txt"
[ -n "$skipped_timings" ] && finish "past the budget of $budget s: $skipped_timings not timed"
finish

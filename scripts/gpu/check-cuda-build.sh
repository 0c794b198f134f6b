#!/usr/bin/env bash
# CI has no GPU. This keeps the CUDA backend from rotting and proves it stays optional:
#   1. installs cuDNN 9 and cuBLAS 13 (pip wheels) into a throwaway venv;
#   2. builds the addon with the CUDA backend (npm run build:native, DFL_CUDA=ON: no silent CPU
#      fallback), every CUDA source compiled with warnings as errors;
#   3. checks that this addon loads and trains on the CPU, that `info --json` lists cuda as compiled
#      but not usable with the driver's reason and names the library versions (also in `info`), that
#      the backend's constructor fails without a driver leaving none of its handles held, and that
#      `train --device cuda` fails with one line holding that reason and a non-zero exit code.
# Skipped (exit 0, saying why) when nvcc is not on the PATH.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if ! command -v nvcc >/dev/null; then
  echo "check-cuda-build: skipped: nvcc is not on the PATH"
  exit 0
fi
start=$(date +%s)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT  # the venv holds ~1.7 GB of wheels: left behind, a few runs filled the disk
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check --retries 1 --timeout 5 nvidia-cudnn-cu13 nvidia-cublas
installed=$(date +%s)
DFL_PYTHON="$tmp/venv/bin/python3" DFL_CUDA=ON DFL_CUDA_WERROR=1 DFL_JOBS="${DFL_JOBS:-2}" node scripts/build/build-native.mjs
built=$(date +%s)
test -f build/Release/libdfl_cuda.so
# docs/native.md ("Numerics"): the kernels are compiled without contraction into FMAs.
grep -qs -- "-fmad=false" build/build.ninja build/CMakeFiles/dfl_cuda.dir/flags.make ||
  { echo "check-cuda-build: the CUDA sources were not compiled with -fmad=false (native/cuda/cuda.cmake)"; exit 1; }

node --input-type=module -e "
import assert from 'node:assert/strict';
import { loadBinding } from './dist/binding.js';
const b = loadBinding();
const info = b.runtimeInfo();
const cuda = info.backends.find((x) => x.name === 'cuda');
assert.ok(cuda.compiled, 'cuda must be compiled in: ' + cuda.detail);
console.log('cuda backend:', cuda.usable ? 'usable' : 'not usable', '-', cuda.detail);
const spec = {in_channels: 3, height: 8, width: 8, nodes: [{op: 'input'}, {op: 'conv', name: 'c', inputs: [0], out_channels: 4, kernel_h: 3, kernel_w: 3, pad_h: 1, pad_w: 1}, {op: 'bn', name: 'n', inputs: [1]}, {op: 'relu', inputs: [2]}, {op: 'gap', inputs: [3]}, {op: 'flatten', inputs: [4]}, {op: 'linear', name: 'fc', inputs: [5], out_features: 3, bias: true}]};
const m = new b.Model(spec, 1, 'cpu');
const x = Float32Array.from({length: 4 * 192}, (_, i) => Math.sin(i));
const s = await m.trainStep({x, batch: 4, labels: Int32Array.from([0, 1, 2, 0]), lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: true, decoupled: false, labelSmoothing: 0, distillWeight: 0, temperature: 4, dropoutSeed: 1});
assert.ok(s.finite && Number.isFinite(s.loss), 'a CPU step with the CUDA-enabled addon');
console.log('CPU training step with the CUDA-enabled addon: loss', s.loss.toFixed(4));
"
info="$(node dist/cli/cli.js info --json)"
node -e "
const i = JSON.parse(process.argv[1]);
if (!i.backends.compiled.includes('cuda')) throw new Error('info --json: cuda not in backends.compiled');
if (i.backends.usable.includes('cuda')) { console.log('info --json: cuda usable here (a GPU machine)'); process.exit(0); }
if (!i.backends.detail.cuda) throw new Error('info --json: no reason given for cuda');
console.log('info --json: cuda compiled, not usable:', i.backends.detail.cuda);
" "$info"
# The versions: built against and found (cudnnGetCudartVersion against the runtime), in both forms.
node -e "
const i = JSON.parse(process.argv[1]);
const lib = i.backends.libraries && i.backends.libraries.cuda;
if (!/^CUDA runtime \d+\.\d+ .*; cuDNN 9\.\d+\.\d+ built for CUDA \d+\.\d+.*; cuBLAS \d+\.\d+\.\d+/.test(lib || ''))
  throw new Error('info --json: backends.libraries.cuda does not name the versions: ' + lib);
if (/Mismatch/.test(lib)) throw new Error('info --json: the wheels disagree with the build: ' + lib);
console.log('info --json: cuda libraries:', lib);
" "$info"
# The text form needs a terminal (off one, info prints JSON): script(1) gives it one.
lib_line="$(script -q -c "node dist/cli/cli.js info" /dev/null | grep -E '^ *cuda libraries' || true)"
if ! echo "$lib_line" | grep -qF "$(node -e "console.log(JSON.parse(process.argv[1]).backends.libraries.cuda)" "$info")"; then
  echo "info: no 'cuda libraries' line matching --json's"
  node dist/cli/cli.js info
  exit 1
fi
# The constructor on its own (dfl_cuda_constructor_probe): it fails here with the runtime's reason
# (no driver: cudaErrorInsufficientDriver) and leaves none of its handles held; on a GPU it succeeds
# and its destructor leaves none.
no_driver=0
command -v nvidia-smi >/dev/null || no_driver=1
"$tmp/venv/bin/python3" - build/Release/libdfl_cuda.so "$no_driver" <<'PY'
import ctypes, sys
probe = ctypes.CDLL(sys.argv[1]).dfl_cuda_constructor_probe
probe.restype, probe.argtypes = ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t]
buf = ctypes.create_string_buffer(4096)
live = probe(buf, len(buf))
message = buf.value.decode()
print(f'constructor probe: {live} handles left; {message}')
assert live == 0, f'the constructor left {live} handles held'
if sys.argv[2] == '1':
    assert 'cudaErrorInsufficientDriver' in message, f'expected cudaErrorInsufficientDriver with no driver, got: {message}'
elif not message.startswith('constructed: '):
    print('constructor probe: a driver is installed but the constructor failed (see the message)')
PY
if ! node -e "process.exit(JSON.parse(process.argv[1]).backends.usable.includes('cuda') ? 0 : 1)" "$info"; then
  set +e
  node dist/cli/cli.js train --device cuda --epochs 1 --out "$tmp/run" >"$tmp/out.txt" 2>"$tmp/err.txt"
  rc=$?
  set -e
  reason="$(node -e "console.log(JSON.parse(process.argv[1]).backends.detail.cuda)" "$info")"
  [ "$rc" -ne 0 ] || { echo "train --device cuda exited 0 without a GPU"; exit 1; }
  [ "$(wc -l <"$tmp/err.txt")" -eq 1 ] || { echo "train --device cuda: expected one line on stderr, got:"; cat "$tmp/err.txt"; exit 1; }
  grep -qF "$reason" "$tmp/err.txt" || { echo "train --device cuda: the line lacks the driver's reason:"; cat "$tmp/err.txt"; exit 1; }
  echo "train --device cuda: exit $rc, $(cat "$tmp/err.txt")"
fi
echo "check-cuda-build: wheels $((installed - start)) s, build $((built - installed)) s, total $(($(date +%s) - start)) s: OK"

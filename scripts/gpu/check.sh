#!/usr/bin/env bash
# The GPU check, for a session that is lent a GPU machine (no Node.js there, no network): one
# prepared command, under 10 minutes. It
#   1. builds the C++ core, the CUDA backend (libdfl_cuda.so), the C++ tests and the step timer with
#      that machine's nvcc, CMake and ninja, against the cuDNN/cuBLAS pip packages its python3 has;
#   2. runs the C++ test suite on the cuda backend (every kernel against the CPU reference, the
#      PyTorch fixtures, whole DFL steps, teacher folding, refused overflow steps);
#   3. times training steps, DFL steps (K = 3) and eval forwards of the zoo models at batch 128 and
#      512 in float32 (native/dev/step_bench.cpp), and resnet18 and vgg16 at batch 512 in bf16
#      (--precision bf16), and the same graphs in that machine's PyTorch (scripts/gpu/torch_step.py;
#      bf16 under torch.autocast), and prints the ratios.
# Usage (the device tool's run): bash scripts/gpu/check.sh        results also under $OUT (or /tmp/gpu-check)
# Environment: GPU_CHECK_STEPS (timed steps per figure, default 10), GPU_CHECK_BATCHES (128,512),
# GPU_CHECK_SPECS (default: every scripts/gpu/specs/*.json), GPU_CHECK_BF16_SPECS (resnet18, vgg16),
# GPU_CHECK_BF16_BATCHES (512).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
steps="${GPU_CHECK_STEPS:-10}"
batches="${GPU_CHECK_BATCHES:-128,512}"
specs="${GPU_CHECK_SPECS:-$(ls scripts/gpu/specs/*.json | tr '\n' ' ')}"
bf16_specs="${GPU_CHECK_BF16_SPECS:-scripts/gpu/specs/resnet18.json scripts/gpu/specs/vgg16.json}"
bf16_batches="${GPU_CHECK_BF16_BATCHES:-512}"
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start )) s] $*"; }

stamp "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
nvcc --version | tail -1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"

stamp "build (sm_90 only, to keep the build short; the shipped default is sm_80 + sm_90 + PTX)"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B build/gpu "${generator[@]}" -DDFL_BUILD_ADDON=OFF -DDFL_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Release \
  -DDFL_CUDA_ARCHITECTURES=90 --log-level=WARNING 2>&1 | tee "$out/build.log" | grep -E "dfl-native|Error" || true
if ! cmake --build build/gpu --parallel "$(nproc)" >>"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  stamp "BUILD FAILED"
  exit 1
fi
ls -la build/gpu/libdfl_cuda.so || { stamp "libdfl_cuda.so was not built (see build.log: cuDNN/cuBLAS not found?)"; exit 1; }

stamp "C++ tests on the cuda backend"
timeout 240 build/gpu/dfl_native_tests --backend cuda >"$out/tests.log" 2>&1
tests_rc=$?
grep -E "^(FAIL|skip|==)" -A1 "$out/tests.log" | grep -v "^native:" | head -60
tail -1 "$out/tests.log"
# On this machine a skipped cuda backend is a failure: the GPU or its libraries were not usable.
grep -q "^== backend cuda" "$out/tests.log" || { echo "the cuda backend was not usable here"; tests_rc=3; }
echo "tests exit code: $tests_rc"

stamp "timings: dfl-native (native/dev/step_bench.cpp)"
: >"$out/dfl.jsonl"
for spec in $specs; do
  for b in ${batches//,/ }; do
    timeout 120 build/gpu/dfl_step_bench --backend cuda --spec "$spec" --batch "$b" --steps "$steps" --teachers 3 \
      >>"$out/dfl.jsonl" 2>>"$out/bench.err" || echo "step_bench failed: $spec batch $b: $(tail -1 "$out/bench.err")"
  done
done
for spec in $bf16_specs; do
  for b in ${bf16_batches//,/ }; do
    timeout 120 build/gpu/dfl_step_bench --backend cuda --spec "$spec" --batch "$b" --steps "$steps" --teachers 3 \
      --precision bf16 >>"$out/dfl.jsonl" 2>>"$out/bench.err" || echo "step_bench bf16 failed: $spec batch $b: $(tail -1 "$out/bench.err")"
  done
done
stamp "timings: PyTorch (scripts/gpu/torch_step.py)"
timeout 300 python3 scripts/gpu/torch_step.py "$steps" 3 "$batches" $specs >"$out/torch.jsonl" 2>>"$out/bench.err" ||
  echo "torch_step failed: $(tail -3 "$out/bench.err")"
TORCH_STEP_PRECISION=bf16 timeout 120 python3 scripts/gpu/torch_step.py "$steps" 3 "$bf16_batches" $bf16_specs \
  >>"$out/torch.jsonl" 2>>"$out/bench.err" || echo "torch_step bf16 failed: $(tail -3 "$out/bench.err")"

stamp "ratios (PyTorch ms / dfl-native ms: above 1 means dfl-native is faster)"
python3 - "$out/dfl.jsonl" "$out/torch.jsonl" <<'PY' | tee "$out/summary.txt"
import json, os, sys
def load(p):
    rows = {}
    for line in open(p):
        line = line.strip()
        if line.startswith('{'):
            r = json.loads(line)
            rows[(os.path.basename(r['spec']), r['batch'], r.get('precision', 'fp32'))] = r
    return rows
ours, theirs = load(sys.argv[1]), load(sys.argv[2])
print(f"{'model':<18}{'batch':>6} {'prec':>5} | {'train ms':>9} {'torch':>8} {'ratio':>6} | {'DFL K=3':>9} {'torch':>8} {'ratio':>6} | {'eval ms':>8} {'torch':>8} {'ratio':>6}")
for key in sorted(ours):
    o, t = ours[key], theirs.get(key)
    cells = []
    for f in ('train_ms', 'dfl_ms', 'eval_ms'):
        tv = t[f] if t else float('nan')
        cells.append(f"{o[f]:>9.2f} {tv:>8.2f} {tv / o[f] if o[f] else float('nan'):>6.2f}")
    print(f"{key[0]:<18}{key[1]:>6} {key[2]:>5} | " + ' | '.join(cells))
PY
stamp "done (tests exit code $tests_rc)"
exit "$tests_rc"

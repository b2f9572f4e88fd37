#!/usr/bin/env bash
# What a GPU session runs, in one call: the local-attention kernel alone, the whole-model benchmark of every ACmix/baseline pair on the GPU under bf16
# autocast (per family, so one failure does not hide the others), the CUDA tests (tests/test_cuda.py, in 8
# processes: they compile ~100 Triton kernel variants, 5.4 min in one process on an H200 machine), then a
# small-batch run, each while its share of the time budget lasts.
#
#   bash tools/run_cuda_checks.sh [LOG_DIR]     # LOG_DIR defaults to $OUT (the device tool's) or ./cuda_logs
#
# Uses the machine's python3 (its torch, triton and timm); a timm wheel in .whl/ is installed first when present.
set -u
cd "$(dirname "$0")/.."
LOG=${1:-${OUT:-cuda_logs}}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
start=$(date +%s)
stamp() { echo "[cuda-checks $(( $(date +%s) - start ))s] $*"; }
# BUDGET (seconds, default 420): optional steps are skipped once this much of it has passed, so that a lease's
# short device time still brings back the main results
BUDGET=${BUDGET:-420}
before() { (( $(date +%s) - start < $1 * BUDGET / 100 )) || { stamp "skipped (over ${1}% of ${BUDGET}s): $2"; false; }; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c 'import torch, timm, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "timm", timm.__version__, "triton", triton.__version__)'
} > "$LOG/pytest_gpu.txt" 2>&1
cat "$LOG/pytest_gpu.txt"
# the CPU side of test_model_cuda_matches_cpu needs the C++ kernels: build them while the GPU works
nice -n 19 python3 -c 'from acmix.kernels import build_cpu_kernels; print(build_cpu_kernels())' > /tmp/cpu_build.txt 2>&1 &

stamp 'the local-attention kernel alone (Triton against the unfold reference), batch 8'
timeout 90 python3 tools/benchmark_acmix.py --device cuda --scopes kernel > "$LOG/bench_kernel.txt" 2>&1
tail -8 "$LOG/bench_kernel.txt"

for family in 'acmix_resnet*' 'acmix_pvt*' 'acmix_swin*' 'acmix_san*'; do
  before 60 "benchmark $family" || continue
  stamp "benchmark $family, batch 64, bf16"
  python3 tools/benchmark_models.py --device cuda --amp bf16 --batch 64 --iters 10 --models "$family" \
    > "$LOG/bench_${family//[^a-z]/}_b64.txt" 2>&1
  grep -E '^\| `|^Machine at start|Error' "$LOG/bench_${family//[^a-z]/}_b64.txt"
done

# the tests compile many Triton kernel variants (one per head dim, window, stride and dtype): several processes
wait
if before 80 'CUDA tests'; then
  stamp 'CUDA tests'
  { cat /tmp/cpu_build.txt; python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_cuda.py \
      tests/test_acmix.py::test_half_on_cuda 2>&1; } | tee -a "$LOG/pytest_gpu.txt" | tail -15
fi

if before 85 'batch 4'; then
  stamp 'benchmark, batch 4, bf16'
  python3 tools/benchmark_models.py --device cuda --amp bf16 --batch 4 --iters 10 --no-parts --no-memory \
    > "$LOG/bench_all_b4.txt" 2>&1
  grep -E '^\| `|Error' "$LOG/bench_all_b4.txt"
fi
stamp done

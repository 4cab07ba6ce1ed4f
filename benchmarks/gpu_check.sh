#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most 8 minutes: the figures the CPU machine cannot give.
#   1. the batch probe against real device memory and a real CUDA out-of-memory (pytest -m gpu);
#   2. eval_speed.py --device cuda: the engine's eval >= 5x a naive loop, a whole trial >= 3x;
#   3. amp_tolerance.py --device cuda: bf16/fp16 curves against fp32 on the same seeds;
#   4. gpu_hours.py --device cuda: trials per GPU-hour with 1, 2, 4, 8 trials per GPU.
# Writes one figures file, $OUT/gpu-figures.txt (or ./gpu-figures.txt), plus each benchmark's JSON beside it;
# each step has its own time limit so that one slow step cannot take the others' time. On a machine that can
# reach no package index, first run scripts/device-wheels.sh here and carry .whl: the wheels are installed into
# /tmp/site. Usage: bash benchmarks/gpu_check.sh [python]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
mkdir -p "$out"
figures="$out/gpu-figures.txt"
py="${1:-${PYTHON:-python3}}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "gpu_check: installing .whl failed" >&2; exit 2; }
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, its output into the figures file
    local name="$1" limit="$2"
    shift 2
    echo "== $name (limit ${limit} s)" | tee -a "$figures"
    local started=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$figures"
    local code=${PIPESTATUS[0]}
    echo "== $name: exit $code after $((SECONDS - started)) s" | tee -a "$figures"
    [ "$code" = 0 ] || status=1
}
{
    echo "gpu_check $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    "$py" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
} | tee "$figures"
step "batch probe, real memory and a real OOM" 90 \
    "$py" -m pytest -q -p no:cacheprovider -m gpu tests/train/test_batch_probe.py
step "eval speed" 170 \
    "$py" benchmarks/eval_speed.py --device cuda --rounds 3 --allow-busy --json "$out/eval_speed.json"
step "mixed precision tolerance" 90 \
    "$py" benchmarks/amp_tolerance.py --device cuda --seeds 2 --json "$out/amp_tolerance.json"
step "trials per GPU-hour" 150 \
    "$py" benchmarks/gpu_hours.py --device cuda --json "$out/gpu_hours.json"
echo "gpu_check: figures in $figures (exit $status)"
exit "$status"

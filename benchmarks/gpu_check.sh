#!/usr/bin/env bash
# First run on a lent GPU machine: everything the `paper` profile needs to know, in one run.
#
#   OUT=/path/to/results benchmarks/gpu_check.sh [--budget-min 12] [--data-root DIR]
#   OUT=/tmp/x benchmarks/gpu_check.sh --dry-run      # CPU: every section, tiny sizes (CI runs this)
#
# The machine has its own torch and no package registry: the project is used from this checkout
# (PYTHONPATH, no install); pure-Python wheels that are missing there are carried in `.whl/`
# (git-ignored; fill it here with `pip download --no-deps -d .whl NAME`) and installed with
# --no-index --no-deps. Then benchmarks/gpu_check.py measures, writing under $OUT:
#   env.json      torch/CUDA/devices, which imports work
#   weights.json  whether torchvision's COCO weights (DeepLabV3-ResNet101) are in the caches
#   steps.json    paper-profile training steps/s and peak GPU memory, crapnet and alpnet
#   train.json    CHAOS fold 0 setting 1 (crapnet, paper profile) trained for what the budget
#                 leaves after ~5 min kept for the next two sections, then evaluated (the run
#                 folder is under $OUT/train_run)
#   kernels.json  kernel launches per step and steps/s: crapnet (batched attention), crapnet with
#                 the blocks one by one, alpnet, crapnet compiled (train.compile=on: CUDA graphs)
#   packed.json   throughput of K concurrent trainings on one GPU, K = 1, 2, 4, 8 (a K that would
#                 overrun the budget is skipped)
#   summary.md    the figures as a table; gpu_check.log everything printed
# A section that fails is recorded (error in its JSON) and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  missing=()
  for whl in .whl/*.whl; do
    name=$(basename "$whl" | cut -d- -f1)
    $PY -m pip show -q "$name" >/dev/null 2>&1 || missing+=("$whl")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "gpu_check: installing carried wheels: ${missing[*]}"
    $PY -m pip install --quiet --no-index --no-deps "${missing[@]}" || echo "gpu_check: warning: carried wheels did not install"
  fi
fi
$PY benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"

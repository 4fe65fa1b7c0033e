#!/bin/bash
# Result runs of issue 4 ("Results to produce"), one at a time, lite profile, 5 folds each.
# Each finished summary is copied into results/<dataset>_setting<k>_<method>_lite/ with run_info.json.
cd "$(dirname "$0")/.."
export CRAPNET_DATA_ROOT=${CRAPNET_DATA_ROOT:-../shared/data} OMP_WAIT_POLICY=PASSIVE
mkdir -p runs/results
for spec in ${SPECS:-chaos:1:crapnet chaos:1:alpnet chaos:1:panet chaos:2:crapnet chaos:2:alpnet chaos:2:panet \
            sabs:1:crapnet sabs:1:alpnet sabs:2:crapnet sabs:2:alpnet}; do
  IFS=: read -r ds setting method <<< "$spec"
  name=${ds}_setting${setting}_${method}_lite
  out=runs/results/$name
  cmd=".venv/bin/crapnet cross-validate --dataset $ds --setting $setting --method $method --profile lite --out $out --set train.threads=1 --no-progress"
  start=$(date +%s); start_iso=$(date -u +%FT%TZ)
  $cmd > runs/results/$name.log 2>&1
  rc=$?
  end=$(date +%s)
  if [ $rc -eq 0 ]; then
    mkdir -p results/$name
    cp $out/summary.json $out/summary.md results/$name/
    .venv/bin/python - "$name" "$cmd" "$start_iso" "$((end-start))" <<'PY'
import json, os, platform, sys
import torch
name, cmd, start, wall = sys.argv[1:5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
info = {"command": "OMP_WAIT_POLICY=PASSIVE CRAPNET_DATA_ROOT=../shared/data " + cmd, "started_utc": start,
        "wall_seconds": int(wall), "machine": f"{os.cpu_count()}-core CPU ({cpu}), no GPU, shared with other jobs",
        "torch": torch.__version__, "encoder_init": "random (no pretrained weights)"}
json.dump(info, open(f"results/{name}/run_info.json", "w"), indent=2)
PY
    .venv/bin/python results/collect.py --update-readme || true
  fi
  echo "$name rc=$rc wall=$((end-start))s start=$start_iso" >> runs/results/progress.txt
done

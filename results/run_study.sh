#!/bin/bash
# Issue 8 §7 (and §4, §5): the equal-budget study, then issue 10 (Tables 3-4 ablations over 5 folds,
# the paper's other rows and the later methods) under the corrected `lite` profile (config version 2),
# as a queue that N workers (default 2, one torch thread each) drain in order. Resumable: cross-validate
# skips finished runs and resumes an interrupted one from its last checkpoint, so rerunning this script
# after a stop continues where it was. Each training seed of a table is its own entry (name@seed<k>;
# no suffix = seed 0, the profile's default): its summary is copied to results/<name>/seed<k>/ with
# run_info.json (command, start, wall, machine, commit), and results/<name>/summary.* become the
# aggregate over the seeds present (results/aggregate_seeds.py), so every finished entry can be
# committed and a stop loses at most the entries in progress. An entry whose results folder already has
# run_info.json is skipped (the run folders of an earlier session are gone; RERUN=1 runs it again).
#   results/run_study.sh                  # the whole queue, 2 workers
#   WORKERS=1 ONLY="chaos_setting1_crapnet_lite" results/run_study.sh
# Run it from a checkout whose code does not change meanwhile (e.g. a git worktree at a fixed commit);
# RESULTS (default: this checkout's results/) says where the summaries go.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export CRAPNET_DATA_ROOT=${CRAPNET_DATA_ROOT:-../shared/data} OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
RESULTS=${RESULTS:-$ROOT/results}
RUNS=${RUNS:-$ROOT/runs/study}
WORKERS=${WORKERS:-2}
mkdir -p "$RUNS"
CV="$PY -m crapnet_core.cli cross-validate --profile lite --set train.threads=1 --no-progress"
# name | command (paths relative to the checkout); order = priority: issue 8, then Tables 3-4, the paper's rows
# (ALPNet-init, supervised ALPNet, SSL-RPNet setting 1), the later methods, and SSL-RPNet setting 2 (no paper row) last
QUEUE=$(cat <<Q
chaos_setting1_crapnet_lite|$CV --dataset chaos --setting 1 --method crapnet --out RUNS/chaos_setting1_crapnet_lite
chaos_setting1_alpnet_lite|$CV --dataset chaos --setting 1 --method alpnet --out RUNS/chaos_setting1_alpnet_lite
chaos_setting1_panet_lite|$CV --dataset chaos --setting 1 --method panet --out RUNS/chaos_setting1_panet_lite
sabs_setting1_crapnet_lite|$CV --dataset sabs --setting 1 --method crapnet --out RUNS/sabs_setting1_crapnet_lite
sabs_setting1_alpnet_lite|$CV --dataset sabs --setting 1 --method alpnet --out RUNS/sabs_setting1_alpnet_lite
sabs_setting1_panet_lite|$CV --dataset sabs --setting 1 --method panet --out RUNS/sabs_setting1_panet_lite
chaos_setting1_crapnet_lite@seed1|$CV --dataset chaos --setting 1 --method crapnet --seed 1 --out RUNS/chaos_setting1_crapnet_lite@seed1
chaos_setting1_alpnet_lite@seed1|$CV --dataset chaos --setting 1 --method alpnet --seed 1 --out RUNS/chaos_setting1_alpnet_lite@seed1
chaos_setting1_panet_lite@seed1|$CV --dataset chaos --setting 1 --method panet --seed 1 --out RUNS/chaos_setting1_panet_lite@seed1
chaos_setting1_crapnet_lite@seed2|$CV --dataset chaos --setting 1 --method crapnet --seed 2 --out RUNS/chaos_setting1_crapnet_lite@seed2
chaos_setting1_alpnet_lite@seed2|$CV --dataset chaos --setting 1 --method alpnet --seed 2 --out RUNS/chaos_setting1_alpnet_lite@seed2
chaos_setting1_panet_lite@seed2|$CV --dataset chaos --setting 1 --method panet --seed 2 --out RUNS/chaos_setting1_panet_lite@seed2
sabs_setting1_crapnet_lite@seed1|$CV --dataset sabs --setting 1 --method crapnet --seed 1 --out RUNS/sabs_setting1_crapnet_lite@seed1
sabs_setting1_alpnet_lite@seed1|$CV --dataset sabs --setting 1 --method alpnet --seed 1 --out RUNS/sabs_setting1_alpnet_lite@seed1
sabs_setting1_panet_lite@seed1|$CV --dataset sabs --setting 1 --method panet --seed 1 --out RUNS/sabs_setting1_panet_lite@seed1
sabs_setting1_crapnet_lite@seed2|$CV --dataset sabs --setting 1 --method crapnet --seed 2 --out RUNS/sabs_setting1_crapnet_lite@seed2
sabs_setting1_alpnet_lite@seed2|$CV --dataset sabs --setting 1 --method alpnet --seed 2 --out RUNS/sabs_setting1_alpnet_lite@seed2
sabs_setting1_panet_lite@seed2|$CV --dataset sabs --setting 1 --method panet --seed 2 --out RUNS/sabs_setting1_panet_lite@seed2
chaos_setting2_crapnet_lite|$CV --dataset chaos --setting 2 --method crapnet --out RUNS/chaos_setting2_crapnet_lite
chaos_setting2_alpnet_lite|$CV --dataset chaos --setting 2 --method alpnet --out RUNS/chaos_setting2_alpnet_lite
chaos_setting2_panet_lite|$CV --dataset chaos --setting 2 --method panet --out RUNS/chaos_setting2_panet_lite
sabs_setting2_crapnet_lite|$CV --dataset sabs --setting 2 --method crapnet --out RUNS/sabs_setting2_crapnet_lite
sabs_setting2_alpnet_lite|$CV --dataset sabs --setting 2 --method alpnet --out RUNS/sabs_setting2_alpnet_lite
sabs_setting2_panet_lite|$CV --dataset sabs --setting 2 --method panet --out RUNS/sabs_setting2_panet_lite
budget_chaos_setting1_f0_crapnet|BUDGET crapnet
budget_chaos_setting1_f0_alpnet|BUDGET alpnet
chaos_setting1_alpnet-attention_lite|$CV --dataset chaos --setting 1 --method alpnet --set model.attention=on --out RUNS/chaos_setting1_alpnet-attention_lite
chaos_setting1_alpnet-carafe_lite|$CV --dataset chaos --setting 1 --method alpnet --set model.prototypes=carafe --out RUNS/chaos_setting1_alpnet-carafe_lite
chaos_setting1_crapnet-aligned_lite|$CV --dataset chaos --setting 1 --method crapnet --set model.carafe_window=aligned --out RUNS/chaos_setting1_crapnet-aligned_lite
chaos_setting1_crapnet-blocks1_lite|$CV --dataset chaos --setting 1 --method crapnet --set model.n_blocks=1 --out RUNS/chaos_setting1_crapnet-blocks1_lite
chaos_setting1_crapnet-blocks7_lite|$CV --dataset chaos --setting 1 --method crapnet --set model.n_blocks=7 --out RUNS/chaos_setting1_crapnet-blocks7_lite
chaos_setting1_crapnet-blocks9_lite|$CV --dataset chaos --setting 1 --method crapnet --set model.n_blocks=9 --out RUNS/chaos_setting1_crapnet-blocks9_lite
chaos_setting1_crapnet-blocks12_lite|$CV --dataset chaos --setting 1 --method crapnet --set model.n_blocks=12 --out RUNS/chaos_setting1_crapnet-blocks12_lite
chaos_setting1_crapnet-blocks15_lite|$CV --dataset chaos --setting 1 --method crapnet --set model.n_blocks=15 --out RUNS/chaos_setting1_crapnet-blocks15_lite
chaos_setting1_crapnet-onebranch_lite|$CV --dataset chaos --setting 1 --method crapnet --set model.branches=1 --out RUNS/chaos_setting1_crapnet-onebranch_lite
chaos_setting1_alpnet_init_lite|$CV --dataset chaos --setting 1 --method alpnet_init --out RUNS/chaos_setting1_alpnet_init_lite
chaos_setting2_alpnet_init_lite|$CV --dataset chaos --setting 2 --method alpnet_init --out RUNS/chaos_setting2_alpnet_init_lite
sabs_setting1_alpnet_init_lite|$CV --dataset sabs --setting 1 --method alpnet_init --out RUNS/sabs_setting1_alpnet_init_lite
sabs_setting2_alpnet_init_lite|$CV --dataset sabs --setting 2 --method alpnet_init --out RUNS/sabs_setting2_alpnet_init_lite
chaos_setting1_alpnet_sup_lite|$CV --dataset chaos --setting 1 --method alpnet_sup --out RUNS/chaos_setting1_alpnet_sup_lite
chaos_setting2_alpnet_sup_lite|$CV --dataset chaos --setting 2 --method alpnet_sup --out RUNS/chaos_setting2_alpnet_sup_lite
sabs_setting1_alpnet_sup_lite|$CV --dataset sabs --setting 1 --method alpnet_sup --out RUNS/sabs_setting1_alpnet_sup_lite
sabs_setting2_alpnet_sup_lite|$CV --dataset sabs --setting 2 --method alpnet_sup --out RUNS/sabs_setting2_alpnet_sup_lite
chaos_setting1_rpnet_lite|$CV --dataset chaos --setting 1 --method rpnet --out RUNS/chaos_setting1_rpnet_lite
sabs_setting1_rpnet_lite|$CV --dataset sabs --setting 1 --method rpnet --out RUNS/sabs_setting1_rpnet_lite
chaos_setting1_adnet_lite|$CV --dataset chaos --setting 1 --method adnet --out RUNS/chaos_setting1_adnet_lite
chaos_setting2_adnet_lite|$CV --dataset chaos --setting 2 --method adnet --out RUNS/chaos_setting2_adnet_lite
sabs_setting1_adnet_lite|$CV --dataset sabs --setting 1 --method adnet --out RUNS/sabs_setting1_adnet_lite
sabs_setting2_adnet_lite|$CV --dataset sabs --setting 2 --method adnet --out RUNS/sabs_setting2_adnet_lite
chaos_setting1_qnet_lite|$CV --dataset chaos --setting 1 --method qnet --out RUNS/chaos_setting1_qnet_lite
chaos_setting2_qnet_lite|$CV --dataset chaos --setting 2 --method qnet --out RUNS/chaos_setting2_qnet_lite
sabs_setting1_qnet_lite|$CV --dataset sabs --setting 1 --method qnet --out RUNS/sabs_setting1_qnet_lite
sabs_setting2_qnet_lite|$CV --dataset sabs --setting 2 --method qnet --out RUNS/sabs_setting2_qnet_lite
chaos_setting2_rpnet_lite|$CV --dataset chaos --setting 2 --method rpnet --out RUNS/chaos_setting2_rpnet_lite
sabs_setting2_rpnet_lite|$CV --dataset sabs --setting 2 --method rpnet --out RUNS/sabs_setting2_rpnet_lite
Q
)

budget() {  # budget curve (§5): one 10,000-step training of fold 0, checkpoints at 1k..10k, each evaluated
  local method=$1 run=$RUNS/budget_chaos_setting1_f0_$1
  $PY -m crapnet_core.cli train --dataset chaos --setting 1 --fold 0 --method "$method" --profile lite \
      --steps 10000 --set train.threads=1 --set train.checkpoint_every=1000 --set train.keep_checkpoints=10 \
      --no-progress --out "$run" $( [ -f "$run/config.json" ] && echo --resume ) &&
  $PY -m crapnet_core.cli evaluate "$run" --checkpoints 1000,3000,5000,10000 --no-progress
}

dest_of() {  # queue name -> the results folder its summary goes to
  local name=$1 seed=0
  if [[ $name == budget_* ]]; then echo "$RESULTS/$name"; return; fi
  [[ $name == *@seed* ]] && seed=${name##*@seed}
  echo "$RESULTS/${name%@seed*}/seed$seed"
}

done_before() {  # the entry's results are committed: run_info.json (budget curves: and the 10,000-step point)
  local dest; dest=$(dest_of "$1")
  [ -f "$dest/run_info.json" ] || return 1
  [[ $1 == budget_* ]] && { grep -q '"step": 10000' "$dest/budget.json" 2>/dev/null || return 1; }
  return 0
}

record() {  # name command start_iso wall: copy the summary to RESULTS/<table>/seed<k>/ and re-aggregate
  local name=$1 cmd=$2 start=$3 wall=$4 src=$RUNS/$1 dest files="summary.json summary.md"
  dest=$(dest_of "$name")
  [[ $name == budget_* ]] && files="budget.json budget.md"
  mkdir -p "$dest"
  for f in $files; do [ -f "$src/$f" ] && cp "$src/$f" "$dest/$f.tmp" && mv "$dest/$f.tmp" "$dest/$f"; done
  SRC=$src $PY - "$dest" "$cmd" "$start" "$wall" <<'PY'
import json, os, platform, subprocess, sys
import torch
dest, cmd, start, wall = sys.argv[1:5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
info = {"command": "OMP_WAIT_POLICY=PASSIVE CRAPNET_DATA_ROOT=../shared/data " + cmd.replace(os.getcwd() + "/", ""),
        "started_utc": start, "wall_seconds": int(wall), "commit": commit,
        "machine": f"{os.cpu_count()}-core CPU ({cpu}), no GPU, shared with other jobs", "torch": torch.__version__,
        "encoder_init": "random (no pretrained weights)", "profile": "lite (config version 2)"}
# packages, CPU kernels, threads, device: the fold runs' training records (crapnet_core.engine.environment)
from pathlib import Path
from crapnet_core.engine.environment import provenance_environment
info["environment"] = provenance_environment(sorted(p.parent for p in Path(os.environ["SRC"]).rglob("environment.json")))
path = os.path.join(dest, "run_info.json")
json.dump(info, open(path + ".tmp", "w"), indent=2); os.replace(path + ".tmp", path)
PY
  if [[ $name != budget_* ]]; then
    rm -f "$(dirname "$dest")/run_info.json"  # a table of the older one-folder layout: seed<k>/ now hold them
    $PY results/aggregate_seeds.py "$(dirname "$dest")"
  fi
}

worker() {
  local w=$1
  while true; do
    local line
    line=$(flock "$RUNS/.queue.lock" bash -c '
      while IFS= read -r l; do n=${l%%|*}; [ -n "$n" ] || continue
        [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $n "* ]] && continue
        grep -qx "$n" "$0/.claimed" 2>/dev/null && continue
        echo "$n" >> "$0/.claimed"; echo "$l"; break
      done <<< "$1"' "$RUNS" "$QUEUE")
    [ -n "$line" ] || break
    local name=${line%%|*} cmd=${line#*|}
    cmd=${cmd//RUNS/$RUNS}
    if [ -z "${RERUN:-}" ] && done_before "$name"; then  # committed by an earlier session
      echo "[worker $w] $(date -u +%FT%TZ) $name already in $(dest_of "$name") (RERUN=1 reruns)" >> "$RUNS/progress.txt"
      continue
    fi
    local start=$(date +%s) start_iso=$(date -u +%FT%TZ) rc
    echo "[worker $w] $start_iso start $name" >> "$RUNS/progress.txt"
    if [[ $cmd == BUDGET* ]]; then budget ${cmd#BUDGET } > "$RUNS/$name.log" 2>&1; rc=$?
    else $cmd > "$RUNS/$name.log" 2>&1; rc=$?; fi
    local wall=$(( $(date +%s) - start ))
    [ $rc -eq 0 ] && record "$name" "$cmd" "$start_iso" "$wall"
    echo "[worker $w] $(date -u +%FT%TZ) $name rc=$rc wall=${wall}s" >> "$RUNS/progress.txt"
  done
}

rm -f "$RUNS/.claimed"
for w in $(seq 1 "$WORKERS"); do worker "$w" & done
wait

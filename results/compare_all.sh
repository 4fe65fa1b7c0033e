#!/bin/bash
# Paired per-scan comparisons (issue 8 §5, issue 10) of every committed table pair below, written to
# results/compare/<A>_vs_<B>.{json,md} by `crapnet compare` (95 % BCa bootstrap CI of the mean
# per-scan difference, Wilcoxon signed-rank p; for seed-aggregated tables the per-scan Dice is the
# mean over the seeds). A pair whose two summaries are not both present, or were run at different
# commits (run_info.json; e.g. a table not yet rerun on the current code), is skipped with a line.
#   results/compare_all.sh
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=results
pairs=()
for ds in chaos sabs; do
  for st in 1 2; do
    pairs+=("${ds}_setting${st}_crapnet ${ds}_setting${st}_alpnet" "${ds}_setting${st}_crapnet ${ds}_setting${st}_panet"
            "${ds}_setting${st}_alpnet ${ds}_setting${st}_panet")
    for m in alpnet_init alpnet_sup rpnet adnet qnet; do pairs+=("${ds}_setting${st}_crapnet ${ds}_setting${st}_$m"); done
  done
done
# the decomposition (CHAOS setting 1)
pairs+=("chaos_setting1_alpnet-attention chaos_setting1_alpnet" "chaos_setting1_alpnet-carafe chaos_setting1_alpnet"
        "chaos_setting1_crapnet chaos_setting1_alpnet-carafe" "chaos_setting1_crapnet-aligned chaos_setting1_crapnet")
# Tables 3-4 over five folds: every ablation point against the 5-block two-branch model
for v in blocks1 blocks7 blocks9 blocks12 blocks15 onebranch; do
  pairs+=("chaos_setting1_crapnet-$v chaos_setting1_crapnet")
done
mkdir -p $R/compare
for pair in "${pairs[@]}"; do
  read -r a b <<< "$pair"
  A=$R/${a}_lite/summary.json B=$R/${b}_lite/summary.json
  commits() { cat "$R/${1}_lite"/run_info.json "$R/${1}_lite"/seed*/run_info.json 2>/dev/null |
              grep -o '"commit": "[0-9a-f]*"' | sort -u | tr '\n' ' '; }
  if [ -f "$A" ] && [ -f "$B" ] && [ "$(commits "$a")" != "$(commits "$b")" ]; then
    echo "skipped $a vs $b (run at different commits: $(commits "$a")/ $(commits "$b"))"
  elif [ -f "$A" ] && [ -f "$B" ]; then
    $PY -m crapnet_core.cli compare "$A" "$B" --out "$R/compare/${a}_vs_${b#*_setting?_}" >/dev/null && echo "compared $a vs $b"
  else
    echo "skipped $a vs $b (summary missing)"
  fi
done

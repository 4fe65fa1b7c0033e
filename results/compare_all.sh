#!/bin/bash
# Paired per-scan comparisons (issue 8 §5, issue 10) of every committed table pair below, written to
# results/compare/<A>_vs_<B>.{json,md} by `crapnet compare` (95 % BCa bootstrap CI of the mean
# per-scan difference, Wilcoxon signed-rank p; for seed-aggregated tables the per-scan Dice is the
# mean over the seeds; tables with different seeds are compared on their common seed 0, see summary_of).
# A pair whose two summaries are not both present, or were run at different
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
# (third word seed0: seed 0 of both tables, whatever seeds they have, -> <A>_vs_<B>_seed0.json)
pairs+=("chaos_setting1_alpnet-attention chaos_setting1_alpnet seed0" "chaos_setting1_alpnet-carafe chaos_setting1_alpnet seed0"
        "chaos_setting1_crapnet chaos_setting1_alpnet-carafe seed0" "chaos_setting1_crapnet-aligned chaos_setting1_crapnet seed0"
        "chaos_setting1_crapnet chaos_setting1_alpnet seed0")
# Tables 3-4 over five folds: every ablation point against the 5-block two-branch model
for v in blocks1 blocks7 blocks9 blocks12 blocks15 onebranch; do
  pairs+=("chaos_setting1_crapnet-$v chaos_setting1_crapnet seed0")
done
seeds() { (cd "$R/${1}_lite" 2>/dev/null && ls -d seed*/summary.json 2>/dev/null | tr '\n' ' '); }  # finished seeds
# the summary a pair uses: the seed aggregate when both tables have the same seeds, else seed 0 of each
# (e.g. a one-seed ablation point against the three-seed 5-block table: same seed, same noise on both sides)
summary_of() { if [ "$(seeds "$1")" = "$(seeds "$2")" ] || [ ! -d "$R/${1}_lite/seed0" ]; then echo "$R/${1}_lite/summary.json"
               else echo "$R/${1}_lite/seed0/summary.json"; fi; }
commits() { cat "$(dirname "$1")"/run_info.json "$(dirname "$1")"/seed*/run_info.json 2>/dev/null |
            grep -o '"commit": "[0-9a-f]*"' | sort -u | tr '\n' ' '; }
mkdir -p $R/compare
for pair in "${pairs[@]}"; do
  read -r a b only <<< "$pair"
  A=$(summary_of "$a" "$b") B=$(summary_of "$b" "$a") out="$R/compare/${a}_vs_${b#*_setting?_}"
  if [ "${only:-}" = seed0 ]; then A=$R/${a}_lite/seed0/summary.json B=$R/${b}_lite/seed0/summary.json out=${out}_seed0; fi
  if [ -f "$A" ] && [ -f "$B" ] && [ "$(commits "$A")" != "$(commits "$B")" ]; then
    echo "skipped $a vs $b (run at different commits: $(commits "$A")/ $(commits "$B"))"
  elif [ -f "$A" ] && [ -f "$B" ]; then
    $PY -m crapnet_core.cli compare "$A" "$B" --out "$out" >/dev/null &&
      echo "compared $a vs $b (${A#$R/} vs ${B#$R/})"
  else
    echo "skipped $a vs $b (summary missing)"
  fi
done

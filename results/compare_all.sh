#!/bin/bash
# Every declared family of comparisons (crapnet_core/engine/decision.py) at the fold level, under the
# declared rule, and every generated table and sentence of the pages: the collector does both
# (results/compare/analysis.json, results/compare/<family>.md, the page blocks). Kept as a name for
# the old entry point until `crapnet study collect` replaces it.
#   results/compare_all.sh
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$PY" results/collect.py --update-book

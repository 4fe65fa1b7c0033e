# The declared study as a Snakemake workflow (Snakemake 9): crapnet_core/study/study.yaml -> results/.
#
#   run            one run of a table (train, evaluate)  -> RESULTS/<table>/seed<s>/<run_name>/metrics.json
#   budget         its declared budget curve             -> RESULTS/<table>/seed<s>/<run_name>/budget.json
#   seed_summary   the seed's cross-validation summary   -> RESULTS/<table>/seed<s>/summary.json
#   table_summary  the summary over the declared seeds   -> RESULTS/<table>/summary.json
#   comparisons    the decision rule's families           -> RESULTS/compare/analysis.json (+ <family>.md)
#   support        a declared support study's evaluations -> RESULTS/support/<table>/seed<s>/<run_name>/
#                  of a run whose checkpoints are (or will be) in the runs folder (support_sensitivity.json, kshot.json)
#
# Front door: `crapnet study run [--profile P] [--tables T] [--jobs N] [--executor slurm ...]`
# (crapnet_core/book/study_flow.py), which runs
#   snakemake --snakefile workflow/study.smk --directory <runs>/.study --workflow-profile workflow/profiles/study
#             --config results=<results> runs=<runs> tables=<t1,t2,...> ...
# A run's folder appears complete or not at all, so a stopped workflow loses only the runs in progress,
# and a run whose folder exists (committed, on any machine) is never trained again. What each job does:
# crapnet_core/study/jobs.py; the targets: crapnet_core/study/targets.py.

import json
import sys
from pathlib import Path

from crapnet_core.study.declaration import SUPPORT_KINDS, load_declaration
from crapnet_core.study.targets import study_targets

DECL = load_declaration(config.get("declaration") or None)
TABLES = DECL.select([t for t in str(config.get("tables", "")).split(",") if t])
S = study_targets(DECL, TABLES, config["results"], config.get("runs"))
RES = str(S.results)
PY = sys.executable
GPUS_PER_JOB = int(config.get("gpus_per_job", 0))
JOB_CONFIG = json.dumps(dict(config, results=RES))

# one thread per job, idle OpenMP threads sleep: N independent jobs fill N cores
shell.prefix("export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1; ")

wildcard_constraints:
    table=r"[^/]+",
    seed=r"\d+",
    run=r"[^/]+",

localrules: all, seed_summary, table_summary, comparisons


rule all:
    input: S.targets


rule run:
    output: f"{RES}/{{table}}/seed{{seed}}/{{run}}/metrics.json"
    log: "logs/run/{table}__seed{seed}__{run}.log"
    threads: 1
    resources:
        gpu=GPUS_PER_JOB,
    priority: lambda w: S.run_priority(w.table, int(w.seed), w.run, config.get("runs"))
    shell: "{PY} -m crapnet_core.book.study_flow run {wildcards.table} {wildcards.seed} {wildcards.run} {JOB_CONFIG:q} > {log} 2>&1"


# ancient(): a budget curve needs the run's checkpoints, which only the machine that trained it has. Its
# committed budget.json is final; without ancient() a fresh clone (file times in checkout order, no
# Snakemake metadata) looks "updated" and Snakemake would delete the curve to remake it, and fail.
rule budget:
    input: ancient(f"{RES}/{{table}}/seed{{seed}}/{{run}}/metrics.json")
    output: f"{RES}/{{table}}/seed{{seed}}/{{run}}/budget.json"
    log: "logs/budget/{table}__seed{seed}__{run}.log"
    threads: 1
    resources:
        gpu=GPUS_PER_JOB,
    priority: lambda w: S.budget_priority(w.table)
    shell: "{PY} -m crapnet_core.book.study_flow budget {wildcards.table} {wildcards.seed} {wildcards.run} {JOB_CONFIG:q} > {log} 2>&1"


# ancient(), as for the budget curve: committed evaluations are final (they need the run's checkpoints).
rule support:
    input: lambda w: ancient(S.support[(w.table, int(w.seed), w.name)][2])
    output: [S.support_pattern().replace("{file}", f) for f in SUPPORT_KINDS.values()]
    log: "logs/support/{table}__seed{seed}__{name}.log"
    threads: 1
    resources:
        gpu=GPUS_PER_JOB,
    priority: lambda w: S.support_priority(w.table, int(w.seed), w.name)
    shell: "{PY} -m crapnet_core.book.study_flow support {wildcards.table} {wildcards.seed} {wildcards.name} {JOB_CONFIG:q} > {log} 2>&1"


rule seed_summary:
    priority: S.summary_priority
    input: lambda w: S.seed_inputs[(w.table, int(w.seed))]
    output: f"{RES}/{{table}}/seed{{seed}}/summary.json"
    log: "logs/summary/{table}__seed{seed}.log"
    shell: "{PY} -m crapnet_core.book.study_flow seed_summary {wildcards.table} {wildcards.seed} - {JOB_CONFIG:q} > {log} 2>&1"


rule table_summary:
    priority: S.summary_priority
    input: lambda w: S.table_inputs[w.table]
    output: f"{RES}/{{table}}/summary.json"
    log: "logs/summary/{table}.log"
    shell: "{PY} -m crapnet_core.book.study_flow table_summary {wildcards.table} - - {JOB_CONFIG:q} > {log} 2>&1"


rule comparisons:
    priority: S.summary_priority
    input: S.comparison_inputs
    output: f"{RES}/compare/analysis.json"
    log: "logs/comparisons.log"
    shell: "{PY} -m crapnet_core.book.study_flow comparisons - - - {JOB_CONFIG:q} > {log} 2>&1"

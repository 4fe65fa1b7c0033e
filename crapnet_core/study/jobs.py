"""The bodies of the study workflow's jobs (``workflow/study.smk``), one function each.

- :func:`run_job`: train one declared run in the runs folder (resuming an interrupted training),
  evaluate it, and publish ``config.json``, ``metrics.json`` and ``run_info.json`` into
  ``results/<table>/seed<s>/<run_name>/`` at once (:func:`crapnet_core.study.layout.publish_run`);
- :func:`budget_job`: the test Dice of the declared checkpoints of that run -> ``budget.json``;
- :func:`support_job`: the support-choice and k-shot evaluations of a run of a declared support study
  -> ``results/support/<table>/seed<s>/<run_name>/`` (:func:`crapnet_core.report.support.write_support_results`);
- :func:`seed_summary_job`, :func:`table_summary_job`: the summaries made from the run folders;
- :func:`comparisons_job`: the fold-level comparisons of the declared families -> ``results/compare/``.

Each takes the declaration, the results folder and the runs folder; the workflow's driver
(:mod:`crapnet_core.book.study_flow`) calls them in one process per job.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ..io import read_json, write_json
from . import layout
from .entries import Declaration, Run
from .provenance import run_info, utc_now

LOG = logging.getLogger(__name__)


def find_run(decl: Declaration, table: str, seed: int, folder: str) -> Run:
    """The declared run of ``table`` and ``seed`` whose result folder is ``folder`` (ValueError if none)."""
    for run in decl.table(table).runs():
        if run.seed == int(seed) and run.folder == folder:
            return run
    raise ValueError(
        f"{table}/seed{seed}/{folder}: no declared run has this result folder (its config hash is "
        "not what the declaration gives; `crapnet study status` lists the declared runs)"
    )


def _command(run: Run) -> str:
    return f"crapnet study run --tables {run.table}  # seed {run.seed}, fold {run.fold}, group {run.group}"


def trained_run(run: Run, runs_root: str | os.PathLike, device: str | None = None, progress: bool = False) -> Path:
    """Train ``run`` under ``runs_root`` unless it is trained (an interrupted training resumes from its last
    checkpoint); returns the run folder. The inputs are checked before anything is written."""
    from ..engine.inputs import check_experiment_inputs
    from ..engine.runs import run_dir_for, run_lock
    from ..engine.training import is_trained, latest_checkpoint, train

    cfg = run.config.copy()
    if device:
        cfg.train.device = device
    run_dir = run_dir_for(cfg, runs_root)
    if not is_trained(run_dir):
        check_experiment_inputs(cfg)
    with run_lock(run_dir):
        if not is_trained(run_dir):
            resume = latest_checkpoint(run_dir) is not None and (run_dir / "config.json").is_file()
            LOG.info("%s: %s", run_dir, "resuming training" if resume else "training")
            train(cfg, run_dir, resume=resume, progress=progress)
    return run_dir


def run_job(
    decl: Declaration,
    table: str,
    seed: int,
    folder: str,
    results_dir: str | os.PathLike,
    runs_root: str | os.PathLike,
    device: str | None = None,
    progress: bool = False,
) -> Path:
    """Train, evaluate and publish one declared run (see the module docstring); returns the result folder."""
    from ..engine.evaluation import evaluate, read_metrics
    from ..engine.run_folder import train_seconds
    from ..engine.runs import is_evaluated, run_lock

    run = find_run(decl, table, seed, folder)
    started, t0 = utc_now(), time.time()
    run_dir = trained_run(run, runs_root, device, progress)
    with run_lock(run_dir):
        if not is_evaluated(run_dir, run.config):
            evaluate(run_dir, device=device or run.config.train.device, progress=progress)
    metrics = read_metrics(run_dir)
    if metrics.get("config_hash") != run.hash or int(metrics.get("step", -1)) != run.config.train.steps:
        raise ValueError(
            f"{run_dir}/metrics.json: config hash {metrics.get('config_hash')} at step "
            f"{metrics.get('step')}, expected {run.hash} at step {run.config.train.steps}"
        )
    saved = read_json(run_dir / "config.json")
    info = run_info(
        _command(run),
        started,
        time.time() - t0,
        train_seconds(run_dir),
        run_dir,
        note=None if saved.get("config_hash") == run.hash else "config.json of the runs folder differs",
    )
    dest = layout.result_dir(results_dir, run)
    return layout.publish_run(
        dest, {"config.json": saved, "metrics.json": layout.result_metrics(metrics, run_dir), "run_info.json": info}
    )


def budget_job(
    decl: Declaration,
    table: str,
    seed: int,
    folder: str,
    results_dir: str | os.PathLike,
    runs_root: str | os.PathLike,
    device: str | None = None,
) -> Path:
    """The declared budget curve of one run: test Dice at its saved checkpoints -> ``budget.json`` in the
    result folder (the run is trained first if the runs folder lacks it; its checkpoints are kept by the
    runtime settings the declaration adds)."""
    from ..engine.budget import evaluate_checkpoints

    run = find_run(decl, table, seed, folder)
    t = decl.table(table)
    run_dir = trained_run(run, runs_root, device)
    which = "all" if t.budget == "all" else ",".join(str(s) for s in t.budget)
    budget = evaluate_checkpoints(run_dir, which, device=device, progress=False)
    dest = layout.result_dir(results_dir, run) / layout.BUDGET_FILE
    write_json(dest, budget)
    return dest


def support_job(
    decl: Declaration,
    table: str,
    seed: int,
    name: str,
    results_dir: str | os.PathLike,
    runs_root: str | os.PathLike,
    device: str | None = None,
) -> list[Path]:
    """The evaluations of the declared support study of ``table`` and ``seed`` (support choice and k-shot
    with its ``shots``) of the run named ``name`` (``ExperimentConfig.run_name()``), from its checkpoints in
    ``runs_root``, written by :func:`crapnet_core.report.support.write_support_results`. A run still to be
    trained is trained first; a committed run that ``runs_root`` does not hold trained is a ValueError (its
    checkpoints are on the machine that trained it; training it again would evaluate other weights)."""
    from ..engine.run_folder import training_progress
    from ..engine.runs import run_dir_for
    from ..report.support import write_support_results

    seed = int(seed)
    run = next((r for r in decl.table(table).runs() if r.seed == seed and r.config.run_name() == name), None)
    if run is None:
        raise ValueError(f"{table}/seed{seed}/{name}: no declared run has this name (`crapnet study status`)")
    study = next((s for s in decl.support_studies if table in s.tables and seed in s.seeds), None)
    if study is None:
        raise ValueError(f"{table} seed {seed}: in no declared support study")
    here = run_dir_for(run.config, runs_root)
    progress = training_progress(here)
    committed = layout.result_dir(results_dir, run) / "metrics.json"
    if (progress is None or not progress.trained) and committed.is_file():
        raise ValueError(
            f"{committed}: committed, but {here} holds no trained run: the support "
            "evaluations need the checkpoints of the machine that trained it (`crapnet support-results RUN` there)"
        )
    run_dir = trained_run(run, runs_root, device)
    return write_support_results(
        [run_dir],
        results_dir,
        shots=list(study.shots),
        device=device,
        progress=False,
        table=table,
        command=f"crapnet study run --tables {table}  # support study {study.name}, seed {seed}, fold {run.fold}",
    )


def seed_summary_job(decl: Declaration, table: str, seed: int, results_dir: str | os.PathLike) -> Path:
    return layout.write_seed_summary(decl, decl.table(table), int(seed), results_dir)


def table_summary_job(decl: Declaration, table: str, results_dir: str | os.PathLike) -> Path:
    return layout.write_table_summary(decl.table(table), results_dir)


def comparisons_job(results_dir: str | os.PathLike) -> list[Path]:
    """The fold-level comparisons of every declared family (:mod:`crapnet_core.engine.decision`) of the
    results there are: ``results/compare/analysis.json``, ``<family>.md``, ``seed_band.md``
    (:func:`crapnet_core.report.collect.write_comparisons`; the pages are ``crapnet study collect``'s)."""
    from ..report.collect import write_comparisons

    return write_comparisons(results_dir)


#: step name -> (job function, what its arguments are), for the workflow's job entry.
JOBS: dict[str, Any] = {
    "run": run_job,
    "budget": budget_job,
    "support": support_job,
    "seed_summary": seed_summary_job,
    "table_summary": table_summary_job,
    "comparisons": comparisons_job,
}

__all__ = [
    "find_run",
    "trained_run",
    "run_job",
    "budget_job",
    "support_job",
    "seed_summary_job",
    "table_summary_job",
    "comparisons_job",
    "JOBS",
]

"""``crapnet study run``: the declared study's Snakemake workflow (``workflow/study.smk``), driven here.

:func:`run_study` selects declared tables (by profile or name), then runs Snakemake on
``workflow/study.smk`` with the book's machinery (:mod:`crapnet_core.book.driver`, :mod:`crapnet_core.book.gpus`): ``--jobs N``
one-thread jobs, one GPU per training (or ``per_gpu`` trainings sharing each GPU), or one SLURM job
per training with ``executor="slurm"``. Snakemake's own records live in ``<runs>/.study/`` (the
runs folder, not committed); the results go to ``results/`` (the per-run layout of
:mod:`crapnet_core.study.layout`). A second ``crapnet study run`` on the same runs folder while one
is running is refused.

Job bodies run as ``python -m crapnet_core.book.study_flow STEP A B C CONFIG_JSON`` (one process per
job: on SLURM each one is a SLURM job), with a claimed GPU where the job trains or evaluates.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..study.declaration import Declaration, Table, load_declaration
from . import driver
from .gpus import device_env, gpu_count

LOG = logging.getLogger(__name__)

#: Snakemake lines shown on the terminal by ``crapnet study run`` (all of them go to the log).
PROGRESS = driver.PROGRESS


class StudyError(RuntimeError):
    """The study workflow failed or cannot start (the message says what and where)."""


def _job(step: str, a: str, b: str, c: str, config: dict) -> None:
    from ..study import jobs

    decl = load_declaration(config.get("declaration") or None)
    results, runs = config["results"], config["runs"]
    device = config.get("device") or None
    if device == "auto":
        device = None
    spec = dict(
        out=str(Path(runs) / ".study"), gpu=int(config.get("gpus_per_job", 0)), per_gpu=int(config.get("per_gpu", 1))
    )
    if step in ("run", "budget", "support"):
        with device_env(spec):
            fn = {"run": jobs.run_job, "budget": jobs.budget_job, "support": jobs.support_job}[step]
            print(fn(decl, a, int(b), c, results, runs, device=device))
    elif step == "seed_summary":
        print(jobs.seed_summary_job(decl, a, int(b), results))
    elif step == "table_summary":
        print(jobs.table_summary_job(decl, a, results))
    elif step == "comparisons":
        for path in jobs.comparisons_job(results):
            print(path)
    else:
        raise ValueError(f"unknown step {step!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crapnet_core.book.study_flow STEP A B C CONFIG_JSON``: the body of one study job."""
    argv = list(sys.argv[1:] if argv is None else argv)
    steps = ("run", "budget", "support", "seed_summary", "table_summary", "comparisons")
    if len(argv) != 5 or argv[0] not in steps:
        print(
            f"usage: python -m crapnet_core.book.study_flow {{{','.join(steps)}}} A B C CONFIG_JSON "
            "(run by workflow/study.smk)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    t0 = time.time()
    print(
        f"{argv[0]} {' '.join(argv[1:4])} on {os.uname().nodename} (SLURM job {os.environ.get('SLURM_JOB_ID', '-')}, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '-')})",
        flush=True,
    )
    try:
        _job(*argv[:4], json.loads(argv[4]))
    except Exception:  # noqa: BLE001 - the traceback goes to the job's log; Snakemake reports the failure
        import traceback

        traceback.print_exc()
        return 1
    print(f"{argv[0]}: done in {time.time() - t0:.1f} s", flush=True)
    return 0


@contextlib.contextmanager
def _driver_lock(work: Path):
    """One ``crapnet study run`` per runs folder at a time (so a leftover Snakemake lock is stale)."""
    work.mkdir(parents=True, exist_ok=True)
    fh = open(work / "driver.lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise StudyError(
            f"another `crapnet study run` is working in {work.parent} (lock {work / 'driver.lock'}); "
            "wait for it or give another --runs folder"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def run_study(
    tables: Sequence[Table],
    declaration: Declaration | None = None,
    results_dir: str | os.PathLike | None = None,
    runs_root: str | os.PathLike | None = None,
    jobs: int | None = None,
    device: str = "auto",
    per_gpu: int = 1,
    executor: str = "local",
    cluster_profile: str | os.PathLike | None = None,
    partition: str | None = None,
    account: str | None = None,
    gpus_per_job: int | None = None,
    dry_run: bool = False,
    data_root: str | os.PathLike | None = None,
    echo: Callable[[str], None] = print,
    root: Path | None = None,
) -> int:
    """Make the results of ``tables`` (runs, budget curves, summaries, comparisons); returns Snakemake's
    status (0: everything made or already there). Raises :class:`StudyError` naming the logs on failure."""
    from ..paths import repo_root

    decl = declaration or load_declaration()  # loaded (and so validated) before anything runs
    root = Path(root or repo_root())
    results = Path(results_dir).resolve() if results_dir else root / "results"
    runs = Path(runs_root).resolve() if runs_root else root / "runs"
    work = runs / ".study"
    from ..study.targets import study_targets

    elsewhere = study_targets(decl, list(tables), results, runs).support_elsewhere
    if elsewhere:  # declared, but not possible here: said once, not a failure
        echo(
            f"crapnet study: {len(elsewhere)} committed run(s) of a support study were trained elsewhere (no "
            f"checkpoints in {runs}); their evaluations need `crapnet support-results` there: {elsewhere[0]}"
            + (f" and {len(elsewhere) - 1} more" if len(elsewhere) > 1 else "")
        )
    if jobs is not None and int(jobs) < 1:
        raise ValueError(f"--jobs: {jobs} must be at least 1")
    if per_gpu < 1:
        raise ValueError(f"--per-gpu: {per_gpu} must be at least 1")
    if data_root:
        os.environ["CRAPNET_DATA_ROOT"] = str(Path(data_root).resolve())
    if any(t.dataset == "phantom" for t in tables):
        from ..data.phantom import phantom_root

        phantom_root()  # generate once here, not concurrently in several jobs
    if executor == "local":
        jobs = int(jobs or driver.default_jobs())
        gpus = gpu_count() if device != "cpu" else 0
        per_job = 1 if gpus else 0
    else:
        gpus = 0
        per_job = (0 if device == "cpu" else 1) if gpus_per_job is None else int(gpus_per_job)
        cluster_profile = (
            Path(cluster_profile).resolve() if cluster_profile else root / "workflow" / "profiles" / executor
        )
    config = [
        f"results={results}",
        f"runs={runs}",
        f"tables={','.join(t.name for t in tables)}",
        f"device={device}",
        f"gpus_per_job={per_job}",
        f"per_gpu={per_gpu}",
    ]
    if declaration is not None and declaration.path != str(Path(load_declaration().path)):
        config.append(f"declaration={declaration.path}")
    cmd = driver.snakemake_command(
        work,
        work / "unused",
        "study",
        jobs,
        gpus=gpus * per_gpu,
        gpus_per_job=per_job,
        dry_run=dry_run,
        executor=executor,
        cluster_profile=cluster_profile,
        partition=partition,
        account=account,
        root=root,
        workflow_file="study.smk",
        config=config,
    )
    cmd.append("--nolock")  # the driver lock above makes Snakemake's own lock redundant (and a stale one harmless)
    where = f"{jobs} at a time" + (f", {gpus} GPU(s), {per_gpu} training(s) per GPU" if gpus else "")
    if executor != "local":
        where = f"executor {executor}, {per_job} GPU(s) per job"
    echo(f"crapnet study: {len(tables)} table(s), {where}; results -> {results}; runs and logs -> {runs}")
    with _driver_lock(work):
        log = work / "logs" / ("snakemake-dry-run.log" if dry_run else "snakemake.log")
        code = driver.run_snakemake(cmd, log, echo=echo, show=None if dry_run else PROGRESS)
    if code != 0:
        failed = sorted((work / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]
        raise StudyError(
            f"the study workflow failed (Snakemake status {code}); Snakemake's log: {log}; "
            f"latest job logs: {', '.join(map(str, failed))}"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())

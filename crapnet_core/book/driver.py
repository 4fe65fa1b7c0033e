"""``crapnet book``'s front door: plan the book, then drive Snakemake on the study's workflow.

:func:`build_book` makes the plan (:func:`crapnet_core.book.plan.plan_book`), writes it to
``OUT/plan.json`` and runs ``workflow/Snakefile`` with Snakemake's CLI (:func:`snakemake_command`,
:func:`run_snakemake`): ``--jobs N`` one thread each, one GPU per training (or ``per_gpu`` sharing one
device), or one SLURM job per step (``executor="slurm"``). It prints Snakemake's progress, and on a
failure what failed (the records the jobs wrote, else Snakemake's own errors). ``--plan`` is a dry run
that writes nothing into the output folder.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..io import write_json
from .gpus import gpu_count

#: Snakemake rerun triggers: content keys (params), input-set and rule-code changes; not mtime.
RERUN_TRIGGERS = ("params", "input", "code", "software-env")


# ---------------------------------------------------------------------------- driving Snakemake
def snakefile(root: Path | None = None) -> Path:
    from ..paths import repo_root

    path = Path(root or repo_root()) / "workflow" / "Snakefile"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the workflow's Snakefile is missing from this checkout")
    return path


def snakemake_command(
    out_dir: Path,
    plan_file: Path,
    profile: str,
    cores: int | None,
    gpus: int = 0,
    gpus_per_job: int = 0,
    dry_run: bool = False,
    force: bool = False,
    executor: str = "local",
    cluster_profile: str | os.PathLike | None = None,
    partition: str | None = None,
    account: str | None = None,
    root: Path | None = None,
    notebooks_root: Path | None = None,
    targets: Sequence[str] = (),
    workflow_file: str = "Snakefile",
    config: Sequence[str] | None = None,
    per_gpu: int = 1,
) -> list[str]:
    """The ``snakemake`` command line that ``crapnet book`` runs (Snakemake's CLI, in this venv).

    ``root``: the checkout holding ``workflow/``; ``notebooks_root``: the folder holding the
    ``notebooks/`` and ``book/`` to run (default ``root``); ``targets``: the files to make
    (default: the book). ``workflow_file`` and ``config`` (``NAME=VALUE`` items): another workflow
    of ``workflow/`` and its config (``crapnet study``: ``study.smk``, profile ``study``).
    """
    from ..paths import repo_root

    root = Path(root or repo_root())
    notebooks_root = Path(notebooks_root or root)
    path = snakefile(root) if workflow_file == "Snakefile" else root / "workflow" / workflow_file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the workflow is missing from this checkout")
    items = (
        list(config)
        if config is not None
        else [f"plan={plan_file}", f"repo={notebooks_root}", f"gpus_per_job={gpus_per_job}", f"per_gpu={per_gpu}"]
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "--snakefile",
        str(path),
        "--directory",
        str(out_dir),
        "--workflow-profile",
        str(root / "workflow" / "profiles" / profile),
        "--config",
        *items,
    ]
    if executor == "local":
        cmd += ["--cores", str(cores), "--resources", f"gpu={gpus}"]
    else:
        cmd += ["--executor", executor]
        if cores:  # else the cluster profile's `jobs`
            cmd += ["--jobs", str(cores)]
        if cluster_profile:
            cmd += ["--profile", str(cluster_profile)]
        # --default-resources on the command line replaces the profile's list: merge them
        defaults = _profile_default_resources(cluster_profile)
        if partition:
            defaults.append(f"slurm_partition={partition}")
        if account:
            defaults.append(f"slurm_account={account}")
        if defaults:
            cmd += ["--default-resources", *defaults]
    if force:
        cmd += ["--forcerun", "notebook"]
    if dry_run:
        cmd += ["--dry-run", "--quiet", "rules"]
    return cmd


#: Snakemake lines shown on the terminal by ``crapnet book`` (all of them go to logs/snakemake.log).
PROGRESS = re.compile(
    r"^\d+ of \d+ steps|^Error|^RuleException|Exception|^Nothing to be done|"
    r"^\s+(log|wildcards|message): |^Removing output files of failed job|^Complete log"
)


def _profile_default_resources(profile_dir: str | os.PathLike | None) -> list[str]:
    """``default-resources`` of a Snakemake profile folder as ``NAME=VALUE`` strings ([] if none)."""
    if not profile_dir:
        return []
    import yaml

    path = Path(profile_dir) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--cluster-profile: {path} not found (a Snakemake profile folder holds config.yaml)"
        ) from None
    except yaml.YAMLError as err:
        raise ValueError(f"--cluster-profile: {path} is not valid YAML ({err})") from None
    res = data.get("default-resources") or []
    if isinstance(res, dict):
        return [f"{k}={v}" for k, v in res.items()]
    return [str(r) for r in res]


def run_snakemake(cmd: Sequence[str], log_file: Path, echo=print, show: re.Pattern | None = None) -> int:
    """Run Snakemake, writing its messages to ``log_file`` and those matching ``show`` (all when
    None) to ``echo``: progress ("12 of 45 steps (27%) done"), the jobs started, errors."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_file, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if show is None or show.search(line):
                echo(line.rstrip("\n"))
        return proc.wait()


# ---------------------------------------------------------------------------- crapnet book
def default_jobs() -> int:
    """Jobs at a time by default: every core this process may use (each job runs one thread)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _failures(out_dir: Path, since: float) -> list[str]:
    """What failed in this build: the records the workflow's jobs wrote under OUT/logs/failed."""
    lines = []
    for rec in sorted((out_dir / "logs" / "failed").glob("*.txt")):
        if rec.stat().st_mtime >= since - 1:
            text = rec.read_text(errors="replace").strip().splitlines()
            lines.append(f"- {text[0]}" if text else f"- {rec.stem}")
            lines += [f"  {ln.strip()}" for ln in text[1:]]
    return lines


def _snakemake_errors(log: Path) -> list[str]:
    """Snakemake's own "Error in rule" messages (jobs that failed before their body ran, e.g. on SLURM)."""
    if not log.is_file():
        return []
    lines, text = [], log.read_text(errors="replace").splitlines()
    for i, line in enumerate(text):
        if line.startswith("Error in rule"):
            lines.append(f"- {line.rstrip(':')}")
            for follow in text[i + 1 : i + 12]:
                if follow.strip().startswith(("message:", "log:", "wildcards:")):
                    lines.append(f"  {follow.strip()}")
                elif not follow.startswith(" "):
                    break
    return lines


#: The job-count table of Snakemake's dry run (printed once by ``crapnet book --plan``).
_JOB_TABLE = re.compile(r"^(job\s+count|-+\s+-+|\w+\s+\d+)$")


def _dry_run(
    plan,
    out_dir: Path,
    jobs,
    gpus: int,
    per_job: int,
    per_gpu: int,
    executor: str,
    cluster_profile,
    partition,
    account,
    root: Path,
    echo: Callable[[str], None],
) -> Path:
    """Snakemake's dry run of the plan, writing nothing into ``out_dir``: the plan file and the log go to a
    temporary folder; Snakemake works in ``out_dir`` when an earlier build left its records there (to say
    what is already done), else in the temporary folder. Echoes the job counts once."""
    import tempfile

    from .plan import BookError, save_plan

    with tempfile.TemporaryDirectory(prefix="crapnet-plan-") as tmp:
        tmp = Path(tmp)
        plan_file = save_plan(plan, tmp / "plan.json")
        work = out_dir if (out_dir / ".snakemake").is_dir() else tmp / "build"
        cmd = snakemake_command(
            work,
            plan_file,
            plan.profile,
            jobs,
            gpus=gpus,
            gpus_per_job=per_job,
            dry_run=True,
            executor=executor,
            cluster_profile=cluster_profile,
            partition=partition,
            account=account,
            root=root,
            per_gpu=per_gpu,
        )
        lines: list[str] = []
        code = run_snakemake(cmd, tmp / "snakemake-plan.log", echo=lines.append)
        if code != 0:
            raise BookError(f"the workflow's dry run failed (status {code}):\n" + "\n".join(lines[-30:]))
    table, done = [], False
    for line in lines:  # Snakemake prints the job table twice (the DAG, then the summary): show it once
        if _JOB_TABLE.match(line.strip()) and not done:
            table.append(line.rstrip())
        elif table and not done:
            done = True
    echo("jobs of the workflow (Snakemake's dry run):")
    for line in table or [ln for ln in lines if "Nothing to be done" in ln]:
        echo(f"  {line}")
    echo(next((ln.strip() for ln in lines if ln.startswith("This was a dry-run")), "This was a dry-run."))
    return out_dir / "html" / "index.html"


def build_book(
    profile: str | None = None,
    data_root: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    runs_root: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    dry_run: bool = False,
    executor: str = "local",
    cluster_profile: str | os.PathLike | None = None,
    partition: str | None = None,
    account: str | None = None,
    gpus_per_job: int | None = None,
    plan: Any = None,
    root: Path | None = None,
    per_gpu: int = 1,
) -> Path:
    """Plan the book and run the study's Snakemake workflow (``workflow/Snakefile``); returns ``OUT/html/index.html``.

    ``crapnet book``'s front door. ``profile``: ``smoke``, ``lite`` or ``paper`` (default
    :data:`crapnet_core.book.plan.DEFAULT_PROFILE`); ``plan``: a :class:`crapnet_core.book.plan.BookPlan`
    to run instead of planning one.

    ``jobs`` (default: every core) jobs run at a time, each with one thread; with GPUs, as
    many trainings at once as there are GPUs, one each. ``executor="slurm"`` submits every job
    (superpixels, training, evaluation, notebook execution) to SLURM, ``gpus_per_job`` GPUs
    each (default 1 unless ``device == "cpu"``), ``partition``/``account`` as given,
    further settings from the Snakemake profile ``cluster_profile`` (default
    ``workflow/profiles/slurm``). ``per_gpu``: trainings that share one GPU at once (several fit on
    a large GPU). ``dry_run``: print the workflow's job counts once and stop, writing nothing into
    ``out_dir`` (Snakemake reads the records of an earlier build there, if any, else it runs in a
    temporary folder); returns the path index.html would have. ``force``: execute every notebook
    again (runs are kept).
    A failed job raises :class:`BookError` naming each failure (notebook, parameters, failing
    cell, partial notebook, log).
    """
    from ..paths import repo_root
    from .execute import executed_results
    from .plan import DEFAULT_PROFILE, BookError, plan_book, save_plan

    root = Path(root or repo_root())
    out_dir = Path(out_dir).resolve() if out_dir else root / "_build"
    plan = plan or plan_book(profile or DEFAULT_PROFILE, data_root, runs_root, results_dir, device)
    if plan.data_root:
        os.environ["CRAPNET_DATA_ROOT"] = plan.data_root  # for the notebook kernels
    if jobs is not None and int(jobs) < 1:
        raise ValueError(f"--jobs: {jobs} must be at least 1")
    if int(per_gpu) < 1:
        raise ValueError(f"--per-gpu: {per_gpu} must be at least 1")
    if executor == "local":
        jobs = int(jobs or default_jobs())
        gpus = gpu_count() if plan.device != "cpu" else 0
        per_job = 1 if gpus else 0
    else:
        gpus = 0
        per_job = (0 if plan.device == "cpu" else 1) if gpus_per_job is None else int(gpus_per_job)
        cluster_profile = (
            Path(cluster_profile).resolve() if cluster_profile else root / "workflow" / "profiles" / executor
        )
    where = f"{jobs} at a time" + (f", {gpus} GPU(s), {per_gpu} training(s) per GPU" if gpus else "")
    if executor != "local":
        queued = f"up to {jobs} jobs" if jobs else "jobs (as many as the cluster profile allows)"
        where = f"executor {executor}, {queued} queued at a time, {per_job} GPU(s) per job"
    echo(
        f"crapnet book: profile {plan.profile}, data {', '.join(plan.datasets)}, {len(plan.jobs)} notebook "
        f"execution(s), {where} -> {out_dir}"
    )
    for note in plan.notes:
        echo(f"note: {note}")
    if "phantom" in plan.datasets:
        from ..data.phantom import phantom_root

        phantom_root()  # generate once here, not concurrently in several jobs
    if dry_run:
        return _dry_run(
            plan,
            out_dir,
            jobs,
            gpus * int(per_gpu),
            per_job,
            int(per_gpu),
            executor,
            cluster_profile,
            partition,
            account,
            root,
            echo,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_file = save_plan(plan, out_dir / "plan.json")
    cmd = snakemake_command(
        out_dir,
        plan_file,
        plan.profile,
        jobs,
        gpus=gpus * int(per_gpu),
        gpus_per_job=per_job,
        force=force,
        executor=executor,
        cluster_profile=cluster_profile,
        partition=partition,
        account=account,
        root=root,
        per_gpu=int(per_gpu),
    )
    started = time.time()
    state = dict(
        plan=plan.to_dict(), started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), command=cmd
    )
    write_json(out_dir / "book.json", dict(state, status="executing"))
    say = echo if progress else (lambda line: None)
    code = run_snakemake(cmd, out_dir / "logs" / "snakemake.log", echo=say, show=PROGRESS)
    results = executed_results(plan, out_dir, since=started)
    index = out_dir / "html" / "index.html"
    if code != 0 or not index.is_file():
        lines = (
            _failures(out_dir, started)
            or _snakemake_errors(out_dir / "logs" / "snakemake.log")
            or [f"- see {out_dir / 'logs' / 'snakemake.log'}"]
        )
        err = (
            f"the book's workflow failed (Snakemake status {code}); what failed:\n"
            + "\n".join(lines)
            + f"\nper-job logs: {out_dir / 'logs'}; Snakemake's log: {out_dir / 'logs' / 'snakemake.log'}"
        )
        write_json(out_dir / "book.json", dict(state, status="failed", error=err))
        raise BookError(err)
    total = time.time() - started
    sphinx = out_dir / "logs" / "sphinx.log"
    warnings = (
        [ln for ln in sphinx.read_text(errors="replace").splitlines() if "WARNING" in ln or "ERROR" in ln]
        if sphinx.is_file()
        else []
    )
    write_json(
        out_dir / "book.json",
        dict(
            state,
            status="ok",
            index=str(index),
            wall_s=round(total, 1),
            sphinx_warnings=len(warnings),
            executions=[dict(name=r.job.name, status=r.status, wall_s=round(r.wall_s, 1)) for r in results],
        ),
    )
    echo(
        f"notebooks: {sum(r.status == 'ok' for r in results)} executed, "
        f"{sum(r.status == 'cached' for r in results)} reused; book built in {total:.0f} s "
        f"({len(warnings)} Sphinx warning(s)): {index}"
    )
    return index

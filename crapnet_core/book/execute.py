"""One page of the book: a papermill execution of a notebook with the parameters of its job.

:func:`execute_notebook` runs one executed copy (``OUT/notebooks/<name>__<slug>.ipynb``, its log
and parameters under ``OUT/logs/``) with the parameters :func:`job_parameters` gives it, and marks
the copy with ``crapnet_book`` metadata (status, parameters, wall time, host);
:func:`executed_results` reads those marks back for the build page, :func:`failing_cell` names the
cell that failed. Called by the workflow's notebook job (:mod:`crapnet_core.book.jobs`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import write_text
from ..paths import repo_root
from .plan import BookError, BookPlan, Job


# ---------------------------------------------------------------------------- notebooks
def notebook_path(stem: str, root: Path | None = None) -> Path:
    path = (root or repo_root()) / "notebooks" / f"{stem}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: notebook not found")
    return path


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """Names and defaults of the parameters cell (the code cell tagged ``parameters``)."""
    import papermill

    quiet = [logging.getLogger(n) for n in ("papermill", "papermill.translators")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:  # inspect_notebook logs every call at INFO
        lg.setLevel(logging.ERROR)
    try:
        found = papermill.inspect_notebook(str(path))
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    return {name: info.get("default") for name, info in found.items()}


def source_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a notebook's cell types and sources (outputs and metadata ignored)."""
    nb = json.loads(Path(path).read_text())
    cells = [(c.get("cell_type"), "".join(c.get("source", ""))) for c in nb.get("cells", [])]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def job_parameters(job: Job, plan: BookPlan, declared: Iterable[str]) -> dict[str, Any]:
    """The papermill parameters of ``job``: its own plus the plan's common ones it declares.

    A job parameter the notebook does not declare is an error (it would be silently ignored).
    """
    declared = set(declared)
    # interactive=False: batch run, static figures instead of widgets (the HTML stays complete)
    common = dict(
        data_root=plan.data_root,
        runs_root=plan.runs_root,
        results_dir=plan.results_dir,
        device=plan.device,
        interactive=False,
    )
    unknown = sorted(set(job.params) - declared)
    if unknown:
        raise BookError(
            f"notebooks/{job.notebook}.ipynb: its parameters cell does not declare {', '.join(unknown)} "
            f"(declared: {', '.join(sorted(declared))})"
        )
    params = {k: v for k, v in common.items() if k in declared}
    params.update(job.params)
    return params


def _marker(path: Path) -> dict[str, Any]:
    """The ``crapnet_book`` metadata of an executed copy ({} when unreadable)."""
    try:
        return json.loads(path.read_text()).get("metadata", {}).get("crapnet_book", {})
    except (OSError, json.JSONDecodeError):
        return {}


def _mark(path: Path, info: dict[str, Any]) -> None:
    """Write ``info`` into the notebook metadata (``crapnet_book``), atomically."""
    nb = json.loads(path.read_text())
    nb.setdefault("metadata", {})["crapnet_book"] = info
    write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


@dataclass
class FailedCell:
    index: int
    execution_count: int | None
    source: str
    ename: str
    evalue: str

    def describe(self) -> str:
        first = next((ln for ln in self.source.splitlines() if ln.strip()), "")
        count = f", In [{self.execution_count}]" if self.execution_count else ""
        return (
            f"code cell {self.index} of the executed copy{count} `{first.strip()[:100]}`: {self.ename}: {self.evalue}"
        )


def failing_cell(path: str | os.PathLike) -> FailedCell | None:
    """The first code cell of an executed notebook with an error output (None if none)."""
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return FailedCell(
                    index,
                    cell.get("execution_count"),
                    "".join(cell.get("source", "")),
                    out.get("ename", "Error"),
                    str(out.get("evalue", ""))[:500],
                )
    return None


@dataclass
class JobResult:
    job: Job
    path: Path
    status: str  # "ok" (executed by this build), "cached" (by an earlier one), "failed", "not run"
    wall_s: float = 0.0
    error: str = ""
    log: Path | None = None


def execute_notebook(spec: dict[str, Any]) -> Path:
    """One papermill execution: the body of the workflow's ``notebook`` job (one process per job).

    ``spec`` (from :func:`crapnet_core.book.workflow.study` / :func:`crapnet_core.book.jobs.job_spec`): ``template``, ``name``, ``params`` (the
    papermill parameters), ``out`` (the book's output folder), ``cwd``, ``key``, ``shown``.
    Writes ``OUT/notebooks/<name>.ipynb`` (saved after every cell, so a failure keeps the
    partial notebook; the workflow runs with ``keep-incomplete``) and
    ``OUT/logs/<name>.params.yaml``; cell outputs are logged to stderr (the job's log).
    Raises :class:`BookError` naming the notebook, its parameters, the failing cell and the
    partial notebook.
    """
    import papermill
    import yaml

    out_dir = Path(spec["out"])
    out_nb = out_dir / "notebooks" / f"{spec['name']}.ipynb"
    logs = out_dir / "logs"
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    write_text(logs / f"{spec['name']}.params.yaml", yaml.safe_dump(spec["params"], sort_keys=True))
    info = dict(
        key=spec.get("key"),
        notebook=spec.get("notebook"),
        tag=spec.get("tag"),
        title=spec.get("title"),
        params=spec["params"],
        started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        host=platform.node(),
    )
    started = time.time()
    error: BaseException | None = None
    try:
        papermill.execute_notebook(
            spec["template"],
            str(out_nb),
            parameters=spec["params"],
            cwd=spec.get("cwd"),
            kernel_name="python3",
            progress_bar=False,
            log_output=True,
            request_save_on_cell_execute=True,
        )
    except Exception as err:  # noqa: BLE001 - described below with the failing cell
        error = err
    info["wall_s"] = round(time.time() - started, 1)
    cell = failing_cell(out_nb)
    if error is None and cell is None and out_nb.is_file():
        _mark(out_nb, dict(info, status="ok"))
        return out_nb
    why = cell.describe() if cell is not None else f"papermill failed: {type(error).__name__}: {error}"
    if out_nb.is_file():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            _mark(out_nb, dict(info, status="failed", error=why))
    raise BookError(
        f"{spec.get('shown', spec['name'])}\n  failed in {why}\n  partial notebook kept: {out_nb}\n"
        f"  log: {logs / (spec['name'] + '.log')}"
    )


def executed_results(plan: BookPlan, out_dir: str | os.PathLike, since: float | None = None) -> list[JobResult]:
    """The state of the plan's executed copies under ``OUT/notebooks`` (read from their markers).

    ``status`` is ``ok`` when the copy completed at or after ``since`` (a POSIX time: this
    build), ``cached`` when earlier, ``failed`` when its execution failed, ``not run`` when absent.
    """
    out: list[JobResult] = []
    for job in plan.jobs:
        path = Path(out_dir) / "notebooks" / f"{job.name}.ipynb"
        meta = _marker(path) if path.is_file() else {}
        status = meta.get("status") or "not run"
        if status == "ok" and since is not None:
            started = _dt.datetime.fromisoformat(meta.get("started", "1970-01-01T00:00:00+00:00")).timestamp()
            status = "ok" if started >= since - 1 else "cached"
        out.append(
            JobResult(
                job,
                path,
                status,
                float(meta.get("wall_s") or 0.0),
                meta.get("error", ""),
                Path(out_dir) / "logs" / f"{job.name}.log",
            )
        )
    return out

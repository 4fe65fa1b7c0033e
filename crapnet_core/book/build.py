"""The research book: papermill batch runs of the notebooks, then the jupyter-book HTML build.

``crapnet book --profile smoke|lite|paper`` (see :mod:`crapnet_core.cli.book`) calls
:func:`crapnet_core.book.workflow.build_book`, which

1. makes a :class:`BookPlan` for the profile (:func:`plan_book`): which notebook runs with
   which parameters (one executed copy per dataset / fold / setting / method / ablation
   point), and what the profile leaves out (listed in the book);
2. runs the study's Snakemake workflow (``workflow/Snakefile``, steps and content keys in
   :mod:`crapnet_core.book.workflow`) on that plan: superpixels per scan, one job per training
   run and per evaluation, one papermill execution per notebook page
   (:func:`execute_notebook`), then the HTML build. Snakemake schedules them (``--jobs N``,
   one GPU per training, or one SLURM job each), reuses completed work and re-runs what a
   changed notebook, parameter or library file affects;
3. the last job assembles a build-source tree from the committed ``_config.yml``/``_toc.yml``,
   ``book/*.md`` and the executed notebooks (:func:`assemble_source`), with the toc's
   ``notebooks/<name>`` entries replaced by the executed copies, and
4. runs the jupyter-book (Sphinx) build on it with notebook execution off
   (:func:`build_html`); ``build_book`` returns the path of ``index.html``.

Layout under the output folder ``OUT`` (default ``<repo>/_build``, ignored by git)::

    OUT/notebooks/<name>__<slug>.ipynb   executed copies (kept, also when they fail)
    OUT/logs/<name>__<slug>.log          papermill log of each execution (cell outputs)
    OUT/logs/<name>__<slug>.params.yaml  the parameters it ran with
    OUT/logs/sphinx.log                  the jupyter-book build log
    OUT/logs/{train,evaluate,superpixels}/  per-job logs of the other steps
    OUT/logs/snakemake.log               Snakemake's own messages (progress, errors)
    OUT/logs/failed/<job>.txt            what failed, written by the failing job
    OUT/plan.json                        the plan the workflow ran
    OUT/.snakemake/                      Snakemake's records (what ran with which keys)
    OUT/source/                          the assembled build source (rewritten each build)
    OUT/html/index.html                  the book
    OUT/book.json                        the plan, per-job status and wall times
    OUT/screenshots/                     browser check (crapnet_core.book.browser_check)

Training runs go to ``<repo>/runs`` (``--runs``), shared through
``crapnet_core.engine.runs.ensure_run`` (keyed by config hash), so a re-run of the book or a
notebook run by hand reuses them.

Each executed copy carries ``crapnet_book`` metadata (status, parameters, wall time, host);
whether it is up to date is Snakemake's decision (its recorded content key).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..engine.runs import run_config  # noqa: F401 (the plan's configs; re-exported)
from ..facts import (DATASET_FOLDERS, DATASET_TITLES, FOLDS, PAPER_METHODS, PROFILES,  # noqa: F401 (re-exported)
                    SETTINGS, TABLE3_BLOCKS, TABLE4_BRANCHES)
from ..io import write_json, write_text
from ..paths import (ProjectNotFound, available_datasets, default_results_dir,  # noqa: F401 (re-exported)
                    default_runs_root, repo_root)
from ..engine.environment import environment  # packages, CPU kernels, threads of the build
from ..report.figures import machine_description  # provenance line (report layer)

LOG = logging.getLogger(__name__)

#: Book profiles (the training profile of the runs has the same name): facts.PROFILES.
DEFAULT_PROFILE = "lite"

#: The notebooks of the book, in order: file stem -> page title.
NOTEBOOKS = {
    "01_data_exploration": "Data exploration",
    "02_superpixels": "Superpixel pseudo-labels",
    "03_train_fold": "Train and evaluate one fold",
    "04_ablation": "Ablations (one page per ablated axis)",
    "06_qualitative": "Qualitative results",
    "07_results": "Results against the paper",
    "08_inside_attention": "Inside the attention",
    "09_segment_your_own_scan": "Segment your own scan",
    "10_support": "How much does the support matter?",
}

#: Everything the paper evaluates (Sec. 4, Tables 1-4, Fig. 3): what a profile may leave out.
PAPER_FOLDS = FOLDS
PAPER_SETTINGS = SETTINGS
PAPER_BLOCKS = TABLE3_BLOCKS
PAPER_BRANCHES = TABLE4_BRANCHES
DEFAULT_BLOCKS = 5
DEFAULT_BRANCHES = 2


class BookError(RuntimeError):
    """The book could not be produced (a notebook failed, the build failed, bad setup)."""


# ---------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Job:
    """One papermill execution of one notebook with one set of parameters.

    ``tag`` is a short readable name of the parameters (used in the file name and the page
    title); ``stage`` is the book's phase (0 data, 1 one training each, 2 pages reading
    trained runs), for display: the workflow orders jobs by the runs they read
    (:func:`crapnet_core.book.workflow.runs_read`).
    """

    notebook: str
    params: dict
    stage: int
    tag: str
    title: str

    @property
    def name(self) -> str:
        """``<notebook>__<tag>``: the executed copy's file stem."""
        return f"{self.notebook}__{slugify(self.tag)}"

    def describe(self) -> str:
        shown = {k: v for k, v in self.params.items() if k not in _PATH_PARAMS}
        return f"{self.notebook}.ipynb ({self.title}; parameters {json.dumps(shown, sort_keys=True)})"


#: Parameters that hold machine-specific paths (not shown in one-line descriptions).
_PATH_PARAMS = ("data_root", "runs_root", "results_dir")


@dataclass
class BookPlan:
    """What a profile executes (``jobs``) and what it leaves out (``left_out``, shown in the book)."""

    profile: str
    datasets: list[str]
    data_root: str | None
    runs_root: str
    results_dir: str
    device: str
    jobs: list[Job]
    left_out: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def by_notebook(self) -> dict[str, list[Job]]:
        out: dict[str, list[Job]] = {}
        for job in self.jobs:
            out.setdefault(job.notebook, []).append(job)
        return out

    def stages(self) -> list[list[Job]]:
        numbers = sorted({j.stage for j in self.jobs})
        return [[j for j in self.jobs if j.stage == s] for s in numbers]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["jobs"] = [dict(asdict(j), name=j.name) for j in self.jobs]
        return out


def slugify(text: str) -> str:
    """File-name-safe slug: lower case, ``[a-z0-9._-]``, runs of other characters -> ``-``."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", str(text).lower()).strip("-")
    if not slug:
        raise ValueError(f"cannot make a file name from {text!r}")
    return slug


def _train_tag(dataset: str, setting: int, fold: int, method: str, blocks: int | None, branches: int | None,
               group: str | None = None) -> str:
    tag = f"{dataset}-s{setting}"
    if group:
        tag += f"-{group}"
    tag += f"-f{fold}-{method}"
    if blocks is not None:
        tag += f"-b{blocks}"
    if branches is not None:
        tag += f"-br{branches}"
    return tag


def _train_title(dataset: str, setting: int, fold: int, method: str, blocks: int | None, branches: int | None,
                 group: str | None = None) -> str:
    title = f"{DATASET_TITLES.get(dataset, dataset)}, setting {setting}"
    if group:
        title += f" ({group.replace('_', ' and ')})"
    title += f", fold {fold}, {method}"
    if blocks is not None:
        title += f", {blocks} block{'s' if blocks != 1 else ''}"
    if branches is not None:
        title += f", {branches} branch{'es' if branches != 1 else ''}"
    return title


def _train_job(profile: str, dataset: str, setting: int, fold: int, method: str, blocks: int | None = None,
               branches: int | None = None, group: str | None = None, stage: int = 1) -> Job:
    params = dict(profile=profile, dataset=dataset, setting=setting, fold=fold, method=method,
                  blocks=blocks, branches=branches, test_group=group)
    return Job("03_train_fold", params, stage, _train_tag(dataset, setting, fold, method, blocks, branches, group),
               _train_title(dataset, setting, fold, method, blocks, branches, group))


def _config_hash(job: Job) -> str:
    p = job.params
    return run_config(p["profile"], p["dataset"], p["setting"], p["fold"], p["method"], p["blocks"],
                      p["branches"], p["test_group"]).config_hash()


def ablation_reference(decl, table):
    """The table an ablation point is measured against: the declared table of the same dataset, setting,
    profile and method with no overrides, off the ablation page (the method as the profile trains it; at
    ``lite`` the reference of the ablations family of :data:`crapnet_core.engine.decision.FAMILIES`), or None."""
    for r in decl.tables.values():
        if (r.page != "ablations" and not r.overrides and not r.pending
                and (r.dataset, r.setting, r.profile, r.method) == (table.dataset, table.setting, table.profile, table.method)):
            return r
    return None


def ablation_points(decl, profile: str) -> dict[str, list[int]]:
    """The ablation points of the book's ablation pages at ``profile``: every attention-block count and
    branch count of the profile's declared ablation tables (page ``ablations``) and of their reference
    (:func:`ablation_reference`), blocks ascending, branches descending (the paper's Tables 3-4)."""
    tables = [t for t in decl.select(profiles=[profile]) if t.page == "ablations" and not t.pending]
    refs = {r.name for r in (ablation_reference(decl, t) for t in tables) if r is not None}
    configs = [decl.tables[n].configs(decl.tables[n].seeds[0], decl.tables[n].folds[0])[0] for n in sorted(refs)]
    configs += [t.configs(t.seeds[0], t.folds[0])[0] for t in tables]
    if not configs:
        return {"blocks": [], "branches": []}
    ref = configs[0].model if refs else None
    blocks = sorted({c.model.n_blocks for c in configs if ref is None or c.model.branches == ref.branches})
    branches = sorted({c.model.branches for c in configs if ref is None or c.model.n_blocks == ref.n_blocks}, reverse=True)
    return {"blocks": blocks, "branches": branches}


def plan_book(
    profile: str = DEFAULT_PROFILE,
    data_root: str | os.PathLike | None = None,
    runs_root: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
    device: str = "auto",
) -> BookPlan:
    """The executions of a book profile and what it leaves out, as the study declaration says.

    The ``book`` section of ``crapnet_core/study/study.yaml`` decides, per profile: the runs of the
    one-fold pages (datasets, folds, settings, methods), the folds of the ablation pages (their points:
    the profile's declared ablation tables), and whether the results page cross-validates the profile's
    declared tables itself (``train``: smoke, paper) or shows those committed under ``results/``
    (``committed``: lite). What a profile leaves out is the declaration's list, with its reasons,
    plus what this build lacks (a dataset not found, a committed table not run yet).

    - ``smoke``: the phantom (always), tiny runs: every method of the registry once, setting 1 and 2.
    - ``lite``: the real data when ``data_root`` (or ``$CRAPNET_DATA_ROOT``) holds it, else the
      phantom; fold 0 of CHAOS setting 1 for the one-fold and ablation pages (about 3 minutes a run on
      2 CPU cores); the results page shows the committed 5-fold lite tables.
    - ``paper``: every declared paper table (every method of Tables 1-2 and the later ones, both
      datasets and settings, the ablation points), 5 folds (GPU: about 4 hours per run in the paper).
    """
    from ..study.declaration import load_declaration

    if profile not in PROFILES:
        raise ValueError(f"--profile: {profile!r} is not one of {', '.join(PROFILES)}")
    if data_root is None:
        data_root = os.environ.get("CRAPNET_DATA_ROOT") or None
    if data_root is not None:
        data_root = str(Path(data_root).expanduser().resolve())
        if not Path(data_root).is_dir():
            raise FileNotFoundError(f"--data-root: {data_root} is not a folder")
    runs_root = str(Path(runs_root).resolve()) if runs_root else str(default_runs_root())
    results_dir = str(Path(results_dir).resolve()) if results_dir else str(default_results_dir())
    decl = load_declaration()
    scope = decl.book[profile]

    real = available_datasets(data_root)
    notes: list[str] = []
    left_out: list[str] = []
    if profile == "smoke":
        datasets = ["phantom"]
        if real:
            notes.append("The smoke profile always uses the synthetic phantom, even when real data is present.")
    elif profile == "lite":
        datasets = real or ["phantom"]
        if not real:
            notes.append(
                "No real data found (set CRAPNET_DATA_ROOT or pass --data-root to a folder holding "
                "CHAOST2/ and SABS/): the lite profile runs on the synthetic phantom."
            )
    else:
        if not real:
            raise FileNotFoundError(
                "--profile paper needs the real data: pass --data-root DIR or set CRAPNET_DATA_ROOT to the "
                f"folder holding CHAOST2/ and SABS/ (got {data_root!r})"
            )
        datasets = real
    for name in DATASET_FOLDERS:
        if profile != "smoke" and real and name not in real:
            left_out.append(f"{DATASET_TITLES[name]}: not found under {data_root}/{DATASET_FOLDERS[name]}.")

    one = scope.one_fold
    train_sets = list(datasets) if one["datasets"] == "all" else datasets[:1]
    jobs: list[Job] = []
    for ds in datasets:
        jobs.append(Job("01_data_exploration", dict(profile=profile, dataset=ds), 0, ds,
                        DATASET_TITLES.get(ds, ds)))
        jobs.append(Job("02_superpixels", dict(profile=profile, dataset=ds), 0, ds, DATASET_TITLES.get(ds, ds)))

    main_ds = train_sets[0]
    first_fold = one["folds"][0]
    for ds in train_sets:
        for setting in one["settings"]:
            groups = [None] if setting == 1 else ["kidneys", "liver_spleen"]
            for fold in one["folds"]:
                for method in one["methods"]:
                    for group in groups:
                        jobs.append(_train_job(profile, ds, setting, fold, method, group=group))
    # ablation points (setting 1, the main dataset, crapnet); a point whose config equals a run already
    # planned (e.g. the profile's own block count) is that run.
    points = ablation_points(decl, profile)
    for fold in scope.ablation_folds:
        jobs.append(_train_job(profile, main_ds, 1, fold, "crapnet"))  # the reference point
        for blocks in points["blocks"]:
            jobs.append(_train_job(profile, main_ds, 1, fold, "crapnet", blocks=blocks))
        for branches in points["branches"]:
            jobs.append(_train_job(profile, main_ds, 1, fold, "crapnet", branches=branches))
    unique: list[Job] = []
    seen: set[str] = set()
    for job in jobs:
        if job.notebook == "03_train_fold":
            key = _config_hash(job)
            if key in seen:
                continue
            seen.add(key)
        unique.append(job)
    jobs = unique

    folds = list(scope.ablation_folds)
    for axis, what in (("blocks", "number of attention blocks"), ("branches", "two branches against one")):
        jobs.append(Job("04_ablation", dict(profile=profile, dataset=main_ds, folds=folds, axis=axis,
                                            values=list(points[axis])), 2, f"{main_ds}-{axis}",
                        f"{what}, {DATASET_TITLES.get(main_ds, main_ds)}"))
    for ds in train_sets:
        jobs.append(Job("06_qualitative", dict(profile=profile, dataset=ds, fold=first_fold,
                                               methods=list(one["methods"])), 2, ds,
                        DATASET_TITLES.get(ds, ds)))
    for ds in train_sets:  # diagnostics of the CRAPNet run of the first trained fold (stage 1 trains it)
        jobs.append(Job("08_inside_attention", dict(profile=profile, dataset=ds, setting=1,
                                                    fold=first_fold, method="crapnet"), 2, ds,
                        DATASET_TITLES.get(ds, ds)))
    # the results page: the profile's declared tables of page `results`, cross-validated by this build
    # (train) or read from results/ (committed), with this build's own one-fold runs beside the latter
    tables = decl.results_page_tables(profile, datasets)
    for t in decl.results_page_tables(profile):
        if t["dataset"] not in datasets:
            left_out.append(f"Table {t['name']}: its dataset is not part of this build.")
    committed, missing = [], []
    if scope.results == "committed":
        for t in decl.select(profiles=[profile]):
            if t.pending or not t.summary:
                continue
            (committed if (Path(results_dir) / t.name / "summary.json").is_file() else missing).append(t.name)
        for name in missing:
            left_out.append(f"Table {name}: declared at {profile} but not run yet (no results/{name}/summary.json; "
                            f"`crapnet study run --tables {name}` makes it).")
    run_datasets = [main_ds] if scope.results == "committed" else []
    jobs.append(Job("07_results", dict(profile=profile, datasets=list(datasets), tables=tables,
                                       committed=committed, run_datasets=run_datasets, run_fold=first_fold,
                                       run_methods=list(one["methods"])),
                    2, profile, f"profile {profile}"))
    # "How much does the support matter?": reads the support-choice and k-shot files of the committed lite runs
    jobs.append(Job("10_support", dict(profile=profile, dataset=main_ds), 2, profile, "lite fold runs"))
    # "Segment your own scan", demonstrated on the fold's support and first test scan with its crapnet run
    jobs.append(Job("09_segment_your_own_scan", dict(profile=profile, dataset=main_ds, fold=first_fold),
                    2, main_ds, DATASET_TITLES.get(main_ds, main_ds)))

    # ---- what is left out (listed on the "This build" page and by the notebooks): the declaration's list
    for d in datasets:
        if d not in train_sets:
            left_out.append(
                f"Training runs, ablations and qualitative figures on {DATASET_TITLES.get(d, d)} "
                "(explored on the data pages; its cross-validated results, if committed, are on the results page)."
            )
    left_out[:0] = [item.describe() for item in scope.left_out]

    plan = BookPlan(profile, list(datasets), data_root, runs_root, results_dir, device, jobs, left_out, notes)
    _check_plan(plan)
    return plan


def _check_plan(plan: BookPlan) -> None:
    names = [j.name for j in plan.jobs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BookError(f"plan for profile {plan.profile!r} names two executions the same: {', '.join(dupes)}")


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
    common = dict(data_root=plan.data_root, runs_root=plan.runs_root, results_dir=plan.results_dir,
                  device=plan.device, interactive=False)
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
        return (f"code cell {self.index} of the executed copy{count} `{first.strip()[:100]}`: "
                f"{self.ename}: {self.evalue}")


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
                return FailedCell(index, cell.get("execution_count"), "".join(cell.get("source", "")),
                                  out.get("ename", "Error"), str(out.get("evalue", ""))[:500])
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

    ``spec`` (from :func:`crapnet_core.book.workflow.study`): ``template``, ``name``, ``params`` (the
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
    info = dict(key=spec.get("key"), notebook=spec.get("notebook"), tag=spec.get("tag"), title=spec.get("title"),
                params=spec["params"], started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                host=platform.node())
    started = time.time()
    error: BaseException | None = None
    try:
        papermill.execute_notebook(
            spec["template"], str(out_nb), parameters=spec["params"], cwd=spec.get("cwd"), kernel_name="python3",
            progress_bar=False, log_output=True, request_save_on_cell_execute=True,
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
    raise BookError(f"{spec.get('shown', spec['name'])}\n  failed in {why}\n  partial notebook kept: {out_nb}\n"
                    f"  log: {logs / (spec['name'] + '.log')}")


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
        out.append(JobResult(job, path, status, float(meta.get("wall_s") or 0.0), meta.get("error", ""),
                             Path(out_dir) / "logs" / f"{job.name}.log"))
    return out


# ---------------------------------------------------------------------------- assemble + build
def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    except yaml.YAMLError as err:
        raise BookError(f"{path}: not valid YAML ({err})") from None


def expand_toc(toc: dict, copies: dict[str, list[str]], extra_after: dict[str, list[str]] | None = None) -> tuple[dict, list[str]]:
    """The committed toc with each ``notebooks/<stem>`` entry replaced by its executed copies.

    ``copies`` maps a notebook stem to the build-source paths (no suffix) of its executed
    copies: one entry per copy, in order, in the place of the original; the original's own
    ``sections`` stay with the first copy. A notebook without copies is dropped (returned in
    the second value). ``extra_after`` inserts further entries after a given file.
    """
    toc = copy.deepcopy(toc)
    dropped: list[str] = []
    extra_after = extra_after or {}

    def expand(entries: list) -> list:
        out = []
        for entry in entries:
            entry = dict(entry)
            for key in ("sections", "chapters", "parts"):
                if key in entry:
                    entry[key] = expand(entry[key])
                    if key == "sections" and not entry[key]:
                        del entry[key]
            target = entry.get("file")
            stem = Path(target).name if target and str(target).startswith("notebooks/") else None
            stem = stem[:-6] if stem and stem.endswith(".ipynb") else stem
            if stem is not None:
                paths = copies.get(stem, [])
                if not paths:
                    dropped.append(stem)
                    out.extend(entry.get("sections", []))
                    continue
                first = dict(entry, file=paths[0])
                out.append(first)
                out.extend({"file": p} for p in paths[1:])
            else:
                out.append(entry)
            if target in extra_after:
                out.extend({"file": p} for p in extra_after[target])
        return out

    for key in ("parts", "chapters", "sections"):
        if key in toc:
            toc[key] = expand(toc[key])
    return toc, dropped


def prune_missing(toc: dict, src: Path) -> tuple[dict, list[str]]:
    """Drop toc entries (not the root) whose page is missing under ``src``; their sections move up."""
    toc = copy.deepcopy(toc)
    missing: list[str] = []

    def exists(name: str) -> bool:
        base = src / name
        return any(base.with_name(base.name + ext).is_file() or (base.suffix and base.is_file())
                   for ext in (".md", ".ipynb", ""))

    def prune(entries: list) -> list:
        out = []
        for entry in entries:
            entry = dict(entry)
            for key in ("sections", "chapters", "parts"):
                if key in entry:
                    entry[key] = prune(entry[key])
            if "file" in entry and not exists(entry["file"]):
                missing.append(entry["file"])
                out.extend(entry.get("sections", []))
                continue
            out.append(entry)
        return out

    for key in ("parts", "chapters", "sections"):
        if key in toc:
            toc[key] = prune(toc[key])
    return toc, missing


def toc_files(toc: dict) -> list[str]:
    """Every ``file`` of a jupyter-book toc (root first), in reading order."""
    files = [toc["root"]] if "root" in toc else []

    def walk(entries: list) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    for key in ("parts", "chapters", "sections"):
        walk(toc.get(key, []))
    return files


def _retitle(nb: dict, title: str) -> dict:
    """Append `` — <title>`` to the notebook's first Markdown heading (the page title)."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        src = "".join(cell.get("source", ""))
        lines = src.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# "):
                lines[i] = f"{line.rstrip()} — {title}"
                cell["source"] = "\n".join(lines)
                return nb
        break
    return nb


def _collapse_default_parameters(nb: dict) -> dict:
    """Collapse (``hide-input``) the template's parameters cell when papermill injected the values used."""
    cells = nb.get("cells", [])
    if any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in cells):
        for cell in cells:
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if "parameters" in tags and "hide-input" not in tags:
                tags.append("hide-input")
    return nb


#: Parts of MathJax 2.7 needed for TeX input rendered as CommonHTML.
_MATHJAX_PARTS = ("MathJax.js", "config/TeX-AMS_CHTML.js", "extensions", "jax/element", "jax/input/TeX",
                  "jax/output/CommonHTML", "fonts/HTML-CSS/TeX/woff", "localization/en")


def _local_mathjax() -> Path | None:
    """Debian/Ubuntu ``libjs-mathjax`` (MathJax 2.7), if installed: math renders offline."""
    path = Path("/usr/share/javascript/mathjax/MathJax.js")
    return path if path.is_file() else None


def environment_md(env: dict[str, Any] | None, rerun: dict[str, Any] | None = None) -> list[str]:
    """The "Environment" section of the This build page: the packages, CPU kernels and threads of
    this build (:func:`crapnet_core.engine.environment.environment`), and the committed rerun
    check's spread when ``rerun`` (``results/rerun_check/rerun_check.json``) is given."""
    from ..engine.environment import NUMERIC_PACKAGES

    lines = ["## Environment", ""]
    if not env:
        return lines + ["Not recorded.", ""]
    cpu, threads, build = env.get("cpu", {}), env.get("threads", {}), env.get("torch_build", {})
    packages = env.get("packages", {})
    lines += [
        "What computed this build's numbers beside the code and the configs (every training run also "
        "records its own in `RUN/environment.json`): the versions of the numeric packages, the CPU's "
        "instruction sets (oneDNN, MKL and torch choose their kernels from them), the threads and the device.",
        "",
        "| | |", "|---|---|",
        f"| Python | {env.get('python')} |",
        *[f"| {name} | {packages.get(name) or 'not installed'} |" for name in NUMERIC_PACKAGES],
        f"| CPU | {cpu.get('model')} ({cpu.get('vendor')}, family/model/stepping {cpu.get('family_model_stepping')}) |",
        f"| instruction sets | {', '.join(cpu.get('flags') or []) or 'not readable'} |",
        f"| torch CPU kernels | {cpu.get('torch_capability')}; oneDNN {build.get('onednn')}, MKL {build.get('mkl')} |",
        f"| threads | torch {threads.get('torch_intra_op')} intra-op, {threads.get('torch_inter_op')} inter-op; "
        f"{', '.join(f'{k}={v}' for k, v in (threads.get('env') or {}).items()) or 'no thread variables set'} |",
        f"| deterministic algorithms | {env.get('deterministic')} (training always: `train.deterministic`) |",
        f"| device | {(env.get('device') or {}).get('name') or (env.get('device') or {}).get('type')} |",
        "",
    ]
    if rerun and rerun.get("spread"):
        sp = rerun["spread"]
        lines += [
            f"**Rerun check** (`results/rerun_check/`, {rerun.get('machine')}): {sp['n']} committed fold(s) "
            f"trained again with their exact configs; the fold-mean Dice moved by {100 * sp['mean_abs_difference']:.2f} "
            f"points on average (largest {100 * sp['max_abs_difference']:.2f}); {sp['identical']} of {sp['n']} "
            "identical. The same command on the same machine gives the same weights bit for bit; on another CPU "
            "expect differences of this size.",
            "",
        ]
    return lines


def _rerun_check(results_dir: str | None) -> dict[str, Any] | None:
    """The committed rerun check (``results/rerun_check/rerun_check.json``), None when absent."""
    path = Path(results_dir or "") / "rerun_check" / "rerun_check.json"
    if not results_dir or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        LOG.warning("book: %s is not valid JSON; the rerun check is left off the This build page", path)
        return None


def build_info_page(plan: BookPlan, results: Sequence[JobResult], pages: dict[str, str], when: str,
                    machine: str, env: dict[str, Any] | None = None, rerun: dict[str, Any] | None = None) -> str:
    """Markdown of the generated "This build" page: profile, data, machine, environment
    (:func:`environment_md`), executions, left out."""
    lines = [
        "# This build",
        "",
        "This page is generated by `crapnet book`; it says what produced the numbers in this copy of the book.",
        "",
        f"- **Profile:** `{plan.profile}` (command: `crapnet book --profile {plan.profile}`)",
        f"- **Data:** " + ", ".join(DATASET_TITLES.get(d, d) for d in plan.datasets)
        + (f" from `{plan.data_root}`" if plan.data_root and "phantom" not in plan.datasets else ""),
        f"- **Machine:** {machine}",
        f"- **Built:** {when}",
        f"- **Training runs:** `{plan.runs_root}`",
        "",
    ]
    if "phantom" in plan.datasets:
        lines += [
            ":::{warning}",
            "This build ran on the **synthetic phantom**, not on patient data: its numbers only show that the "
            "pipeline works end to end and say nothing about how the methods segment real organs.",
            ":::",
            "",
        ]
    for note in plan.notes:
        lines += [f"{note}", ""]
    lines += environment_md(env, rerun)
    lines += ["## Left out by this profile", ""]
    lines += [f"- {item}" for item in plan.left_out] or ["- nothing"]
    lines += ["", "## Notebook executions", "",
              "Each notebook page of this book is one papermill execution with these parameters (wall time of the "
              "execution, including the training it waited for).", "",
              "| page | parameters | status | wall time (s) |", "|---|---|---|---|"]
    for r in results:
        shown = {k: v for k, v in r.job.params.items() if k != "profile" and v is not None}
        page = pages.get(r.job.name)
        link = f"[{r.job.notebook}: {r.job.title}]({page}.ipynb)" if page else r.job.name
        wall = f"{r.wall_s:.0f}" if r.status in ("ok", "cached") and r.wall_s else ""
        status = {"ok": "executed", "cached": "reused (executed by an earlier build)"}.get(r.status, r.status)
        lines.append(f"| {link} | `{json.dumps(shown, sort_keys=True)}` | {status} | {wall} |")
    lines.append("")
    return "\n".join(lines)


#: Generated page inserted after ``book/reproduce`` in the build's toc.
BUILD_PAGE = "book/this_build"
#: Generated findings (included by ``book/intro.md``) and their figure, under the build source's book/.
FINDINGS_PAGE = "_findings.md"
FINDINGS_FIGURE = "_findings.png"


def path_replacements(plan: BookPlan, root: Path, out_dir: Path) -> list[tuple[str, str]]:
    """(absolute path, what the book shows instead) for every folder of the building machine.

    The data root becomes ``$CRAPNET_DATA_ROOT``, the runs/results/output folders and the
    repository become repository-relative names, the cache ``$CRAPNET_CACHE``, the Python
    installation ``<python>``, the home folder ``~`` and the temporary folder ``<tmp>``.
    Longest first, so that the most specific path wins.
    """
    import tempfile

    from ..paths import cache_dir

    def rel(path: str | None, fallback: str) -> str:
        try:
            return Path(path).resolve().relative_to(root.resolve()).as_posix() if path else fallback
        except ValueError:
            return fallback

    pairs = {
        plan.data_root: "$CRAPNET_DATA_ROOT",
        plan.runs_root: rel(plan.runs_root, "<runs>"),
        plan.results_dir: rel(plan.results_dir, "<results>"),
        str(out_dir): rel(str(out_dir), "<build>"),
        str(cache_dir()): "$CRAPNET_CACHE",
        str(root): ".",
        sys.prefix: "<python>",
        sys.base_prefix: "<python>",
        str(Path.home()): "~",
        tempfile.gettempdir(): "<tmp>",
    }
    out: list[tuple[str, str]] = []
    for path, shown in pairs.items():
        if not path or len(str(path)) < 2:
            continue
        for variant in {str(path), str(Path(path).resolve())}:
            out.append((variant.rstrip("/"), shown))
    return sorted(set(out), key=lambda p: -len(p[0]))


def relativise(obj: Any, replacements: Sequence[tuple[str, str]]) -> Any:
    """``obj`` (a string or a notebook's JSON) with every absolute path of ``replacements`` replaced.

    Walks dicts and lists; leaves ``image/*`` payloads (base64) alone. Used on the executed
    notebooks (sources, outputs, metadata: the HTML and the downloadable .ipynb) and on the
    generated pages, so that no folder of the building machine reaches the book.
    """
    if isinstance(obj, str):
        for path, shown in replacements:
            if path in obj:
                obj = obj.replace(path, shown)
        return obj
    if isinstance(obj, list):
        return [relativise(v, replacements) for v in obj]
    if isinstance(obj, dict):
        return {k: v if str(k).startswith("image/") else relativise(v, replacements) for k, v in obj.items()}
    return obj


def assemble_source(plan: BookPlan, results: Sequence[JobResult], out_dir: str | os.PathLike,
                    root: Path | None = None) -> Path:
    """Write ``OUT/source``: committed config, toc expanded to the executed copies, pages, notebooks."""
    import yaml

    root = root or repo_root()
    out_dir = Path(out_dir)
    src = out_dir / "source"
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    shutil.copytree(root / "book", src / "book")
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description()
    replacements = path_replacements(plan, root, out_dir)
    static = root / "book" / "_static"
    if static.is_dir():  # the book's stylesheet (jupyter-book adds every .css under _static to each page)
        shutil.copytree(static, src / "_static", dirs_exist_ok=True)

    # executed copies -> source/notebooks/<name>.ipynb, retitled
    copies: dict[str, list[str]] = {}
    pages: dict[str, str] = {}
    for r in results:
        if r.status not in ("ok", "cached"):
            continue
        nb = json.loads(r.path.read_text())
        if len([x for x in results if x.job.notebook == r.job.notebook]) > 1:
            _retitle(nb, r.job.title)
        _collapse_default_parameters(nb)
        nb = relativise(nb, replacements)
        dest = src / "notebooks" / f"{r.job.name}.ipynb"
        dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
        copies.setdefault(r.job.notebook, []).append(f"notebooks/{r.job.name}")
        pages[r.job.name] = f"../notebooks/{r.job.name}"

    toc = _load_yaml(root / "_toc.yml")
    toc, dropped = expand_toc(toc, copies, {"book/reproduce": [BUILD_PAGE]})
    if BUILD_PAGE not in toc_files(toc):
        toc.setdefault("chapters", toc.get("chapters", []))
        if "parts" in toc:
            toc["parts"][-1].setdefault("chapters", []).append({"file": BUILD_PAGE})
        else:
            toc["chapters"].append({"file": BUILD_PAGE})
    write_text(src / f"{BUILD_PAGE}.md", "# This build\n")  # written in full below
    toc, missing = prune_missing(toc, src)
    plan_for_page = copy.deepcopy(plan)
    for stem in dropped:
        plan_for_page.left_out.append(f"Notebook {stem}: not executed by this profile.")
    for page in missing:
        LOG.warning("book: page %s in _toc.yml is missing from the checkout; left out of the build", page)
        plan_for_page.left_out.append(f"Page {page}: listed in _toc.yml but missing from this checkout.")
    write_text(src / f"{BUILD_PAGE}.md",
               relativise(build_info_page(plan_for_page, results, pages, when, machine, environment(),
                                          _rerun_check(plan.results_dir)), replacements))
    # the opening page's findings: numbers from results/ at build time, linked to the results page
    from ..report.findings import findings_figure, findings_md

    results_pages = [p for name, p in pages.items() if name.startswith("07_results__")]
    findings_figure(plan.results_dir, src / "book" / FINDINGS_FIGURE)
    write_text(src / "book" / FINDINGS_PAGE, findings_md(
        plan.results_dir, f"{results_pages[0]}.ipynb" if results_pages else None, FINDINGS_FIGURE,
        folder_label=relativise(plan.results_dir, replacements)))
    write_text(src / "_toc.yml", yaml.safe_dump(toc, sort_keys=False))

    config = _load_yaml(root / "_config.yml") or {}
    config.setdefault("execute", {})["execute_notebooks"] = "off"  # papermill ran them
    config["only_build_toc_files"] = True
    html = config.setdefault("html", {})
    footer = f"Profile <code>{plan.profile}</code> · {', '.join(DATASET_TITLES.get(d, d) for d in plan.datasets)} · built {when}"
    html["extra_footer"] = (html.get("extra_footer") or "") + footer
    sphinx_cfg = config.setdefault("sphinx", {}).setdefault("config", {})
    mj = _local_mathjax()
    if mj is not None:
        # MathJax 2.7 from the system package, copied into the book: math renders offline.
        # Only what the TeX input + CommonHTML output needs (~1.5 MB of the package's 60 MB).
        # Not under _static: jupyter-book would add every .js file there to every page.
        dest = src / "_extra" / "mathjax"
        for part in _MATHJAX_PARTS:
            origin = mj.parent / part
            if origin.is_dir():
                shutil.copytree(origin, dest / part, dirs_exist_ok=True)
            elif origin.is_file():
                (dest / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest / part)
        sphinx_cfg["html_extra_path"] = ["_extra"]  # copied to html/mathjax as they are
        sphinx_cfg["mathjax_path"] = "../mathjax/MathJax.js?config=TeX-AMS_CHTML"  # relative to _static
        # Debian's combined config preloads the TeX input and CommonHTML output but does not
        # switch them on: say so explicitly (MathJax 2 configuration, written before MathJax.js).
        sphinx_cfg["mathjax2_config"] = {
            "jax": ["input/TeX", "output/CommonHTML"],
            "extensions": ["tex2jax.js", "MathMenu.js", "MathZoom.js"],
            "TeX": {"extensions": ["AMSmath.js", "AMSsymbols.js", "noErrors.js", "noUndefined.js"]},
            "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                        "processEscapes": True},
            "messageStyle": "none",
        }
        sphinx_cfg["myst_update_mathjax"] = False  # its MathJax-3 configuration would confuse MathJax 2
    else:
        LOG.warning("book: no local MathJax (Debian/Ubuntu package libjs-mathjax): pages with equations "
                    "load MathJax from its CDN when viewed, and show TeX source offline")
    write_text(src / "_config.yml", yaml.safe_dump(config, sort_keys=False))
    return src


def build_html(source: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, list[str]]:
    """Run the jupyter-book (Sphinx) HTML build of ``source`` into ``OUT/html``.

    Runs in a subprocess (Sphinx keeps global state), logs to ``OUT/logs/sphinx.log`` and
    returns (index.html, warning lines). A failed build raises :class:`BookError` with the
    log's tail.
    """
    source, out_dir = Path(source).resolve(), Path(out_dir).resolve()
    html = out_dir / "html"
    doctrees = out_dir / ".doctrees"
    log_path = out_dir / "logs" / "sphinx.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (html, doctrees):  # pages of an earlier build (another profile) must not linger
        if stale.exists():
            shutil.rmtree(stale)
    cmd = [sys.executable, "-m", "crapnet_core.book.build", "_sphinx", str(source), str(html), str(doctrees)]
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    text = log_path.read_text(errors="replace")
    warnings = [ln for ln in text.splitlines() if "WARNING" in ln or "ERROR" in ln]
    index = html / "index.html"
    if proc.returncode != 0 or not index.is_file():
        tail = "\n    ".join(text.strip().splitlines()[-20:])
        raise BookError(f"jupyter-book build of {source} failed (status {proc.returncode}); log {log_path}:\n    {tail}")
    return index, warnings


def _sphinx_main(source: str, html: str, doctrees: str) -> int:
    """Entry of the build subprocess: jupyter-book's Sphinx build with its config handling."""
    from jupyter_book.sphinx import build_sphinx

    # the same call as `jupyter-book build SOURCE` makes, with our own output folders
    overrides = {"external_toc_path": (Path(source) / "_toc.yml").as_posix(), "latex_individualpages": False}
    result = build_sphinx(
        source, html, doctreedir=doctrees, path_config=str(Path(source) / "_config.yml"),
        use_external_toc=True, noconfig=True, confoverrides=overrides, freshenv=True, builder="html",
        keep_going=True,
    )
    if isinstance(result, Exception):
        raise result
    return int(result or 0)


# ---------------------------------------------------------------------------- plan files
def save_plan(plan: BookPlan, path: str | os.PathLike) -> Path:
    """Write the plan as JSON (the workflow's input: ``--config plan=PATH``)."""
    return write_json(Path(path), plan.to_dict())


def load_or_plan(config: dict[str, Any]) -> BookPlan:
    """The plan the Snakefile runs: ``config["plan"]`` (a JSON file of :func:`save_plan`), or else
    :func:`plan_book` of the config's ``profile``, ``data_root``, ``runs_root``, ``results_dir``, ``device``."""
    if config.get("plan"):
        path = Path(config["plan"])
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BookError(f"--config plan={path}: not a readable plan file ({err})") from None
        data["jobs"] = [Job(**{k: v for k, v in j.items() if k != "name"}) for j in data["jobs"]]
        return BookPlan(**data)
    return plan_book(config.get("profile", DEFAULT_PROFILE), config.get("data_root"), config.get("runs_root"),
                     config.get("results_dir"), config.get("device", "auto"))


if __name__ == "__main__":  # build subprocess: python -m crapnet_core.book.build _sphinx SRC HTML DOCTREES
    if len(sys.argv) == 5 and sys.argv[1] == "_sphinx":
        sys.exit(_sphinx_main(*sys.argv[2:]))
    print("usage: crapnet book --profile smoke|lite|paper (this module's own entry is internal)", file=sys.stderr)
    sys.exit(2)

"""The book's plan: which notebook runs with which parameters, and what the profile leaves out.

:func:`plan_book` makes a :class:`BookPlan` for a profile (``smoke``, ``lite``, ``paper``): one
:class:`Job` per executed copy of a notebook (per dataset / fold / setting / method / ablation
point), the declared tables the results page cross-validates (:mod:`crapnet_core.study.declaration`)
and what the profile leaves out of the paper's folds, settings and ablation points (listed in the
book). :func:`save_plan` / :func:`load_or_plan` are the plan file the workflow runs
(``workflow/Snakefile``). The execution of a job is :mod:`crapnet_core.book.execute`, the pages
:mod:`crapnet_core.book.build`, which describes the whole build.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..engine.runs import run_config  # noqa: F401 (the plan's configs; re-exported)
from ..facts import DATASET_FOLDERS, DATASET_TITLES, FOLDS, PROFILES, SETTINGS, TABLE3_BLOCKS, TABLE4_BRANCHES
from ..io import write_json
from ..paths import available_datasets, default_results_dir, default_runs_root

#: Book profiles (the training profile of the runs has the same name): facts.PROFILES.
DEFAULT_PROFILE = "lite"

#: The notebooks of the book, in order: file stem -> page title.
NOTEBOOKS = {
    "01_data_exploration": "Data exploration",
    "02_superpixels": "Superpixel pseudo-labels",
    "03_train_fold": "Train and evaluate one fold",
    "04_ablation": "Ablations (one page per ablated axis)",
    "05_qualitative": "Qualitative results",
    "06_results": "Results against the paper",
    "07_inside_attention": "Inside the attention",
    "08_segment_your_own_scan": "Segment your own scan",
    "09_support": "How much does the support matter?",
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


def _train_tag(
    dataset: str,
    setting: int,
    fold: int,
    method: str,
    blocks: int | None,
    branches: int | None,
    group: str | None = None,
) -> str:
    tag = f"{dataset}-s{setting}"
    if group:
        tag += f"-{group}"
    tag += f"-f{fold}-{method}"
    if blocks is not None:
        tag += f"-b{blocks}"
    if branches is not None:
        tag += f"-br{branches}"
    return tag


def _train_title(
    dataset: str,
    setting: int,
    fold: int,
    method: str,
    blocks: int | None,
    branches: int | None,
    group: str | None = None,
) -> str:
    title = f"{DATASET_TITLES.get(dataset, dataset)}, setting {setting}"
    if group:
        title += f" ({group.replace('_', ' and ')})"
    title += f", fold {fold}, {method}"
    if blocks is not None:
        title += f", {blocks} block{'s' if blocks != 1 else ''}"
    if branches is not None:
        title += f", {branches} branch{'es' if branches != 1 else ''}"
    return title


def _train_job(
    profile: str,
    dataset: str,
    setting: int,
    fold: int,
    method: str,
    blocks: int | None = None,
    branches: int | None = None,
    group: str | None = None,
    stage: int = 1,
) -> Job:
    params = dict(
        profile=profile,
        dataset=dataset,
        setting=setting,
        fold=fold,
        method=method,
        blocks=blocks,
        branches=branches,
        test_group=group,
    )
    return Job(
        "03_train_fold",
        params,
        stage,
        _train_tag(dataset, setting, fold, method, blocks, branches, group),
        _train_title(dataset, setting, fold, method, blocks, branches, group),
    )


def _config_hash(job: Job) -> str:
    p = job.params
    return run_config(
        p["profile"], p["dataset"], p["setting"], p["fold"], p["method"], p["blocks"], p["branches"], p["test_group"]
    ).config_hash()


def ablation_reference(decl, table):
    """The table an ablation point is measured against: the declared table of the same dataset, setting,
    profile and method with no overrides, off the ablation page (the method as the profile trains it; at
    ``lite`` the reference of the ablations family of :data:`crapnet_core.engine.decision.FAMILIES`), or None."""
    for r in decl.tables.values():
        if (
            r.page != "ablations"
            and not r.overrides
            and not r.pending
            and (r.dataset, r.setting, r.profile, r.method)
            == (table.dataset, table.setting, table.profile, table.method)
        ):
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
    branches = sorted(
        {c.model.branches for c in configs if ref is None or c.model.n_blocks == ref.n_blocks}, reverse=True
    )
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
        jobs.append(Job("01_data_exploration", dict(profile=profile, dataset=ds), 0, ds, DATASET_TITLES.get(ds, ds)))
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
        jobs.append(
            Job(
                "04_ablation",
                dict(profile=profile, dataset=main_ds, folds=folds, axis=axis, values=list(points[axis])),
                2,
                f"{main_ds}-{axis}",
                f"{what}, {DATASET_TITLES.get(main_ds, main_ds)}",
            )
        )
    for ds in train_sets:
        jobs.append(
            Job(
                "05_qualitative",
                dict(profile=profile, dataset=ds, fold=first_fold, methods=list(one["methods"])),
                2,
                ds,
                DATASET_TITLES.get(ds, ds),
            )
        )
    for ds in train_sets:  # diagnostics of the CRAPNet run of the first trained fold (stage 1 trains it)
        jobs.append(
            Job(
                "07_inside_attention",
                dict(profile=profile, dataset=ds, setting=1, fold=first_fold, method="crapnet"),
                2,
                ds,
                DATASET_TITLES.get(ds, ds),
            )
        )
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
            left_out.append(
                f"Table {name}: declared at {profile} but not run yet (no results/{name}/summary.json; "
                f"`crapnet study run --tables {name}` makes it)."
            )
    run_datasets = [main_ds] if scope.results == "committed" else []
    jobs.append(
        Job(
            "06_results",
            dict(
                profile=profile,
                datasets=list(datasets),
                tables=tables,
                committed=committed,
                run_datasets=run_datasets,
                run_fold=first_fold,
                run_methods=list(one["methods"]),
            ),
            2,
            profile,
            f"profile {profile}",
        )
    )
    # "How much does the support matter?": reads the support-choice and k-shot files of the committed lite runs
    jobs.append(Job("09_support", dict(profile=profile, dataset=main_ds), 2, profile, "lite fold runs"))
    # "Segment your own scan", demonstrated on the fold's support and first test scan with its crapnet run
    jobs.append(
        Job(
            "08_segment_your_own_scan",
            dict(profile=profile, dataset=main_ds, fold=first_fold),
            2,
            main_ds,
            DATASET_TITLES.get(main_ds, main_ds),
        )
    )

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
    return plan_book(
        config.get("profile", DEFAULT_PROFILE),
        config.get("data_root"),
        config.get("runs_root"),
        config.get("results_dir"),
        config.get("device", "auto"),
    )

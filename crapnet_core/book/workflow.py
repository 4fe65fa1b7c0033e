"""The study as a Snakemake workflow: what each step is and what it depends on.

``workflow/Snakefile`` declares the study's steps as Snakemake rules; this module gives it the facts
of a plan (:func:`study`, from :func:`crapnet_core.book.plan.plan_book`): the runs each notebook
execution reads, the scans whose superpixels the trainings need, and each step's content key
(:mod:`crapnet_core.book.content_keys`). The rules, one job each::

    superpixels  one scan of a trained dataset   -> OUT/superpixels/<dataset>/<scan>.json
    train        one training run (config hash)  -> RUNS/<run>/TRAINED
    evaluate     its 1-shot evaluation            -> RUNS/<run>/metrics.json
    notebook     one papermill execution          -> OUT/notebooks/<name>.ipynb
    html         assembly + jupyter-book build    -> OUT/html/index.html

Snakemake re-runs a job whose recorded key differs (rerun trigger ``params``) and, because it runs
downstream of anything it re-runs, everything that depends on it; a checkout or ``touch`` that
leaves the content unchanged re-runs nothing (the ``mtime`` trigger is off, see
``workflow/profiles/*/config.yaml``).

The rest of the workflow's machinery: the job bodies (``python -m crapnet_core.book.jobs STEP NAME
CONFIG_JSON KEY``, :mod:`crapnet_core.book.jobs`), the GPU claims (:mod:`crapnet_core.book.gpus`) and
``crapnet book``'s front door that drives Snakemake (:func:`crapnet_core.book.driver.build_book`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .content_keys import (
    BOOK_MODULES,
    EVAL_MODULES,
    SUPERPIXEL_MODULES,
    TRAIN_MODULES,
    content_key,
    library_closure,
    notebook_modules,
)


# ---------------------------------------------------------------------------- the study's steps
@dataclass(frozen=True)
class RunStep:
    """One training run of the study (trained, then evaluated): ``run_config`` arguments + run folder name."""

    name: str
    dataset: str
    args: dict


def runs_read(job) -> list[dict]:
    """The :func:`~crapnet_core.engine.runs.run_config` arguments of every run a notebook execution reads.

    The notebooks call ``ensure_run`` for these; the workflow trains and evaluates them first,
    so that the notebooks only read (one training per run, however many notebooks read it).
    """
    p = job.params
    base = dict(profile=p.get("profile"), data_root=None)
    if job.notebook == "03_train_fold":
        return [
            dict(
                base,
                dataset=p["dataset"],
                setting=p["setting"],
                fold=p["fold"],
                method=p["method"],
                blocks=p.get("blocks"),
                branches=p.get("branches"),
                test_group=p.get("test_group"),
            )
        ]
    if job.notebook == "04_ablation":  # axis: blocks or branches
        return [
            dict(base, dataset=p["dataset"], setting=1, fold=f, method="crapnet", **{p["axis"]: v})
            for f in p["folds"]
            for v in p["values"]
        ]
    if job.notebook in ("07_inside_attention", "08_segment_your_own_scan"):  # the fold's crapnet run
        return [
            dict(
                base,
                dataset=p["dataset"],
                setting=p.get("setting", 1),
                fold=p["fold"],
                method=p.get("method", "crapnet"),
            )
        ]
    if job.notebook == "05_qualitative":
        return [dict(base, dataset=p["dataset"], setting=1, fold=p["fold"], method=m) for m in p["methods"]]
    if job.notebook == "06_results":
        from ..engine.runs import fold_configs
        from ..facts import ORGANS

        out = []
        for t in p.get("tables", []):  # the declared tables the page cross-validates (one run per fold and group)
            overrides = [*t.get("overrides", []), *[f"train.seed={s}" for s in t.get("seeds", [0])[:1] if s]]
            for f in t["folds"]:
                for cfg in fold_configs(p["profile"], t["dataset"], t["setting"], t["method"], f, overrides):
                    # the run's organs (setting 1: all of them, or a method's own groups, e.g. supervised ALPNet's)
                    group = None if tuple(cfg.data.test_group) == ORGANS else ",".join(cfg.data.test_group)
                    out.append(
                        dict(
                            base,
                            dataset=t["dataset"],
                            setting=t["setting"],
                            fold=f,
                            method=t["method"],
                            test_group=group,
                            overrides=overrides,
                        )
                    )
        out += [
            dict(base, dataset=d, setting=1, fold=p["run_fold"], method=m)
            for d in p.get("run_datasets", [])
            for m in p.get("run_methods", [])
        ]
        return out
    return []


def run_step(args: dict) -> RunStep:
    from ..engine.runs import run_config

    cfg = run_config(**{k: v for k, v in args.items() if k != "data_root"})
    return RunStep(cfg.run_name(), args["dataset"], {k: v for k, v in args.items() if k != "data_root"})


def plan_configs(plan) -> list:
    """The ExperimentConfig of every distinct training run the book's notebooks read (one per run folder)."""
    from ..engine.runs import run_config

    out = {}
    for job in plan.jobs:
        for args in runs_read(job):
            cfg = run_config(**{k: v for k, v in args.items() if k != "data_root"})
            out.setdefault(cfg.run_name(), cfg)
    return list(out.values())


def plan_summary(plan, per_gpu: int = 1) -> list[str]:
    """What ``crapnet book --plan`` states before anything runs: the trainings of each method and the cost
    (:func:`crapnet_core.study.cost.estimate`), what the results page shows, what the profile leaves out."""
    from ..facts import METHOD_LABELS, METHODS
    from ..study.cost import estimate

    configs = plan_configs(plan)
    lines = [f"profile {plan.profile}: data {', '.join(plan.datasets)}; {len(plan.jobs)} notebook executions"]
    cost = estimate(plan.profile, configs)
    lines.append(f"cost: {cost.describe(per_gpu)}")
    by_method = {m: [c for c in configs if c.model.method == m] for m in METHODS}
    lines.append("trains:")
    for m, cfgs in by_method.items():
        if not cfgs:
            continue
        variants = sorted({c.model.variant_name() for c in cfgs} - {m})
        where = sorted({(c.dataset_name(), c.data.setting) for c in cfgs})
        lines.append(
            f"  - {METHOD_LABELS[m]}: {len(cfgs)} run(s), "
            f"{'; '.join(f'{d} setting {s}' for d, s in where)}, fold(s) "
            f"{', '.join(map(str, sorted({c.data.fold for c in cfgs})))}"
            + (f" (with {', '.join(variants)})" if variants else "")
        )
    for job in plan.jobs:
        if job.notebook == "04_ablation":
            lines.append(
                f"  - ablation points ({job.params['axis']}): {', '.join(map(str, job.params['values']))} "
                f"on {job.params['dataset']}, fold(s) {', '.join(map(str, job.params['folds']))}"
            )
    results = next((j for j in plan.jobs if j.notebook == "06_results"), None)
    if results is not None and results.params.get("committed"):
        shown = results.params["committed"]
        lines.append(f"shows from results/ (committed, not retrained): {len(shown)} table(s): {', '.join(shown)}")
    return lines


@dataclass
class Study:
    """Everything the Snakefile declares for one plan (computed once per parse)."""

    plan: Any
    root: Path
    runs: dict[str, RunStep]  # run name -> step
    reads: dict[str, list[str]]  # notebook execution name -> run names it reads
    scans: dict[str, list[str]]  # trained dataset -> scan ids whose superpixels are computed
    notebooks: dict[str, dict]  # execution name -> spec of the notebook job
    keys: dict[str, str]  # rule key per step name (train:<run>, notebook:<name>, ...)
    gpus_per_job: int


def study(plan, root: Path | None = None, gpus_per_job: int = 0) -> Study:
    """The workflow's jobs for ``plan``: superpixels, runs, notebook executions, their content keys."""
    from ..data.datasets import resolve_dataset, scan_ids
    from ..paths import repo_root
    from .execute import job_parameters, notebook_parameters, notebook_path, source_digest

    root = Path(root or repo_root())
    runs: dict[str, RunStep] = {}
    reads: dict[str, list[str]] = {}
    for job in plan.jobs:
        names = []
        for args in runs_read(job):
            step = run_step(args)
            runs.setdefault(step.name, step)
            names.append(step.name)
        reads[job.name] = list(dict.fromkeys(names))
    scans: dict[str, list[str]] = {}
    for ds in sorted({s.dataset for s in runs.values()}):
        spec = resolve_dataset(ds, data_root=plan.data_root)
        scans[ds] = [str(i) for i in scan_ids(spec)]

    keys: dict[str, str] = {}
    sp_files = library_closure(SUPERPIXEL_MODULES)
    for ds, ids in scans.items():
        for sid in ids:
            keys[f"superpixels:{ds}:{sid}"] = content_key(sp_files, dataset=ds, scan=sid, data_root=plan.data_root)
    # what decides a run's result: the training (and evaluation) code and everything it imports
    train_files = library_closure(TRAIN_MODULES)
    eval_files = library_closure(EVAL_MODULES)
    for name, step in runs.items():
        keys[f"train:{name}"] = content_key(train_files, args=step.args)
        keys[f"evaluate:{name}"] = content_key(eval_files, args=step.args)

    notebooks: dict[str, dict] = {}
    cache: dict[str, tuple[Path, dict, str, list[Path]]] = {}
    for job in plan.jobs:
        if job.notebook not in cache:
            template = notebook_path(job.notebook, root)
            cache[job.notebook] = (
                template,
                notebook_parameters(template),
                source_digest(template),
                library_closure(notebook_modules(template)),
            )
        template, declared, sha, lib = cache[job.notebook]
        params = job_parameters(job, plan, declared)
        notebooks[job.name] = dict(
            name=job.name,
            notebook=job.notebook,
            template=str(template),
            tag=job.tag,
            title=job.title,
            params=params,
            shown=job.describe(),
            cwd=str(root),
            gpu=int(gpus_per_job if "device" in declared else 0),
        )
        keys[f"notebook:{job.name}"] = content_key(lib, source=sha, params=params)
    book_files = [
        *library_closure(BOOK_MODULES),
        *sorted((root / "book").glob("*.md")),
        *[p for p in (root / "_toc.yml", root / "_config.yml") if p.is_file()],
    ]
    keys["html"] = content_key(book_files, plan=plan.to_dict())
    return Study(plan, root, runs, reads, scans, notebooks, keys, int(gpus_per_job))

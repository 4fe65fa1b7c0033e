"""The study as a Snakemake workflow: what each step is, what it depends on, and its job bodies.

``workflow/Snakefile`` declares the study's steps as Snakemake rules; this module gives it
the facts (from :func:`crapnet_core.book.build.plan_book`) and the bodies of the jobs, and is
``crapnet book``'s front door (:func:`build_book`: plan, then drive Snakemake with
:func:`run_snakemake`). The rules, one job each::

    superpixels  one scan of a trained dataset   -> OUT/superpixels/<dataset>/<scan>.json
    train        one training run (config hash)  -> RUNS/<run>/TRAINED
    evaluate     its 1-shot evaluation            -> RUNS/<run>/metrics.json
    notebook     one papermill execution          -> OUT/notebooks/<name>.ipynb
    html         assembly + jupyter-book build    -> OUT/html/index.html

Every rule has a ``key`` parameter: a SHA-256 over what its result depends on, i.e. its own
parameters, the notebook's cell sources (notebooks), the ``crapnet_core`` modules it imports
directly or indirectly (:func:`library_closure`) and, for the HTML build, the committed book
pages. Snakemake re-runs a job whose recorded key differs (rerun trigger ``params``) and,
because it runs downstream of anything it re-runs, everything that depends on it; a checkout
or ``touch`` that leaves the content unchanged re-runs nothing (the ``mtime`` trigger is off,
see ``workflow/profiles/*/config.yaml``).

Job bodies are run as ``python -m crapnet_core.book.workflow STEP NAME CONFIG_JSON KEY`` (one
process per job: on SLURM each one is a SLURM job; :func:`job_spec` makes what it needs). A failing job writes ``OUT/logs/failed/<name>.txt``
(what failed, with which parameters, where) that ``crapnet book`` prints.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import crapnet_core

from ..io import write_json, write_text

LOG = logging.getLogger(__name__)

PACKAGE = crapnet_core.__name__
PACKAGE_DIR = Path(crapnet_core.__file__).resolve().parent  # wherever this module sits inside it

#: Snakemake rerun triggers: content keys (params), input-set and rule-code changes; not mtime.
RERUN_TRIGGERS = ("params", "input", "code", "software-env")


# ---------------------------------------------------------------------------- library dependencies
def _imported_modules(tree: ast.AST, package_of: str = PACKAGE) -> set[str]:
    """``crapnet_core`` modules named by the imports anywhere in ``tree`` (also inside functions).

    Relative imports (``from .x import y``, ``from ..data import x``) are resolved against
    ``package_of``, the package of the importing module. ``from a import b`` names ``a`` and
    ``a.b`` (a module or not: :func:`module_file` tells).
    """
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package_of.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] == PACKAGE:
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def module_file(module: str) -> Path | None:
    """The source file of a ``crapnet_core`` module (None for a name that is not a module)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    path = PACKAGE_DIR.joinpath(*parts[1:])
    for cand in (path.with_suffix(".py"), path / "__init__.py"):
        if cand.is_file():
            return cand
    return None


#: What decides each kind of job's result: these modules and everything they import (content keys).
SUPERPIXEL_MODULES = (f"{PACKAGE}.data.superpixels",)
TRAIN_MODULES = (f"{PACKAGE}.engine.training",)
EVAL_MODULES = (f"{PACKAGE}.engine.evaluation",)
BOOK_MODULES = (f"{PACKAGE}.book.build",)


def _dynamic_imports(module: str) -> set[str]:
    """Modules that ``module`` imports by name at run time (``importlib``), which :mod:`ast` cannot see:
    the method registry's modules (:data:`crapnet_core.facts.METHODS_REGISTRY`) for its package."""
    methods = f"{PACKAGE}.models.methods"
    if module != methods:
        return set()
    from ..facts import METHODS_REGISTRY

    return {f"{methods}.{m.module}" for m in METHODS_REGISTRY.values() if m.module}


def library_closure(modules: Iterable[str]) -> list[Path]:
    """Source files of ``modules`` and of every ``crapnet_core`` module they import, transitively.

    Imports are read with :mod:`ast` (module-level and function-level imports alike), so the
    answer is conservative: a module imported anywhere counts; the registry's method modules,
    imported by name at run time, count for :mod:`crapnet_core.models.methods`. The ``__init__``
    of the package and of every sub-package a module sits in is included (Python runs it on every
    import of a module inside it). ValueError for a name in ``modules`` that is no module of the
    package (a key built from a stale name would silently stop tracking the library).
    """
    modules = list(modules)
    missing = [m for m in modules if module_file(m) is None]
    if missing:
        raise ValueError(f"library_closure: not a {PACKAGE} module: {', '.join(missing)}")
    seen: dict[str, Path] = {}
    todo = [PACKAGE, *modules]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or name in seen:
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.append(package)
        found = _imported_modules(ast.parse(path.read_text(), str(path)), package) | _dynamic_imports(name)
        todo.extend(found - set(seen))
    return sorted(set(seen.values()))


def notebook_modules(path: str | os.PathLike) -> set[str]:
    """``crapnet_core`` modules imported by the code cells of a notebook (IPython magics skipped;
    names imported from a module are not modules and are left out)."""
    nb = json.loads(Path(path).read_text())
    found: set[str] = set()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = "\n".join(ln for ln in "".join(cell.get("source", "")).splitlines()
                        if not ln.lstrip().startswith(("%", "!")))
        try:
            found |= _imported_modules(ast.parse(src))
        except SyntaxError:
            found |= {f"{PACKAGE}.{m}" for m in re.findall(rf"{PACKAGE}\.(\w+)", src)} | {PACKAGE}
    return {m for m in found if module_file(m) is not None}  # ``from a import b``: b may be a name, not a module


def content_key(files: Iterable[str | os.PathLike] = (), **values: Any) -> str:
    """SHA-256 (16 hex digits) of the contents of ``files`` and of JSON-able ``values``."""
    h = hashlib.sha256()
    for f in sorted({Path(p).resolve() for p in files}):
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    h.update(json.dumps(values, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


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
        return [dict(base, dataset=p["dataset"], setting=p["setting"], fold=p["fold"], method=p["method"],
                     blocks=p.get("blocks"), branches=p.get("branches"), test_group=p.get("test_group"))]
    if job.notebook == "04_ablation":  # axis: blocks or branches
        return [dict(base, dataset=p["dataset"], setting=1, fold=f, method="crapnet", **{p["axis"]: v})
                for f in p["folds"] for v in p["values"]]
    if job.notebook in ("08_inside_attention", "09_segment_your_own_scan"):  # the fold's crapnet run
        return [dict(base, dataset=p["dataset"], setting=p.get("setting", 1), fold=p["fold"],
                     method=p.get("method", "crapnet"))]
    if job.notebook == "06_qualitative":
        return [dict(base, dataset=p["dataset"], setting=1, fold=p["fold"], method=m) for m in p["methods"]]
    if job.notebook == "07_results":
        from ..engine.runs import fold_configs
        from ..facts import ORGANS

        out = []
        for t in p.get("tables", []):  # the declared tables the page cross-validates (one run per fold and group)
            overrides = [*t.get("overrides", []), *[f"train.seed={s}" for s in t.get("seeds", [0])[:1] if s]]
            for f in t["folds"]:
                for cfg in fold_configs(p["profile"], t["dataset"], t["setting"], t["method"], f, overrides):
                    # the run's organs (setting 1: all of them, or a method's own groups, e.g. supervised ALPNet's)
                    group = None if tuple(cfg.data.test_group) == ORGANS else ",".join(cfg.data.test_group)
                    out.append(dict(base, dataset=t["dataset"], setting=t["setting"], fold=f, method=t["method"],
                                    test_group=group, overrides=overrides))
        out += [dict(base, dataset=d, setting=1, fold=p["run_fold"], method=m)
                for d in p.get("run_datasets", []) for m in p.get("run_methods", [])]
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
        lines.append(f"  - {METHOD_LABELS[m]}: {len(cfgs)} run(s), "
                     f"{'; '.join(f'{d} setting {s}' for d, s in where)}, fold(s) "
                     f"{', '.join(map(str, sorted({c.data.fold for c in cfgs})))}"
                     + (f" (with {', '.join(variants)})" if variants else ""))
    for job in plan.jobs:
        if job.notebook == "04_ablation":
            lines.append(f"  - ablation points ({job.params['axis']}): {', '.join(map(str, job.params['values']))} "
                         f"on {job.params['dataset']}, fold(s) {', '.join(map(str, job.params['folds']))}")
    results = next((j for j in plan.jobs if j.notebook == "07_results"), None)
    if results is not None and results.params.get("committed"):
        shown = results.params["committed"]
        lines.append(f"shows from results/ (committed, not retrained): {len(shown)} table(s): {', '.join(shown)}")
    return lines


@dataclass
class Study:
    """Everything the Snakefile declares for one plan (computed once per parse)."""

    plan: Any
    root: Path
    runs: dict[str, RunStep]            # run name -> step
    reads: dict[str, list[str]]         # notebook execution name -> run names it reads
    scans: dict[str, list[str]]         # trained dataset -> scan ids whose superpixels are computed
    notebooks: dict[str, dict]          # execution name -> spec of the notebook job
    keys: dict[str, str]                # rule key per step name (train:<run>, notebook:<name>, ...)
    gpus_per_job: int


def study(plan, root: Path | None = None, gpus_per_job: int = 0) -> Study:
    """The workflow's jobs for ``plan``: superpixels, runs, notebook executions, their content keys."""
    from ..data.datasets import resolve_dataset, scan_ids
    from ..paths import repo_root
    from .build import job_parameters, notebook_parameters, notebook_path, source_digest

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
            cache[job.notebook] = (template, notebook_parameters(template), source_digest(template),
                                   library_closure(notebook_modules(template)))
        template, declared, sha, lib = cache[job.notebook]
        params = job_parameters(job, plan, declared)
        notebooks[job.name] = dict(
            name=job.name, notebook=job.notebook, template=str(template), tag=job.tag, title=job.title,
            params=params, shown=job.describe(), cwd=str(root),
            gpu=int(gpus_per_job if "device" in declared else 0),
        )
        keys[f"notebook:{job.name}"] = content_key(lib, source=sha, params=params)
    book_files = [*library_closure(BOOK_MODULES), *sorted((root / "book").glob("*.md")),
                  *[p for p in (root / "_toc.yml", root / "_config.yml") if p.is_file()]]
    keys["html"] = content_key(book_files, plan=plan.to_dict())
    return Study(plan, root, runs, reads, scans, notebooks, keys, int(gpus_per_job))


# ---------------------------------------------------------------------------- GPUs
def gpu_count() -> int:
    """CUDA devices visible to this process (0 without torch/CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch/CUDA: CPU only
        return 0


@contextlib.contextmanager
def claim_gpu(lock_dir: Path, n_devices: int, slots: int = 1) -> Iterator[str | None]:
    """Hold one free slot of ``n_devices`` devices (flock on ``lock_dir/gpu<k>.lock``, or
    ``gpu<k>.<j>.lock`` for ``slots`` > 1) and yield the device's id.

    Snakemake's ``gpu`` resource caps how many jobs run on GPUs at once (devices x ``slots``);
    this picks *which* device a job gets on one machine (a SLURM job is given its device by SLURM
    instead). ``slots``: trainings that share one device at once (several fit on a large GPU).
    Devices are the entries of ``CUDA_VISIBLE_DEVICES`` when set, else ``0..n_devices-1``; the
    slots of one device are taken before the next device's second slot (jobs spread over devices
    first). Yields None when ``n_devices`` is 0. Waits while every slot is held.
    """
    if n_devices <= 0:
        yield None
        return
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = visible or [str(i) for i in range(n_devices)]
    lock_dir.mkdir(parents=True, exist_ok=True)
    names = [(dev, f"gpu{dev}.lock" if slots <= 1 else f"gpu{dev}.{j}.lock") for j in range(max(1, slots))
             for dev in devices]
    while True:
        for dev, name in names:
            fh = open(lock_dir / name, "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            try:
                yield dev
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        time.sleep(1.0)


@contextlib.contextmanager
def _device_env(spec: dict) -> Iterator[None]:
    """Set ``CUDA_VISIBLE_DEVICES`` to one claimed device for a local GPU job (not under SLURM)."""
    if int(spec.get("gpu", 0)) <= 0 or os.environ.get("SLURM_JOB_ID"):
        yield
        return
    with claim_gpu(Path(spec["out"]) / ".gpu-locks", gpu_count(), int(spec.get("per_gpu", 1) or 1)) as dev:
        if dev is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = dev
        yield


# ---------------------------------------------------------------------------- job bodies
def _failed(spec: dict, what: str, why: str) -> None:
    """Record a failed job where ``crapnet book`` finds it: OUT/logs/failed/<name>.txt."""
    path = Path(spec["out"]) / "logs" / "failed" / f"{spec['name']}.txt"
    write_text(path, f"{what}\n{why}\n")


def job_superpixels(spec: dict) -> None:
    """Superpixels of one scan into crapnet's cache (the folder the trainings read)."""
    from ..data.datasets import resolve_dataset
    from ..data.superpixels import cache_folder, compute_superpixels

    ds = spec["dataset"]
    ds_spec = resolve_dataset(ds, data_root=spec.get("data_root"))
    folder = cache_folder(ds_spec)
    t0 = time.time()
    [path] = compute_superpixels(ds_spec, folder, [spec["scan"]], jobs=1, progress=False)
    write_json(spec["output"], dict(dataset=ds, scan=spec["scan"], path=str(path), seconds=round(time.time() - t0, 2)))


def job_train(spec: dict) -> None:
    """Train one run (resume an interrupted training of the same key; start afresh after a change)."""
    from ..engine.runs import run_config, run_dir_for, run_lock
    from ..engine.training import clear_run, is_trained, latest_checkpoint, train

    cfg = run_config(**spec["args"], data_root=spec.get("data_root"))
    cfg.train.device = spec.get("device") or cfg.train.device
    run_dir = run_dir_for(cfg, spec["runs_root"])
    key_file = run_dir / ".workflow-key"  # dot file: train() accepts it in a new run folder
    with _device_env(spec), run_lock(run_dir):
        if is_trained(run_dir):  # e.g. trained by crapnet cross-validate meanwhile
            (run_dir / "TRAINED").touch()
            return
        has_ckpt = latest_checkpoint(run_dir) is not None and (run_dir / "config.json").is_file()
        same = key_file.is_file() and key_file.read_text().strip() == spec["key"]
        resume = has_ckpt and (same or not key_file.is_file())
        if has_ckpt and not resume:
            LOG.info("%s: library changed since this run was trained: training afresh", run_dir)
            clear_run(run_dir)
        write_text(key_file, spec["key"] + "\n")
        LOG.info("%s: %s", run_dir, "resuming training" if resume else "training")
        train(cfg, run_dir, resume=resume, progress=False)


def job_evaluate(spec: dict) -> None:
    """1-shot evaluation of a trained run (writes RUN/metrics.json)."""
    from ..engine.evaluation import evaluate
    from ..engine.runs import run_config, run_dir_for, run_lock

    cfg = run_config(**spec["args"], data_root=spec.get("data_root"))
    run_dir = run_dir_for(cfg, spec["runs_root"])
    with _device_env(spec), run_lock(run_dir):
        evaluate(run_dir, device=spec.get("device") or cfg.train.device, progress=False)


def job_notebook(spec: dict) -> None:
    """One papermill execution (see :func:`crapnet_core.book.build.execute_notebook`)."""
    from .build import BookError, execute_notebook

    with _device_env(spec):
        try:
            execute_notebook(spec)
        except BookError as err:
            _failed(spec, spec["shown"], str(err))
            raise


def job_html(spec: dict) -> None:
    """Assemble the build source from the executed notebooks and build the HTML."""
    from .build import BookPlan, Job, assemble_source, build_html, executed_results

    plan_d = dict(spec["plan"])
    plan_d["jobs"] = [Job(**{k: v for k, v in j.items() if k != "name"}) for j in plan_d["jobs"]]
    plan = BookPlan(**plan_d)
    out = Path(spec["out"])
    results = executed_results(plan, out)
    source = assemble_source(plan, results, out, Path(spec["root"]))
    index, warnings = build_html(source, out)
    for w in warnings[:20]:
        print(f"sphinx: {w}")
    print(index)


JOBS = {"superpixels": job_superpixels, "train": job_train, "evaluate": job_evaluate,
        "notebook": job_notebook, "html": job_html}


def job_spec(step: str, name: str, config: dict[str, Any], key: str = "") -> dict[str, Any]:
    """What the job body ``step`` of job ``name`` needs, from the workflow's config.

    ``config``: the Snakefile's ``JOB_CONFIG`` (``plan`` file or profile settings, ``repo``,
    ``out``, ``gpus_per_job``). Made in the job itself rather than passed as a Snakemake
    parameter, so that only the content key (``key``) decides whether a job re-runs: a
    different ``--device`` or output folder does not re-train a run.
    """
    from .build import job_parameters, load_or_plan, notebook_parameters, notebook_path

    plan = load_or_plan(config)
    root = Path(config["repo"])
    gpu = int(config.get("gpus_per_job", 0))
    base = dict(out=config["out"], data_root=plan.data_root, runs_root=plan.runs_root, device=plan.device, key=key,
                per_gpu=int(config.get("per_gpu", 1)))
    if step == "superpixels":
        dataset, scan = name.split(":", 1)
        return dict(base, name=f"superpixels_{dataset}_{scan}", dataset=dataset, scan=scan,
                    output=str(Path(config["out"]) / "superpixels" / dataset / f"{scan}.json"))
    if step in ("train", "evaluate"):
        for job in plan.jobs:
            for args in runs_read(job):
                run = run_step(args)
                if run.name == name:
                    return dict(base, name=name, args=run.args, gpu=gpu)
        raise ValueError(f"{step}: no run {name!r} in the plan")
    if step == "notebook":
        job = next((j for j in plan.jobs if j.name == name), None)
        if job is None:
            raise ValueError(f"notebook: no execution {name!r} in the plan")
        template = notebook_path(job.notebook, root)
        declared = notebook_parameters(template)
        return dict(base, name=name, notebook=job.notebook, template=str(template), tag=job.tag, title=job.title,
                    params=job_parameters(job, plan, declared), shown=job.describe(), cwd=str(root),
                    gpu=gpu if "device" in declared else 0)
    if step == "html":
        return dict(base, name="html", plan=plan.to_dict(), root=str(root))
    raise ValueError(f"unknown step {step!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crapnet_core.book.workflow STEP NAME CONFIG_JSON KEY``: the body of one Snakemake job."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 4 or argv[0] not in JOBS:
        print(f"usage: python -m crapnet_core.book.workflow {{{','.join(JOBS)}}} NAME CONFIG_JSON KEY "
              "(run by workflow/Snakefile)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    step, name, config, key = argv[0], argv[1], json.loads(argv[2]), argv[3]
    t0 = time.time()
    print(f"[{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC] {step} {name} on "
          f"{os.uname().nodename} (SLURM job {os.environ.get('SLURM_JOB_ID', '-')}, "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '-')})", flush=True)
    spec: dict[str, Any] = dict(out=config["out"], name=("superpixels_" if step == "superpixels" else "")
                                + name.replace(":", "_"))
    stale = Path(config["out"]) / "logs" / "failed" / f"{spec['name']}.txt"
    stale.unlink(missing_ok=True)  # the record of an earlier failure of this job
    try:
        spec = job_spec(step, name, config, key)
        JOBS[step](spec)
    except Exception as err:  # noqa: BLE001 - any failure: recorded for crapnet book, then exit 1
        import traceback

        traceback.print_exc()
        failed = Path(spec["out"]) / "logs" / "failed" / f"{spec['name']}.txt"
        if not failed.is_file():
            _failed(spec, f"{step} {spec.get('shown') or spec.get('name')}", f"{type(err).__name__}: {err}")
        return 1
    print(f"{step} {name}: done in {time.time() - t0:.1f} s", flush=True)
    return 0


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
    items = list(config) if config is not None else [f"plan={plan_file}", f"repo={notebooks_root}",
                                                      f"gpus_per_job={gpus_per_job}", f"per_gpu={per_gpu}"]
    cmd = [sys.executable, "-m", "snakemake", *targets, "--snakefile", str(path), "--directory", str(out_dir),
           "--workflow-profile", str(root / "workflow" / "profiles" / profile), "--config", *items]
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
PROGRESS = re.compile(r"^\d+ of \d+ steps|^Error|^RuleException|Exception|^Nothing to be done|"
                      r"^\s+(log|wildcards|message): |^Removing output files of failed job|^Complete log")


def _profile_default_resources(profile_dir: str | os.PathLike | None) -> list[str]:
    """``default-resources`` of a Snakemake profile folder as ``NAME=VALUE`` strings ([] if none)."""
    if not profile_dir:
        return []
    import yaml

    path = Path(profile_dir) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"--cluster-profile: {path} not found (a Snakemake profile folder holds config.yaml)") from None
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
            for follow in text[i + 1:i + 12]:
                if follow.strip().startswith(("message:", "log:", "wildcards:")):
                    lines.append(f"  {follow.strip()}")
                elif not follow.startswith(" "):
                    break
    return lines


#: The job-count table of Snakemake's dry run (printed once by ``crapnet book --plan``).
_JOB_TABLE = re.compile(r"^(job\s+count|-+\s+-+|\w+\s+\d+)$")


def _dry_run(plan, out_dir: Path, jobs, gpus: int, per_job: int, per_gpu: int, executor: str, cluster_profile,
             partition, account, root: Path, echo: Callable[[str], None]) -> Path:
    """Snakemake's dry run of the plan, writing nothing into ``out_dir``: the plan file and the log go to a
    temporary folder; Snakemake works in ``out_dir`` when an earlier build left its records there (to say
    what is already done), else in the temporary folder. Echoes the job counts once."""
    import tempfile

    from .build import BookError, save_plan

    with tempfile.TemporaryDirectory(prefix="crapnet-plan-") as tmp:
        tmp = Path(tmp)
        plan_file = save_plan(plan, tmp / "plan.json")
        work = out_dir if (out_dir / ".snakemake").is_dir() else tmp / "build"
        cmd = snakemake_command(work, plan_file, plan.profile, jobs, gpus=gpus, gpus_per_job=per_job, dry_run=True,
                                executor=executor, cluster_profile=cluster_profile, partition=partition,
                                account=account, root=root, per_gpu=per_gpu)
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
    :data:`crapnet_core.book.build.DEFAULT_PROFILE`); ``plan``: a :class:`crapnet_core.book.build.BookPlan`
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
    from .build import DEFAULT_PROFILE, BookError, executed_results, plan_book, save_plan

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
        cluster_profile = Path(cluster_profile).resolve() if cluster_profile else root / "workflow" / "profiles" / executor
    where = f"{jobs} at a time" + (f", {gpus} GPU(s), {per_gpu} training(s) per GPU" if gpus else "")
    if executor != "local":
        queued = f"up to {jobs} jobs" if jobs else "jobs (as many as the cluster profile allows)"
        where = f"executor {executor}, {queued} queued at a time, {per_job} GPU(s) per job"
    echo(f"crapnet book: profile {plan.profile}, data {', '.join(plan.datasets)}, {len(plan.jobs)} notebook "
         f"execution(s), {where} -> {out_dir}")
    for note in plan.notes:
        echo(f"note: {note}")
    if "phantom" in plan.datasets:
        from ..data.phantom import phantom_root

        phantom_root()  # generate once here, not concurrently in several jobs
    if dry_run:
        return _dry_run(plan, out_dir, jobs, gpus * int(per_gpu), per_job, int(per_gpu), executor, cluster_profile,
                        partition, account, root, echo)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_file = save_plan(plan, out_dir / "plan.json")
    cmd = snakemake_command(out_dir, plan_file, plan.profile, jobs, gpus=gpus * int(per_gpu), gpus_per_job=per_job,
                            force=force, executor=executor, cluster_profile=cluster_profile,
                            partition=partition, account=account, root=root, per_gpu=int(per_gpu))
    started = time.time()
    state = dict(plan=plan.to_dict(), started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 command=cmd)
    write_json(out_dir / "book.json", dict(state, status="executing"))
    say = echo if progress else (lambda line: None)
    code = run_snakemake(cmd, out_dir / "logs" / "snakemake.log", echo=say, show=PROGRESS)
    results = executed_results(plan, out_dir, since=started)
    index = out_dir / "html" / "index.html"
    if code != 0 or not index.is_file():
        lines = _failures(out_dir, started) or _snakemake_errors(out_dir / "logs" / "snakemake.log") \
            or [f"- see {out_dir / 'logs' / 'snakemake.log'}"]
        err = (f"the book's workflow failed (Snakemake status {code}); what failed:\n" + "\n".join(lines)
               + f"\nper-job logs: {out_dir / 'logs'}; Snakemake's log: {out_dir / 'logs' / 'snakemake.log'}")
        write_json(out_dir / "book.json", dict(state, status="failed", error=err))
        raise BookError(err)
    total = time.time() - started
    sphinx = out_dir / "logs" / "sphinx.log"
    warnings = [ln for ln in sphinx.read_text(errors="replace").splitlines() if "WARNING" in ln or "ERROR" in ln] \
        if sphinx.is_file() else []
    write_json(out_dir / "book.json", dict(
        state, status="ok", index=str(index), wall_s=round(total, 1), sphinx_warnings=len(warnings),
        executions=[dict(name=r.job.name, status=r.status, wall_s=round(r.wall_s, 1)) for r in results],
    ))
    echo(f"notebooks: {sum(r.status == 'ok' for r in results)} executed, "
         f"{sum(r.status == 'cached' for r in results)} reused; book built in {total:.0f} s "
         f"({len(warnings)} Sphinx warning(s)): {index}")
    return index


if __name__ == "__main__":
    sys.exit(main())

"""The bodies of the workflow's jobs, one process each: superpixels, training, evaluation, notebook, HTML.

Every rule of ``workflow/Snakefile`` runs ``python -m crapnet_core.book.jobs STEP NAME CONFIG_JSON KEY``
(:func:`main`; on SLURM each one is a SLURM job). :func:`job_spec` makes what the job needs from the
workflow's config (the plan, the folders, the device), so that only the content key
(:mod:`crapnet_core.book.content_keys`) decides whether a job re-runs. A failing job writes
``OUT/logs/failed/<name>.txt`` (what failed, with which parameters, where) that ``crapnet book`` prints.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import write_json, write_text
from .gpus import device_env
from .workflow import run_step, runs_read

LOG = logging.getLogger(__name__)


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
    with device_env(spec), run_lock(run_dir):
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
    with device_env(spec), run_lock(run_dir):
        evaluate(run_dir, device=spec.get("device") or cfg.train.device, progress=False)


def job_notebook(spec: dict) -> None:
    """One papermill execution (see :func:`crapnet_core.book.execute.execute_notebook`)."""
    from .execute import execute_notebook
    from .plan import BookError

    with device_env(spec):
        try:
            execute_notebook(spec)
        except BookError as err:
            _failed(spec, spec["shown"], str(err))
            raise


def job_html(spec: dict) -> None:
    """Assemble the build source from the executed notebooks and build the HTML."""
    from .build import assemble_source, build_html
    from .execute import executed_results
    from .plan import BookPlan, Job

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


JOBS = {
    "superpixels": job_superpixels,
    "train": job_train,
    "evaluate": job_evaluate,
    "notebook": job_notebook,
    "html": job_html,
}


def job_spec(step: str, name: str, config: dict[str, Any], key: str = "") -> dict[str, Any]:
    """What the job body ``step`` of job ``name`` needs, from the workflow's config.

    ``config``: the Snakefile's ``JOB_CONFIG`` (``plan`` file or profile settings, ``repo``,
    ``out``, ``gpus_per_job``). Made in the job itself rather than passed as a Snakemake
    parameter, so that only the content key (``key``) decides whether a job re-runs: a
    different ``--device`` or output folder does not re-train a run.
    """
    from .execute import job_parameters, notebook_parameters, notebook_path
    from .plan import load_or_plan

    plan = load_or_plan(config)
    root = Path(config["repo"])
    gpu = int(config.get("gpus_per_job", 0))
    base = dict(
        out=config["out"],
        data_root=plan.data_root,
        runs_root=plan.runs_root,
        device=plan.device,
        key=key,
        per_gpu=int(config.get("per_gpu", 1)),
    )
    if step == "superpixels":
        dataset, scan = name.split(":", 1)
        return dict(
            base,
            name=f"superpixels_{dataset}_{scan}",
            dataset=dataset,
            scan=scan,
            output=str(Path(config["out"]) / "superpixels" / dataset / f"{scan}.json"),
        )
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
        return dict(
            base,
            name=name,
            notebook=job.notebook,
            template=str(template),
            tag=job.tag,
            title=job.title,
            params=job_parameters(job, plan, declared),
            shown=job.describe(),
            cwd=str(root),
            gpu=gpu if "device" in declared else 0,
        )
    if step == "html":
        return dict(base, name="html", plan=plan.to_dict(), root=str(root))
    raise ValueError(f"unknown step {step!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crapnet_core.book.jobs STEP NAME CONFIG_JSON KEY``: the body of one Snakemake job."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 4 or argv[0] not in JOBS:
        print(
            f"usage: python -m crapnet_core.book.jobs {{{','.join(JOBS)}}} NAME CONFIG_JSON KEY "
            "(run by workflow/Snakefile)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    step, name, config, key = argv[0], argv[1], json.loads(argv[2]), argv[3]
    t0 = time.time()
    print(
        f"[{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC] {step} {name} on "
        f"{os.uname().nodename} (SLURM job {os.environ.get('SLURM_JOB_ID', '-')}, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '-')})",
        flush=True,
    )
    spec: dict[str, Any] = dict(
        out=config["out"], name=("superpixels_" if step == "superpixels" else "") + name.replace(":", "_")
    )
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


if __name__ == "__main__":
    sys.exit(main())

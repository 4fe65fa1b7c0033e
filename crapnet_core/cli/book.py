"""``crapnet book``: execute the notebooks (papermill) and build the HTML research book.

    crapnet book [--profile smoke|lite|paper] [--data-root DIR] [--jobs N] [--out DIR]
                 [--runs DIR] [--device auto|cpu|cuda] [--per-gpu N] [--force] [--plan]
                 [--executor slurm [--partition P] [--account A] [--gpus-per-job N] [--cluster-profile DIR]]

The front door of the book's Snakemake workflow (``workflow/Snakefile``), which trains and shows what
the study declaration (``crapnet_core/study/study.yaml``) says for the profile. ``--plan`` states the
cost (trainings, steps, device-hours) and what is trained, shown and left out, with the workflow's
dry run, and writes nothing. See :mod:`crapnet_core.book.build` for the layout of what it writes.
"""

from __future__ import annotations

import argparse
import sys

from ..book import driver, workflow
from ..book import plan as book_plan
from ..paths import ProjectNotFound


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def register(subparsers) -> None:
    """Add ``crapnet book`` to ``subparsers``."""
    p = subparsers.add_parser(
        "book",
        help="execute the notebooks and build the HTML research book",
        description=(
            "Execute the notebooks with papermill (one executed copy per dataset, fold, setting, method and "
            "ablation point of the profile; completed executions are reused), then build the jupyter-book "
            "HTML and print the path of index.html. Runs the study's Snakemake workflow (workflow/Snakefile): "
            "superpixels, trainings, evaluations, notebook executions, HTML build; what it trains and shows at each "
            "profile is declared in crapnet_core/study/study.yaml. Profiles: smoke (phantom, seconds per run, the "
            "whole book a few minutes), lite (real data when CRAPNET_DATA_ROOT is set, else the phantom; about 3 "
            "minutes per run, < 45 min on 2 CPU cores), paper (every table of the paper; GPU). --plan states the "
            "cost before anything runs."
        ),
    )
    p.add_argument(
        "--profile",
        choices=book_plan.PROFILES,
        default=book_plan.DEFAULT_PROFILE,
        help=f"what to run (default: {book_plan.DEFAULT_PROFILE})",
    )
    p.add_argument(
        "--data-root",
        metavar="DIR",
        default=None,
        help="folder holding CHAOST2/ and SABS/ (default: $CRAPNET_DATA_ROOT; phantom when unset)",
    )
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"jobs at a time, one thread each (default: every core, here {driver.default_jobs()}); "
        "with GPUs, one training per GPU at a time; with --executor slurm: jobs submitted at a time",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="output folder: executed notebooks, logs, html/ (default: <repo>/_build)",
    )
    p.add_argument(
        "--runs", metavar="DIR", default=None, help="training runs shared by the notebooks (default: <repo>/runs)"
    )
    p.add_argument(
        "--results",
        metavar="DIR",
        default=None,
        help="committed cross-validation summaries read by the results page (default: <repo>/results)",
    )
    p.add_argument("--device", default="auto", help="training device for the runs: auto, cpu, cuda[:k]")
    p.add_argument(
        "--per-gpu",
        type=_positive_int,
        default=1,
        metavar="N",
        help="trainings that share one GPU at once (default 1; the paper's training needs about 7 GB)",
    )
    p.add_argument("--force", action="store_true", help="execute every notebook again, even when complete")
    p.add_argument(
        "--plan",
        action="store_true",
        help="state the cost, what is trained, shown and left out, and the workflow's dry run; write nothing",
    )
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="local (default) or slurm: each job is its own SLURM job (snakemake-executor-plugin-slurm)",
    )
    p.add_argument("--partition", metavar="P", default=None, help="SLURM partition of the jobs (--executor slurm)")
    p.add_argument("--account", metavar="A", default=None, help="SLURM account of the jobs (--executor slurm)")
    p.add_argument(
        "--gpus-per-job",
        type=int,
        default=None,
        metavar="N",
        help="GPUs per training/evaluation/notebook job on SLURM (default 1; 0 with --device cpu)",
    )
    p.add_argument(
        "--cluster-profile",
        metavar="DIR",
        default=None,
        help="Snakemake profile folder with your cluster's settings (default: workflow/profiles/slurm)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.executor == "local" and (
        args.partition or args.account or args.cluster_profile or args.gpus_per_job is not None
    ):
        print(
            "crapnet book: error: --partition, --account, --gpus-per-job and --cluster-profile need --executor slurm",
            file=sys.stderr,
        )
        return 2
    if args.gpus_per_job is not None and args.gpus_per_job < 0:
        print(f"crapnet book: error: --gpus-per-job: {args.gpus_per_job} must be 0 or more", file=sys.stderr)
        return 2
    try:
        plan = book_plan.plan_book(args.profile, args.data_root, args.runs, args.results, args.device)
        if args.plan:
            print("\n".join(workflow.plan_summary(plan, args.per_gpu)))
        index = driver.build_book(
            profile=args.profile,
            data_root=args.data_root,
            out_dir=args.out,
            jobs=args.jobs,
            runs_root=args.runs,
            results_dir=args.results,
            device=args.device,
            force=args.force,
            dry_run=args.plan,
            executor=args.executor,
            cluster_profile=args.cluster_profile,
            partition=args.partition,
            account=args.account,
            gpus_per_job=args.gpus_per_job,
            plan=plan,
            per_gpu=args.per_gpu,
        )
    except (book_plan.BookError, ProjectNotFound) as err:
        print(f"crapnet book: error: {err}", file=sys.stderr)
        return 1
    if args.plan:
        print("left out:" if plan.left_out else "left out: nothing")
        for item in plan.left_out:
            print(f"  - {item}")
        return 0
    print(index)
    return 0

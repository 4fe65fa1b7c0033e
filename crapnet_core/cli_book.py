"""``crapnet book``: execute the notebooks (papermill) and build the HTML research book.

    crapnet book [--profile smoke|lite|paper] [--data-root DIR] [--jobs N] [--out DIR]
                 [--runs DIR] [--device auto|cpu|cuda] [--force] [--plan]

See :mod:`crapnet_core.book` for the layout of what it writes.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import book


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
            "HTML and print the path of index.html. Profiles: smoke (phantom, a few minutes), lite (real data "
            "when CRAPNET_DATA_ROOT is set, else the phantom; < 45 min on 2 CPU cores), paper (everything; GPU)."
        ),
    )
    p.add_argument("--profile", choices=book.PROFILES, default=book.DEFAULT_PROFILE,
                   help=f"what to run (default: {book.DEFAULT_PROFILE})")
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder holding CHAOST2/ and SABS/ (default: $CRAPNET_DATA_ROOT; phantom when unset)")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="notebook executions at a time (with several GPUs, one GPU per job)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder: executed notebooks, logs, html/ (default: <repo>/_build)")
    p.add_argument("--runs", metavar="DIR", default=None,
                   help="training runs shared by the notebooks (default: <repo>/runs)")
    p.add_argument("--results", metavar="DIR", default=None,
                   help="committed cross-validation summaries read by the results page (default: <repo>/results)")
    p.add_argument("--device", default="auto", help="training device for the runs: auto, cpu, cuda[:k]")
    p.add_argument("--force", action="store_true", help="execute every notebook again, even when complete")
    p.add_argument("--plan", action="store_true",
                   help="print the executions and what the profile leaves out, then stop")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.plan:
        plan = book.plan_book(args.profile, args.data_root, args.runs, args.results, args.device)
        print(f"profile {plan.profile}: data {', '.join(plan.datasets)}; {len(plan.jobs)} executions")
        for stage in plan.stages():
            print(f"stage {stage[0].stage}:")
            for job in stage:
                print(f"  {job.name:60s} {json.dumps(job.params, sort_keys=True)}")
        print("left out:")
        for item in plan.left_out:
            print(f"  - {item}")
        return 0
    try:
        index = book.build_book(
            profile=args.profile, data_root=args.data_root, out_dir=args.out, jobs=args.jobs,
            runs_root=args.runs, results_dir=args.results, device=args.device, force=args.force,
        )
    except book.BookError as err:
        print(f"crapnet book: error: {err}", file=sys.stderr)
        return 1
    print(index)
    return 0

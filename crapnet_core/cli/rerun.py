"""``crapnet rerun-check``: retrain a sample of committed folds here and compare their Dice.

    crapnet rerun-check --results results --sample chaos_setting1_crapnet_lite:0:0 \\
        --sample sabs_setting1_crapnet_lite:0:2 --out results/rerun_check
    crapnet rerun-check --sample-file study.yaml --out results/rerun_check   (rerun_sample: [...])
    crapnet rerun-check --out results/rerun_check    (the sample the study declares: rerun_check in study.yaml)

Each sample is ``TABLE:SEED:FOLD`` (``results/TABLE/seed<SEED>/``, fold FOLD). The committed
configs are rebuilt and their hashes checked before anything trains; the rerun's run folders
go under ``--runs`` (default ``runs/rerun_check``, reused when the check is started again).
"""

from __future__ import annotations

import shlex


def _cmd_rerun_check(args) -> int:
    from ..engine.rerun import read_samples, rerun_check, rerun_markdown

    samples = list(args.samples or [])
    if args.sample_file:
        samples += read_samples(args.sample_file)
    if not samples:  # the sample the study declares (crapnet_core/study/study.yaml: rerun_check)
        from ..engine.rerun import RerunSample
        from ..study.declaration import load_declaration

        samples = [RerunSample(r.table, r.seed, r.fold) for r in load_declaration().rerun_check]
    diagnosis = None
    if args.diagnosis:
        from pathlib import Path

        path = Path(args.diagnosis)
        if not path.is_file():
            raise FileNotFoundError(f"--diagnosis {path}: no such file")
        diagnosis = path.read_text().strip()
    check = rerun_check(
        samples,
        results_root=args.results,
        out=args.out,
        runs_root=args.runs,
        data_root=args.data_root,
        progress=not args.no_progress,
        command="crapnet " + " ".join(shlex.quote(a) for a in args.argv),
        diagnosis=diagnosis,
    )
    print(rerun_markdown(check))
    return 0


def register(subparsers) -> None:
    """Add ``rerun-check``."""
    p = subparsers.add_parser(
        "rerun-check",
        help="retrain a sample of committed folds on this machine and compare their Dice",
        description="Rerun committed folds with their exact configs (config hashes checked) and write "
        "OUT/rerun_check.json and OUT/rerun_check.md: committed vs rerun Dice per organ and the "
        "difference, with the environment of both where recorded.",
    )
    p.add_argument("--results", default="results", help="the committed results folder (default results)")
    p.add_argument(
        "--sample",
        dest="samples",
        action="append",
        default=None,
        metavar="TABLE:SEED:FOLD",
        help="a committed fold, e.g. chaos_setting1_crapnet_lite:0:0 (repeatable; default: the sample "
        "the study declares, rerun_check in crapnet_core/study/study.yaml)",
    )
    p.add_argument(
        "--sample-file", default=None, help="JSON/YAML list of TABLE:SEED:FOLD (or a mapping with rerun_sample: [...])"
    )
    p.add_argument("--out", required=True, help="folder for rerun_check.json/.md")
    p.add_argument("--runs", default=None, help="folder for the rerun's run folders (default runs/rerun_check)")
    p.add_argument("--data-root", default=None, help="folder holding CHAOST2/ and SABS/ (default $CRAPNET_DATA_ROOT)")
    p.add_argument("--diagnosis", default=None, help="Markdown file explaining the differences (kept in the outputs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_rerun_check)

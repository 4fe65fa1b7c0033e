"""``crapnet study``: the declared study (``crapnet_core/study/study.yaml``) — plan, run, status, collect.

    crapnet study plan   [--profile P] [--tables T,...]     what would run, with its cost
    crapnet study run    (--profile P | --tables T,...) [--jobs N] [--device D] [--per-gpu N]
                         [--executor slurm --partition P --account A --gpus-per-job N --cluster-profile DIR]
    crapnet study status [--profile P] [--tables T,...] [--runs DIR] [--all-runs]
                                                            done / missing / stale / pending per run
                                                            (a training in progress under --runs: its step)
    crapnet study collect [--check]                         every generated table and sentence of the book and results/README.md
    crapnet study analysis NAME [OPTIONS...]                a declared one-off analysis
    crapnet study migrate [--tables T,...]                  per-run folders for tables committed as summaries only

``--tables`` takes names or shell patterns (``'chaos_setting1_*_lite'``). See :mod:`crapnet_core.study`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _selection(args, decl, default_all: bool = True):
    names = [n for part in (args.tables or []) for n in part.split(",") if n]
    profiles = [p for part in (args.profile or []) for p in part.split(",") if p]
    if not names and not profiles and not default_all:
        raise ValueError("choose what to run: --profile P (e.g. lite) or --tables NAME[,NAME...]")
    return decl.select(names, profiles)


def _paths(args):
    from ..paths import repo_root

    root = repo_root()
    results = Path(args.results).resolve() if getattr(args, "results", None) else root / "results"
    runs = Path(args.runs).resolve() if getattr(args, "runs", None) else root / "runs"
    return root, results, runs


def plan_lines(decl, tables, results, per_gpu: int = 1) -> list[str]:
    """The text of ``crapnet study plan``: per profile, runs done / to run / stale / pending and the cost."""
    from ..study.cost import estimate
    from ..study.layout import states

    lines = []
    rows = states(decl, results, tables)
    profiles = list(dict.fromkeys(t.profile for t in tables))
    for profile in profiles:
        mine = [s for s in rows if decl.tables[s.run.table].profile == profile]
        todo = [s for s in mine if s.status in ("missing", "stale")]
        counts = {k: sum(s.status == k for s in mine) for k in ("done", "missing", "stale", "pending")}
        ptables = [t for t in tables if t.profile == profile]
        lines.append(
            f"profile {profile}: {len(ptables)} table(s), {len(mine)} run(s): "
            + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        )
        if todo:
            cost = estimate(profile, [s.run.config for s in todo])
            lines.append(f"  to run: {cost.describe(per_gpu)}")
            per_table = [(t, sum(1 for s in todo if s.run.table == t.name)) for t in ptables]
            per_table = sorted([r for r in per_table if r[1]], key=lambda r: -r[0].priority)
            for t, n in per_table[:10]:
                lines.append(f"    {t.name}: {n} run(s) (priority {t.priority})")
            if len(per_table) > 10:
                lines.append(
                    f"    ... and {len(per_table) - 10} more table(s) ({sum(n for _, n in per_table[10:])} run(s))"
                )
        if counts["pending"]:
            pend = sorted({t.pending for t in ptables if t.pending})
            lines.append(f"  pending: {'; '.join(pend)}")
        comps = [c for c in decl.comparisons_of(ptables) if not decl.tables[c.a].pending]
        if comps:
            lines.append(f"  comparisons: {len(comps)} ({', '.join(sorted({c.family for c in comps}))})")
    return lines


def extra_lines(decl, tables) -> list[str]:
    """The declared work besides the tables' runs: support studies, the rerun sample, the analyses."""
    names = {t.name for t in tables}
    lines = []
    for st in decl.support_studies:
        if set(st.tables) & names:
            lines.append(
                f"support study {st.name}: {', '.join(st.kinds)} (k = {', '.join(map(str, st.shots))}) of "
                f"{', '.join(st.tables)}, seed(s) {', '.join(map(str, st.seeds))}: made by `crapnet study run` "
                f"(priority {'right after each run' if st.priority is None else st.priority}) for every run whose "
                "checkpoints are in its runs folder; a committed run trained elsewhere needs `crapnet support-results "
                "RUN ... --results-dir results` on the machine that holds it"
            )
    rerun = [r for r in decl.rerun_check if r.table in names]
    if rerun:
        lines.append(
            f"rerun check (issue 25; `crapnet rerun-check --out results/rerun_check`): {len(rerun)} committed "
            "fold(s): " + ", ".join(f"{r.table} seed {r.seed} fold {r.fold}" for r in rerun)
        )
    for a in decl.analyses.values():
        if a.table is None or a.table in names:
            lines.append(f"analysis {a.name}: `crapnet study analysis {a.name}` -> {a.out}")
    return lines


def _cmd_plan(args) -> int:
    from ..study.declaration import load_declaration

    decl = load_declaration(args.declaration)
    tables = _selection(args, decl)
    _, results, _ = _paths(args)
    print("\n".join(plan_lines(decl, tables, results, args.per_gpu) + extra_lines(decl, tables)))
    return 0


def _cmd_run(args) -> int:
    from ..book.study_flow import StudyError, run_study
    from ..study.declaration import load_declaration

    if args.executor == "local" and (
        args.partition or args.account or args.cluster_profile or args.gpus_per_job is not None
    ):
        raise ValueError("--partition, --account, --gpus-per-job and --cluster-profile need --executor slurm")
    decl = load_declaration(args.declaration)
    tables = _selection(args, decl, default_all=False)
    root, results, runs = _paths(args)
    print("\n".join(plan_lines(decl, tables, results, args.per_gpu)))
    try:
        run_study(
            tables,
            decl,
            results,
            runs,
            jobs=args.jobs,
            device=args.device,
            per_gpu=args.per_gpu,
            executor=args.executor,
            cluster_profile=args.cluster_profile,
            partition=args.partition,
            account=args.account,
            gpus_per_job=args.gpus_per_job,
            dry_run=args.dry_run,
            data_root=args.data_root,
            root=root,
        )
    except StudyError as err:
        print(f"crapnet study: error: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_status(args) -> int:
    from ..study.declaration import load_declaration
    from ..study.layout import status_report

    decl = load_declaration(args.declaration)
    tables = _selection(args, decl)
    _, results, runs = _paths(args)
    print(status_report(decl, results, tables, verbose=args.all_runs, runs_dir=runs), end="")
    return 0


def _cmd_collect(args) -> int:
    from ..report.collect import collect, rewrite_summaries

    root, results, _ = _paths(args)
    if args.rewrite_summaries:
        for path in rewrite_summaries(results):
            print(f"wrote {path}")
    changed = collect(
        results, root, check=args.check, progress=lambda page: print(f"rendering {page}", file=sys.stderr)
    )
    for path in changed:
        print(f"{'stale' if args.check else 'wrote'} {path}")
    return 1 if args.check and changed else 0


def _cmd_analysis(args) -> int:
    from ..study.analyses import run_analysis
    from ..study.declaration import load_declaration

    root, _, runs = _paths(args)
    return run_analysis(args.name, args.options, load_declaration(args.declaration), root, runs)


def _cmd_migrate(args) -> int:
    from ..study.declaration import load_declaration
    from ..study.layout import migrate_table

    decl = load_declaration(args.declaration)
    tables = _selection(args, decl)
    _, results, _ = _paths(args)
    n = 0
    for table in tables:
        if table.pending:
            continue
        for path in migrate_table(decl, table, results):
            print(path)
            n += 1
    print(f"{n} run folder(s) written", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add ``crapnet study`` and its sub-commands."""
    from .book import _positive_int

    p = subparsers.add_parser(
        "study",
        help="the declared study: plan, run, status, collect",
        description="The study declared in crapnet_core/study/study.yaml: every table, its "
        "runs and comparisons, run by a Snakemake workflow (workflow/study.smk) "
        "into results/<table>/seed<s>/<run>/.",
    )
    sub = p.add_subparsers(dest="study_command", metavar="COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    def common(q, runs: bool = False) -> None:
        q.add_argument(
            "--declaration", default=None, metavar="FILE", help="another declaration (default: the packaged one)"
        )
        q.add_argument("--results", default=None, metavar="DIR", help="results folder (default: <repo>/results)")
        if runs:
            q.add_argument(
                "--runs", default=None, metavar="DIR", help="training runs and workflow records (default: <repo>/runs)"
            )

    def selection(q) -> None:
        q.add_argument("--profile", action="append", metavar="P", help="tables of profile P (repeatable or comma list)")
        q.add_argument("--tables", action="append", metavar="T", help="table names or shell patterns (comma list)")

    q = sub.add_parser("plan", help="what would run, with its cost")
    selection(q)
    common(q)
    q.add_argument(
        "--per-gpu", type=_positive_int, default=1, metavar="N", help="trainings sharing one GPU (cost text)"
    )
    q.set_defaults(func=_cmd_plan)

    q = sub.add_parser("run", help="run the declared tables' workflow (resumes: finished runs are never redone)")
    selection(q)
    common(q, runs=True)
    q.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="jobs at a time, one thread each (default: every core); with --executor slurm: jobs submitted at a time",
    )
    q.add_argument("--device", default="auto", help="training device: auto, cpu, cuda[:k]")
    q.add_argument(
        "--per-gpu", type=_positive_int, default=1, metavar="N", help="trainings that share one GPU at once (default 1)"
    )
    q.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="folder holding CHAOST2/ and SABS/ (default: $CRAPNET_DATA_ROOT)",
    )
    q.add_argument("--dry-run", action="store_true", help="Snakemake's dry run: the jobs that would run")
    q.add_argument("--executor", choices=("local", "slurm"), default="local")
    q.add_argument("--partition", default=None, metavar="P")
    q.add_argument("--account", default=None, metavar="A")
    q.add_argument("--gpus-per-job", type=int, default=None, metavar="N")
    q.add_argument("--cluster-profile", default=None, metavar="DIR")
    q.set_defaults(func=_cmd_run)

    q = sub.add_parser("status", help="done / missing / stale / pending per declared run")
    selection(q)
    common(q, runs=True)
    q.add_argument("--all-runs", action="store_true", help="one line per run, done ones too")
    q.set_defaults(func=_cmd_status)

    q = sub.add_parser("collect", help="every generated table and sentence of the book's pages and results/README.md")
    common(q)
    q.add_argument("--check", action="store_true", help="write nothing; list the stale files and exit 1 if any")
    q.add_argument(
        "--rewrite-summaries",
        action="store_true",
        help="also re-render every summary.md from its summary.json (no rerun)",
    )
    q.set_defaults(func=_cmd_collect)

    q = sub.add_parser("analysis", help="run a declared one-off analysis (its own options follow its name)")
    q.add_argument("name", help="the analysis' name in the declaration")
    q.add_argument("options", nargs=argparse.REMAINDER, help="its options (see `crapnet study analysis NAME --help`)")
    common(q, runs=True)
    q.set_defaults(func=_cmd_analysis)

    q = sub.add_parser("migrate", help="per-run folders for tables committed with seed summaries only (no retraining)")
    selection(q)
    common(q)
    q.set_defaults(func=_cmd_migrate)

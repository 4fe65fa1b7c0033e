"""``crapnet compare``: paired comparisons at the fold level, under the declared decision rule.

    crapnet compare results/chaos_setting1_crapnet_lite results/chaos_setting1_alpnet_lite
    crapnet compare A B C D --out cmp          # two comparisons, Holm over both
    crapnet compare --family main              # a declared family of results/ (or --family all)
    crapnet compare --family all --out results/compare   # every family: results/compare/<family>.{json,md}

Each comparison: per organ and for the per-scan organ mean, the mean difference A - B, its
fold-level 95 % interval (hierarchical bootstrap) and p-value (mixed model, fold as random
effect), the p-value Holm-corrected over the comparisons given (or the declared family), the
seed band when one side has one training seed, the call (resolved / weak / not resolved), and
the per-scan BCa interval and Wilcoxon p as a secondary column. ``--out PREFIX`` writes
``PREFIX.json`` and ``PREFIX.md`` atomically (``--family``: a folder, one pair of files per
family). See :mod:`crapnet_core.engine.decision` for the rule.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _progress(key: str) -> None:
    print(f"comparing {key}", file=sys.stderr, flush=True)


def _family_md(fam: dict) -> str:
    from ..report.stats_tables import comparison_markdown, family_table

    parts = [f"## {fam['title']}", "", fam["question"], "", family_table(fam)]
    for e in fam["comparisons"]:
        if e["result"] is not None:
            parts += ["", f"### {e['key']}", "", comparison_markdown(e, fam["m"])]
    return "\n".join(parts)


def _cmd_compare(args) -> int:
    from ..engine.decision import FAMILY_KEYS, Comparison, Family, evaluate_family, family
    from ..io import write_json, write_text
    from ..paths import default_results_dir

    if not 0.5 <= args.confidence < 1.0:
        raise ValueError(f"--confidence: {args.confidence} must be in [0.5, 1)")
    if args.resamples < 1000:
        raise ValueError(f"--resamples: {args.resamples} must be at least 1000")
    results = Path(args.results) if args.results else default_results_dir()
    seeds = None
    if args.seeds:
        try:
            seeds = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise ValueError(f"--seeds: {args.seeds!r} is not a comma-separated list of integers") from None
    if args.family:
        if args.sources:
            raise ValueError("--family: give either --family or result folders A B [A2 B2 ...], not both")
        if not results.is_dir():
            raise FileNotFoundError(f"--results: {results} is not a folder")
        keys = FAMILY_KEYS if args.family == "all" else (family(args.family).key,)
        fams = [family(k) for k in keys]
    else:
        if len(args.sources) < 2 or len(args.sources) % 2:
            raise ValueError(f"compare: give result folders in pairs A B [A2 B2 ...] (got {len(args.sources)})")
        for src in args.sources:
            if not Path(src).exists():
                raise FileNotFoundError(f"{src}: no such result folder or summary.json")
        pairs = list(zip(args.sources[::2], args.sources[1::2]))
        fams = [
            Family(
                "pairs",
                "Comparisons given on the command line",
                f"Holm over the {len(pairs)} given.",
                tuple(Comparison(str(Path(a).resolve()), str(Path(b).resolve()), seeds) for a, b in pairs),
            )
        ]
    bands: dict = {}
    out = []
    for fam in fams:
        ev = evaluate_family(
            fam,
            results,
            bands,
            seed=args.seed,
            confidence=args.confidence,
            n_resamples=args.resamples,
            progress=_progress if args.family else None,
        )
        if not args.family:
            for e in ev["comparisons"]:
                if e["result"] is None:
                    raise ValueError(e["status"].removeprefix("not comparable: "))
        out.append(ev)
    md = "\n".join(_family_md(ev) for ev in out)
    print(md, end="")
    if args.out:
        written = []
        if args.family:
            folder = Path(args.out)
            for ev in out:
                written += [
                    write_json(folder / f"{ev['family']}.json", ev),
                    write_text(folder / f"{ev['family']}.md", _family_md(ev)),
                ]
        else:
            prefix = Path(args.out)
            written += [
                write_json(prefix.with_name(prefix.name + ".json"), out[0]),
                write_text(prefix.with_name(prefix.name + ".md"), md),
            ]
        print(json.dumps({"written": [str(p) for p in written]}))
    return 0


def register(subparsers) -> None:
    """Add ``compare``."""
    from ..engine.decision import FAMILY_KEYS

    p = subparsers.add_parser(
        "compare",
        help="paired Dice differences at the fold level: interval, corrected p, seed band, call",
        description="Compare cross-validation results scan by scan with the fold as the unit of replication: "
        "per organ and overall, the mean difference A - B, its fold-level interval (hierarchical "
        "bootstrap) and p (mixed model), Holm over the comparisons, the seed band of one-seed rows and "
        "the call under the declared rule; per-scan BCa interval and Wilcoxon p beside them.",
    )
    p.add_argument("sources", nargs="*", help="result folders (or summary.json files) in pairs: A B [A2 B2 ...]")
    p.add_argument(
        "--family",
        choices=[*FAMILY_KEYS, "all"],
        default=None,
        help="a declared family of comparisons of --results (or all of them)",
    )
    p.add_argument(
        "--results",
        default=None,
        help="the results folder of --family and of the seed bands (default: the repository's results/)",
    )
    p.add_argument(
        "--seeds", default=None, help="training seeds used on both sides, e.g. 0 (default: the seeds both tables have)"
    )
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md (--family: a folder, one pair per family)")
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="level of the intervals (default 0.95; the rule's alpha is 1 - confidence)",
    )
    p.add_argument(
        "--resamples",
        type=int,
        default=20000,
        help="hierarchical-bootstrap resamples to start with (default 20000; more near the boundary)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstraps (default 0)")
    p.set_defaults(func=_cmd_compare)

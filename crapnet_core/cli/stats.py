"""``crapnet compare``: paired per-scan comparison of two cross-validation results.

    crapnet compare results/chaos_setting1_crapnet_lite results/chaos_setting1_alpnet_lite
    crapnet compare A/summary.json B/summary.json --out results/compare/chaos_s1_crapnet_vs_alpnet

Prints a Markdown table (per organ and the per-scan organ mean: mean Dice of A and B, the
mean difference A - B, its bootstrap 95 % CI, the Wilcoxon signed-rank p, whether the CI
excludes 0) and, with ``--out PREFIX``, writes ``PREFIX.json`` and ``PREFIX.md`` (atomically).
See :mod:`crapnet_core.engine.stats`.
"""

from __future__ import annotations

import json
from pathlib import Path


def _cmd_compare(args) -> int:
    from ..engine.stats import compare_results, comparison_markdown
    from ..io import write_json, write_text

    if not 0.5 <= args.confidence < 1.0:
        raise ValueError(f"--confidence: {args.confidence} must be in [0.5, 1)")
    if args.resamples < 100:
        raise ValueError(f"--resamples: {args.resamples} must be at least 100")
    result = compare_results(args.a, args.b, confidence=args.confidence, n_resamples=args.resamples, seed=args.seed)
    md = comparison_markdown(result)
    print(md, end="")
    if args.out:
        prefix = Path(args.out)
        write_json(prefix.with_name(prefix.name + ".json"), result)
        write_text(prefix.with_name(prefix.name + ".md"), md)
        print(json.dumps({"json": str(prefix) + ".json", "md": str(prefix) + ".md"}))
    return 0


def register(subparsers) -> None:
    """Add ``compare``."""
    p = subparsers.add_parser(
        "compare", help="paired per-scan Dice differences of two results: bootstrap CI and Wilcoxon p",
        description="Compare two cross-validation results (folders with summary.json, or the files) scan by "
                    "scan: mean difference A - B, bootstrap CI, Wilcoxon signed-rank p, per organ and overall.")
    p.add_argument("a", help="result A: a cross-validate --out folder or its summary.json")
    p.add_argument("b", help="result B (same dataset and setting)")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the CI (default 0.95)")
    p.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples (default 9999)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.set_defaults(func=_cmd_compare)

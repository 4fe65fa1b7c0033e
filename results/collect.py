"""Regenerate every generated table and sentence of the book's pages and of results/README.md.

    .venv/bin/python results/collect.py                      # print the table of every committed table
    .venv/bin/python results/collect.py --update-book        # rewrite every generated block (and README)
    .venv/bin/python results/collect.py --check              # exit 1 and list the files that are stale
    .venv/bin/python results/collect.py --rewrite-summaries  # re-render every summary.md from its summary.json

A thin caller of the library's collector, ``crapnet_core.report.collect.collect(results_dir, repo_root,
check=False) -> list of changed files`` (run with the package installed: ``make venv``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from crapnet_core.report.collect import collect, readme_table, rewrite_summaries

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--rewrite-summaries" in args:
        for p in rewrite_summaries(HERE):
            print(p)
    elif "--update-book" in args or "--update-readme" in args:
        for p in collect(HERE, HERE.parent, progress=lambda page: print(f"rendering {page}", file=sys.stderr)):
            print(f"wrote {p}")
    elif "--check" in args:
        stale = collect(HERE, HERE.parent, check=True)
        for p in stale:
            print(f"stale: {p}")
        sys.exit(1 if stale else 0)
    else:
        print(readme_table(HERE), end="")

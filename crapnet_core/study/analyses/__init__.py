"""The study's one-off analyses, as library functions (declared under ``analyses`` in study.yaml).

``crapnet study analysis NAME [OPTIONS]`` runs the declared analysis NAME: its function (a module
of this package), with the declared output folder under ``results/`` and, where it names one, the
declared table whose fold runs it reads. Each function keeps its own options (``--help``).

- ``select_lite``: the ``lite`` settings chosen on the validation scan of CHAOS fold 0 (issue 8 §2).
- ``rpnet_iterations``: SSL-RPNet's refinement iterations at test, on the validation scan (issue 10).
- ``rpnet_batch_stats``: a committed SSL-RPNet table's fold models re-evaluated with the CRE's
  BatchNorm on batch statistics (issue 10).
- ``diagnose_runs``: "inside the attention" of every fold of a CRAPNet table (issue 8 §3).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from ..declaration import ANALYSIS_FUNCTIONS

#: function name -> module of this package (imported when the analysis runs).
ANALYSES = {name: name for name in ANALYSIS_FUNCTIONS}


def run_analysis(
    name: str,
    argv: Sequence[str] = (),
    declaration=None,
    root: str | Path | None = None,
    runs_root: str | Path | None = None,
) -> int:
    """Run the declared analysis ``name`` with the extra command-line options ``argv``.

    ``root``: the repository (its ``results/`` receives the output; default: this checkout);
    ``runs_root``: where trainings go (default ``<root>/runs``). ValueError for an undeclared name.
    """
    from ...paths import repo_root
    from ..declaration import load_declaration

    decl = declaration or load_declaration()
    if name not in decl.analyses:
        raise ValueError(f"analysis {name!r} is not declared; declared: {', '.join(decl.analyses)}")
    a = decl.analyses[name]
    root = Path(root or repo_root())
    runs_root = Path(runs_root or root / "runs")
    out = root / a.out
    module = importlib.import_module(f"{__name__}.{ANALYSES[a.function]}")
    argv = list(argv)
    own_runs = any(x in argv for x in ("--result", "--runs", "-h", "--help"))
    if a.table is not None and not own_runs:
        train_table(decl.table(a.table), runs_root)
    if a.function == "diagnose_runs":
        runs = None if own_runs else module.table_runs(decl.table(a.table), runs_root)
        return module.main(argv, out=out, runs=runs, command=f"crapnet study analysis {name}")
    if a.function == "rpnet_batch_stats":
        return module.main(argv, dataset=decl.table(a.table).dataset, out=out, runs=runs_root, name=name)
    return module.main(argv, out=out, runs=runs_root)


def train_table(table, runs_root: str | Path) -> list[Path]:
    """The trained fold runs (first seed) of a declared table under ``runs_root``: trained where missing
    (the runs folder is not committed; a committed result keeps only its numbers), resumed where
    interrupted. Returns the run folders."""
    import sys

    from ..jobs import trained_run

    out = []
    for run in (r for r in table.runs() if r.seed == table.seeds[0]):
        if run.config is None:
            raise ValueError(f"table {table.name}: {run.pending}")
        print(f"analysis: the run {run.folder} of {table.name}", file=sys.stderr, flush=True)
        out.append(trained_run(run, runs_root))
    return out


__all__ = ["ANALYSES", "run_analysis"]

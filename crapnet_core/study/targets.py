"""What the study workflow makes for a selection of declared tables (read by ``workflow/study.smk``).

:func:`study_targets` turns the selected tables into the files of the per-run results layout
(:mod:`crapnet_core.study.layout`) and the facts each Snakemake rule needs: the run folders
(``run``), the budget curves (``budget``), the summaries per seed and per table, the fold-level
comparisons of the decision rule's families (once, over the tables there are), and each job's priority (the declaration's order of work).
Runs already done under an accepted config hash are targets under their existing folder name, so
Snakemake finds them and skips them; pending tables (a profile not defined yet) make no target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .entries import Declaration, Run, Table

RESUME_BONUS = 4  # the most an unfinished training's priority is raised (see StudyTargets.run_priority)


@dataclass
class StudyTargets:
    """The files and per-job facts of one workflow run."""

    results: Path
    tables: list[Table]
    runs: dict[tuple[str, int, str], Run] = field(default_factory=dict)  # (table, seed, folder) -> run
    folders: dict[tuple[str, int, str], str] = field(default_factory=dict)  # (table, seed, fold-group) -> folder
    priority: dict[tuple[str, int], int] = field(default_factory=dict)  # (table, seed) -> priority
    seed_inputs: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    table_inputs: dict[str, list[str]] = field(default_factory=dict)
    comparison_inputs: list[str] = field(default_factory=list)  # summaries the family comparisons read
    targets: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def run_file(self, table: str, seed: int, folder: str, name: str = "metrics.json") -> str:
        return str(self.results / table / f"seed{seed}" / folder / name)

    def run_priority(self, table: str, seed: int, folder: str, runs_root: str | os.PathLike | None = None) -> int:
        """Snakemake priority of one training: the declared priority of its table and seed, raised by 1 to
        :data:`RESUME_BONUS` when ``runs_root`` holds an unfinished training of it (the further its newest
        step checkpoint, the more), so a stopped study first finishes the folds it had begun, the furthest
        first. Only file names are read. The declared order between tables is kept: distinct declared
        priorities differ by more than the bonus (a test checks the declaration)."""
        base = self.priority[(table, seed)]
        if runs_root is None:
            return base
        from ..engine.checkpoints import latest_checkpoint, step_checkpoints
        from ..engine.run_folder import is_trained
        from ..engine.runs import run_dir_for

        cfg = self.runs[(table, seed, folder)].config
        run_dir = run_dir_for(cfg, runs_root)
        if latest_checkpoint(run_dir) is None or is_trained(run_dir):
            return base
        done = max(step_checkpoints(run_dir), default=0) / max(cfg.train.steps, 1)
        return base + 1 + min(int(done * RESUME_BONUS), RESUME_BONUS - 1)

    @property
    def summary_priority(self) -> int:
        """Snakemake priority of the summaries and comparisons: above every training and budget curve, so
        each is written as soon as its inputs exist (they take a moment) instead of after all the trainings."""
        declared = [self.budget_priority(t.name) for t in self.tables] + list(self.priority.values())
        return max(declared, default=0) + RESUME_BONUS + 1

    def budget_priority(self, table: str) -> int:
        t = next(t for t in self.tables if t.name == table)
        return t.priority if t.budget_priority is None else t.budget_priority


def study_targets(decl: Declaration, tables: list[Table], results_dir: str | os.PathLike) -> StudyTargets:
    """The targets of ``tables`` (see the module docstring)."""
    results = Path(results_dir).resolve()
    st = StudyTargets(results, list(tables))
    names = {t.name for t in tables}
    for table in tables:
        if table.pending:
            st.pending.append(f"{table.name}: {table.pending}")
            continue
        for seed in table.seeds:
            st.priority[(table.name, seed)] = table.priority_of(seed)
            files = []
            for run in (r for r in table.runs() if r.seed == seed):
                folder = layout.output_folder(decl, run, results)
                st.runs[(table.name, seed, folder)] = run
                metrics = st.run_file(table.name, seed, folder)
                files.append(metrics)
                st.targets.append(metrics)
                if table.budget is not None:
                    st.targets.append(st.run_file(table.name, seed, folder, layout.BUDGET_FILE))
            if table.summary:
                st.seed_inputs[(table.name, seed)] = files
                st.targets.append(str(results / table.name / f"seed{seed}" / "summary.json"))
        if table.summary:
            st.table_inputs[table.name] = [str(results / table.name / f"seed{s}" / "summary.json") for s in table.seeds]
            st.targets.append(str(results / table.name / "summary.json"))
    # the fold-level comparisons of the decision rule's families, once the selected tables they name are made
    compared = {n for c in decl.comparisons for n in (c.a, c.b)} & names
    for name in sorted(compared):
        t = decl.tables[name]
        if not t.pending:
            st.comparison_inputs += [str(results / name / f"seed{s}" / "summary.json") for s in t.seeds]
            st.comparison_inputs.append(str(results / name / "summary.json"))
    if st.comparison_inputs:
        st.targets.append(str(results / "compare" / "analysis.json"))
    return st


__all__ = ["StudyTargets", "study_targets"]

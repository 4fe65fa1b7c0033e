"""What the study workflow makes for a selection of declared tables (read by ``workflow/study.smk``).

:func:`study_targets` turns the selected tables into the files of the per-run results layout
(:mod:`crapnet_core.study.layout`) and the facts each Snakemake rule needs: the run folders
(``run``), the budget curves (``budget``), the summaries per seed and per table, the fold-level
comparisons of the decision rule's families (once, over the tables there are), the support-choice and
k-shot evaluations of the declared support studies (``support``, for the runs whose checkpoints the runs
folder holds or will hold), and each job's priority (the declaration's order of work).
Runs already done under an accepted config hash are targets under their existing folder name, so
Snakemake finds them and skips them; pending tables (a profile not defined yet) make no target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..report.support import SUPPORT_DIR
from . import layout
from .declaration import SUPPORT_KINDS
from .entries import Declaration, Run, SupportStudy, Table

#: Snakemake priority of a job = declared priority x PRIORITY_SCALE + a tie-break below PRIORITY_SCALE
#: (StudyTargets.run_priority), so the tie-break orders jobs of one declared priority and never crosses
#: two declared priorities.
PRIORITY_SCALE = 1000


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
    # (table, seed, run_name) -> (run, its support study, its metrics.json): the support jobs
    support: dict[tuple[str, int, str], tuple[Run, SupportStudy, str]] = field(default_factory=dict)
    #: declared support evaluations that cannot run here: committed runs whose checkpoints are elsewhere
    support_elsewhere: list[str] = field(default_factory=list)

    def support_files(self, table: str, seed: int, name: str) -> list[str]:
        """``results/support/<table>/seed<s>/<run_name>/<file>``, the files of every kind (the layout of
        :func:`crapnet_core.report.support.result_folder`; a support job writes them all)."""
        return [
            self.support_pattern().format(table=table, seed=seed, name=name, file=f) for f in SUPPORT_KINDS.values()
        ]

    def support_pattern(self) -> str:
        """The support files' path with ``{table}``, ``{seed}``, ``{name}`` and ``{file}`` left open."""
        return str(self.results / SUPPORT_DIR / "{table}" / "seed{seed}" / "{name}" / "{file}")

    def support_priority(self, table: str, seed: int, name: str) -> int:
        """Snakemake priority of a support job: its study's declared ``priority`` x :data:`PRIORITY_SCALE`, else
        its table's budget priority (right after the run, while its checkpoints are certainly there)."""
        study = self.support[(table, int(seed), name)][1]
        return self.budget_priority(table) if study.priority is None else PRIORITY_SCALE * study.priority

    def run_file(self, table: str, seed: int, folder: str, name: str = "metrics.json") -> str:
        return str(self.results / table / f"seed{seed}" / folder / name)

    def run_priority(self, table: str, seed: int, folder: str, runs_root: str | os.PathLike | None = None) -> int:
        """Snakemake priority of one training: its table and seed's declared priority x :data:`PRIORITY_SCALE`,
        plus a tie-break among the trainings of that priority that finishes what is begun first (each term
        outranks all the later ones):

        - ``100 x (1..5)`` when ``runs_root`` holds a training of it: 1..4 unfinished, the more the further
          its newest step checkpoint; 5 trained and not yet published (only its evaluation is left);
        - ``10 x (0..9)`` by the share of its seed's runs (same table and seed) published or begun;
        - ``0..9``: the earlier declared seed first.

        So an interrupted fold resumes before a fresh one starts, and whole seeds land one after another
        (a seed enters the seed band and the mean over seeds only once all its folds are in) instead of
        every seed being half done. Snakemake reads the priorities once, when it builds the job graph;
        only file names are read here."""
        base = self.priority[(table, seed)] * PRIORITY_SCALE
        if runs_root is None:
            return base
        resume = _resume_level(self.runs[(table, seed, folder)], runs_root)
        mine = [(k, r) for k, r in self.runs.items() if k[:2] == (table, seed)]
        begun = sum(Path(self.run_file(*k)).is_file() or _resume_level(r, runs_root) > 0 for k, r in mine)
        seeds = next(t.seeds for t in self.tables if t.name == table)
        rank = list(seeds).index(seed) if seed in seeds else 9
        return base + 100 * resume + 10 * min(9, (9 * begun) // max(len(mine), 1)) + (9 - min(rank, 9))

    @property
    def summary_priority(self) -> int:
        """Snakemake priority of the summaries and comparisons: above every training and budget curve, so
        each is written as soon as its inputs exist (they take a moment) instead of after all the trainings."""
        declared = [self.budget_priority(t.name) for t in self.tables]
        declared += [p * PRIORITY_SCALE for p in self.priority.values()]
        return max(declared, default=0) + PRIORITY_SCALE

    def budget_priority(self, table: str) -> int:
        """Snakemake priority of a budget curve: the table's declared ``budget_priority`` (else its priority)
        x :data:`PRIORITY_SCALE`."""
        t = next(t for t in self.tables if t.name == table)
        return PRIORITY_SCALE * (t.priority if t.budget_priority is None else t.budget_priority)


def _resume_level(run: Run, runs_root: str | os.PathLike) -> int:
    """0 when ``runs_root`` holds no training of ``run``; 1..4 for an unfinished one by its newest step
    checkpoint; 5 when it is trained (its evaluation and publishing are left)."""
    from ..engine.run_folder import training_progress
    from ..engine.runs import run_dir_for

    progress = training_progress(run_dir_for(run.config, runs_root))
    if progress is None:
        return 0
    if progress.trained:
        return 5
    return 1 + min(int(progress.step / max(run.config.train.steps, 1) * 4), 3)


def study_targets(
    decl: Declaration,
    tables: list[Table],
    results_dir: str | os.PathLike,
    runs_root: str | os.PathLike | None = None,
) -> StudyTargets:
    """The targets of ``tables`` (see the module docstring); the support jobs only with ``runs_root`` (the
    runs folder whose trained runs they evaluate)."""
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
                if table.budget is not None:  # a run is done with its curve: the seed's summary waits for it
                    budget = st.run_file(table.name, seed, folder, layout.BUDGET_FILE)
                    files.append(budget)
                    st.targets.append(budget)
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
    if runs_root is not None:
        _support_targets(decl, st, names, runs_root)
    return st


def _support_targets(decl: Declaration, st: StudyTargets, names: set[str], runs_root: str | os.PathLike) -> None:
    """The support jobs of the declared support studies over the selected tables: a run's evaluations are a
    target when their files exist (nothing to do), when the run is still to be trained (here, so its
    checkpoints will be in ``runs_root``) or when ``runs_root`` holds it trained; else (committed, trained
    on another machine) they go to ``support_elsewhere``: the checkpoints are not here, and training the
    fold again would give other weights than the committed run's."""
    from ..engine.run_folder import training_progress
    from ..engine.runs import run_dir_for

    for study in decl.support_studies:
        for name in (t for t in study.tables if t in names):
            table = decl.tables[name]
            for (tname, seed, folder), run in st.runs.items():
                if tname != name or seed not in study.seeds:
                    continue
                files = st.support_files(name, seed, run.config.run_name())
                metrics = st.run_file(name, seed, folder)
                progress = training_progress(run_dir_for(run.config, runs_root))
                here = progress is not None and progress.trained
                if all(Path(f).is_file() for f in files) or not Path(metrics).is_file() or here:
                    st.support[(name, seed, run.config.run_name())] = (run, study, metrics)
                    st.targets += files
                else:
                    st.support_elsewhere.append(
                        f"{study.name}: {name}/seed{seed}/{folder} (fold {run.fold}"
                        + ("" if run.group == "all" else f", group {run.group}")
                        + f"; {table.profile})"
                    )


__all__ = ["StudyTargets", "study_targets"]

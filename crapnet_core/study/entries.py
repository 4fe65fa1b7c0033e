"""The entries of the study declaration: tables and their runs, comparisons, support studies, the
rerun sample, analyses, the book's scopes, and the :class:`Declaration` that holds them.

Made and validated by :mod:`crapnet_core.study.declaration` (``load_declaration``) from
``crapnet_core/study/study.yaml``; :meth:`Table.runs` expands a table into its runs (one per seed,
fold and test group, each with its ExperimentConfig and result folder).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..facts import DATASET_TITLES, RUN_PROFILES


class DeclarationError(ValueError):
    """An entry of the study declaration is invalid (the message names the entry)."""


# ---------------------------------------------------------------------------- the entries
@dataclass(frozen=True)
class Run:
    """One training run of a declared table: (table, seed, fold, test group).

    ``config``: its ExperimentConfig (runtime settings included); None for a pending profile.
    ``folder``: the result folder name, ``ExperimentConfig.run_name()`` (None when pending).
    ``prefix``: the folder name without the config hash (``chaos_s1_all_f0_crapnet_lite``).
    """

    table: str
    seed: int
    fold: int
    group: str
    config: Any = None
    folder: str | None = None
    prefix: str | None = None
    pending: str | None = None

    @property
    def hash(self) -> str | None:
        return None if self.folder is None else self.folder.rsplit("_", 1)[1]

    def where(self) -> str:
        return f"{self.table}/seed{self.seed}/{self.folder or f'fold {self.fold} ({self.group})'}"


@dataclass(frozen=True)
class Table:
    """One declared table: a cross-validation of one method or variant at one profile."""

    name: str
    dataset: str
    setting: int
    method: str
    variant: str
    overrides: tuple[str, ...]
    profile: str
    folds: tuple[int, ...]
    seeds: tuple[int, ...]
    family: str | None
    page: str
    priority: int = 0
    seed_priority: int | None = None
    budget: tuple[int, ...] | str | None = None
    budget_priority: int | None = None
    summary: bool = True
    runtime: tuple[str, ...] = ()
    pending: str | None = None  # why nothing of this table can run yet (pending profile)
    based_on: str | None = None  # the profile a pending profile is validated against
    label: str = ""  # display name (the method's, or the variant's declared label)

    @property
    def is_variant(self) -> bool:
        return self.variant != self.method

    def priority_of(self, seed: int) -> int:
        """Snakemake priority of the runs of ``seed`` (the first declared seed: ``priority``)."""
        if seed != self.seeds[0] and self.seed_priority is not None:
            return self.seed_priority
        return self.priority

    def budget_runtime(self, steps: int) -> list[str]:
        """Runtime overrides that keep the checkpoints the budget curve evaluates."""
        if self.budget is None:
            return []
        every = 1000 if self.budget == "all" else math.gcd(*self.budget)
        return [f"train.checkpoint_every={every}", f"train.keep_checkpoints={max(1, math.ceil(steps / every))}"]

    def overrides_for(self, seed: int) -> list[str]:
        """Every override of a run of ``seed``: the table's, the seed, the runtime settings."""
        return [*self.overrides, f"train.seed={int(seed)}", *self.runtime]

    def configs(self, seed: int, fold: int) -> list[Any]:
        """The ExperimentConfigs of one fold and seed: one per test group (ValueError if pending)."""
        if self.pending:
            raise ValueError(f"table {self.name}: {self.pending}")
        from ..engine.runs import fold_configs

        cfgs = fold_configs(self.profile, self.dataset, self.setting, self.method, fold, self.overrides_for(seed))
        if self.budget is not None:
            extra = self.budget_runtime(cfgs[0].train.steps)
            cfgs = [_with(c, extra) for c in cfgs]
        return cfgs

    def runs(self) -> list[Run]:
        """Every run of the table (seed-major, then fold, then test group)."""
        return list(_table_runs(self))


def _with(cfg, overrides: Sequence[str]):
    from ..engine.experiment import apply_overrides

    return apply_overrides(cfg, overrides)


@functools.cache
def _table_runs(table: Table) -> tuple[Run, ...]:
    out = []
    for seed in table.seeds:
        for fold in table.folds:
            if table.pending:
                out.append(Run(table.name, seed, fold, "-", pending=table.pending))
                continue
            for cfg in table.configs(seed, fold):
                name = cfg.run_name()
                out.append(Run(table.name, seed, fold, cfg.group_name(), cfg, name, name.rsplit("_", 1)[0]))
    return tuple(out)


@dataclass(frozen=True)
class Comparison:
    """A paired per-scan comparison ``a`` − ``b`` of two declared tables, in one family."""

    a: str
    b: str
    family: str
    on: str
    name: str  # the file stem under results/compare/


@dataclass(frozen=True)
class SupportStudy:
    """Extra evaluations (support choice, k-shot) of the fold models of declared tables (issue 22)."""

    name: str
    tables: tuple[str, ...]
    seeds: tuple[int, ...]
    kinds: tuple[str, ...]
    shots: tuple[int, ...]
    page: str
    #: Snakemake priority of its jobs (``None``: its table's budget priority, i.e. right after the run, while
    #: the run's checkpoints are certainly there; see :meth:`StudyTargets.support_priority`).
    priority: int | None = None


@dataclass(frozen=True)
class RerunFold:
    """One committed fold of the rerun check (issue 25)."""

    table: str
    seed: int
    fold: int


@dataclass(frozen=True)
class Analysis:
    """A one-off analysis: a function of :mod:`crapnet_core.study.analyses`, its output folder."""

    name: str
    function: str
    out: str
    page: str
    table: str | None = None


@dataclass(frozen=True)
class LeftOut:
    """What a book profile leaves out of the paper's evaluation, and why."""

    why: str
    methods: tuple[str, ...] = ()
    settings: tuple[int, ...] = ()
    folds: tuple[int, ...] = ()
    datasets: tuple[str, ...] = ()
    points: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    variants: tuple[str, ...] = ()

    def describe(self) -> str:
        from ..facts import METHOD_LABELS

        parts = []
        if self.methods:
            parts.append(", ".join(METHOD_LABELS[m] for m in self.methods))
        if self.variants:
            parts.append("variants " + ", ".join(self.variants))
        if self.datasets:
            parts.append(", ".join(DATASET_TITLES.get(d, d) for d in self.datasets))
        if self.settings:
            parts.append("setting " + ", ".join(map(str, self.settings)))
        if self.folds:
            parts.append("folds " + ", ".join(map(str, self.folds)))
        for axis, values in self.points.items():
            unit = {"blocks": "attention blocks", "branches": "branch(es)"}.get(axis, axis)
            parts.append(f"ablation points with {', '.join(map(str, values))} {unit}")
        return f"{'; '.join(parts)}: {self.why}"


@dataclass(frozen=True)
class BookScope:
    """What ``crapnet book --profile P`` trains and shows (the ``book`` section of the declaration)."""

    profile: str
    one_fold: Mapping[str, Any]
    ablation_folds: tuple[int, ...]
    results: str
    left_out: tuple[LeftOut, ...]


@dataclass(frozen=True)
class Declaration:
    """The whole declaration, validated (see the module docstring)."""

    path: str
    families: Mapping[str, str]
    pages: Mapping[str, str]
    pending_profiles: Mapping[str, Mapping[str, str]]
    tables: Mapping[str, Table]
    comparisons: tuple[Comparison, ...]
    support_studies: tuple[SupportStudy, ...]
    rerun_check: tuple[RerunFold, ...]
    analyses: Mapping[str, Analysis]
    book: Mapping[str, BookScope]
    legacy: tuple[Mapping[str, Any], ...] = ()

    def table(self, name: str) -> Table:
        if name not in self.tables:
            raise DeclarationError(f"{self.path}: no table {name!r} is declared")
        return self.tables[name]

    def select(self, names: Iterable[str] = (), profiles: Iterable[str] = ()) -> list[Table]:
        """Declared tables, in declaration order: those named (exact names or shell patterns), or of
        ``profiles``, or all. An unknown name is a DeclarationError."""
        import fnmatch

        names, profiles = list(names), list(profiles)
        for p in profiles:
            if p not in set(RUN_PROFILES) | set(self.pending_profiles):
                raise DeclarationError(f"--profile {p!r}: no such profile ({', '.join(self.profiles())})")
        chosen = []
        for name in names:
            hits = [t for t in self.tables if fnmatch.fnmatchcase(t, name)]
            if not hits:
                raise DeclarationError(f"--tables {name!r}: no declared table matches it")
            chosen += hits
        out = [
            t for n, t in self.tables.items() if (not names or n in chosen) and (not profiles or t.profile in profiles)
        ]
        return out

    def results_page_tables(self, profile: str, datasets: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The declared tables the book's results page cross-validates at ``profile`` (its ``book`` entry
        says ``results: train``; [] for ``committed``), as JSON-able dicts (name, label, dataset, setting,
        method, variant, overrides, folds, seeds); ``datasets``: only those of these datasets."""
        scope = self.book.get(profile)
        if scope is None or scope.results != "train":
            return []
        keep = None if datasets is None else set(datasets)
        return [
            dict(
                name=t.name,
                label=t.label,
                dataset=t.dataset,
                setting=t.setting,
                method=t.method,
                variant=t.variant,
                overrides=list(t.overrides),
                folds=list(t.folds),
                seeds=list(t.seeds),
            )
            for t in self.select(profiles=[profile])
            if t.page == "results" and not t.pending and (keep is None or t.dataset in keep)
        ]

    def profiles(self) -> list[str]:
        return list(dict.fromkeys([*RUN_PROFILES, *self.pending_profiles]))

    def runs(self, tables: Iterable[Table] | None = None) -> list[Run]:
        return [r for t in (self.tables.values() if tables is None else tables) for r in t.runs()]

    def comparisons_of(self, tables: Iterable[Table]) -> list[Comparison]:
        """The comparisons both of whose tables are among ``tables``."""
        names = {t.name for t in tables}
        return [c for c in self.comparisons if c.a in names and c.b in names]

    def accepted_hashes(self, cfg) -> dict[str, str]:
        """Config hashes under which a committed run of ``cfg`` counts as done: hash -> why.

        The current hash; and, for a registered method whose module constants still have the values
        a ``legacy_hashes`` entry records, the hash computed without them (runs committed before the
        constants entered the hash)."""
        out = {cfg.config_hash(): "current"}
        for entry in self.legacy:
            constants = entry["constants"].get(cfg.model.method)
            if constants is None:
                continue
            from ..models.methods import hashed_constants

            if dict(hashed_constants(cfg.model.method) or {}) != dict(constants):
                continue  # a constant changed since: the old runs are another experiment
            d = cfg.hashed_dict()
            d.pop(entry["without"], None)
            out[hash_of(d)] = f"hash without {entry['without']} (before {entry['since']}; constants unchanged)"
        return out


def hash_of(hashed: Mapping[str, Any]) -> str:
    """The config hash of a ``hashed_dict``: :meth:`ExperimentConfig.config_hash`'s formula (a test
    checks that both agree)."""
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


__all__ = [
    "DeclarationError",
    "Declaration",
    "Table",
    "Run",
    "Comparison",
    "SupportStudy",
    "RerunFold",
    "Analysis",
    "LeftOut",
    "BookScope",
    "hash_of",
]

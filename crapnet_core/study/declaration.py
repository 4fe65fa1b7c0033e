"""The study as data: load and validate ``study.yaml`` into its entries (:mod:`crapnet_core.study.entries`).

``crapnet_core/study/study.yaml`` declares every table the project reports (dataset, setting,
method or variant with its overrides, profile, folds, training seeds, budget curve, family, page),
the paired comparisons between tables, the extra evaluations (support choice, k-shot), the rerun
sample, the one-off analyses and what the book trains at each profile. :func:`load_declaration`
reads it and checks every entry against the library (method registry and names of
:mod:`crapnet_core.facts`, profiles, config overrides via :func:`~crapnet_core.engine.experiment.make_config`,
the variant the overrides make); a bad entry is one :class:`DeclarationError` naming it.

:meth:`Table.runs` expands a table into its runs: one per seed, fold and test group, each with
its :class:`~crapnet_core.engine.experiment.ExperimentConfig` (runtime settings included) and the
name of its result folder ``results/<table>/seed<s>/<run_name>/``. Tables at a profile the engine
does not define yet (``pending_profiles``) are validated against the profile they are based on
and expand to runs without a config (``Run.pending`` says why).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..facts import DATASET_TITLES, METHODS, PROFILES, RUN_PROFILES, SETTINGS
from .entries import (  # re-exported: the declaration's entries, as load_declaration returns them
    Analysis,
    BookScope,
    Comparison,
    Declaration,
    DeclarationError,
    LeftOut,
    RerunFold,
    Run,
    SupportStudy,
    Table,
    hash_of,
)

#: The packaged declaration.
DECLARATION = Path(__file__).with_name("study.yaml")

#: Comparison modes: ``common`` = seed aggregates when both tables have the same seeds, else seed 0
#: of each; ``seed0`` = seed 0 of both (file name ends in ``_seed0``).
COMPARE_ON = ("common", "seed0")
#: Extra evaluations of fold models (issue 22) and the file each writes next to metrics.json.
#: (the names of :data:`crapnet_core.engine.support.SENSITIVITY_FILE` and ``KSHOT_FILE``, written here so that
#: reading the declaration imports no torch; a test checks they agree.)
SUPPORT_KINDS = {"support": "support_sensitivity.json", "kshot": "kshot.json"}
#: The one-off analyses' functions: modules of :mod:`crapnet_core.study.analyses`.
ANALYSIS_FUNCTIONS = ("select_lite", "rpnet_iterations", "rpnet_batch_stats", "diagnose_runs")
#: What the results page of a book profile does with the profile's tables.
BOOK_RESULTS = ("train", "committed")
#: Fields of a ``left_out`` item of the book section, besides ``why``.
LEFT_OUT_KEYS = ("methods", "settings", "folds", "datasets", "points", "variants")

_TOP = {
    "version",
    "pages",
    "pending_profiles",
    "runtime",
    "legacy_hashes",
    "defaults",
    "tables",
    "support_studies",
    "rerun_check",
    "analyses",
    "book",
}
_TABLE = {
    "name",
    "label",
    "dataset",
    "setting",
    "method",
    "variant",
    "overrides",
    "profile",
    "folds",
    "seeds",
    "page",
    "priority",
    "seed_priority",
    "budget",
    "budget_priority",
    "summary",
}
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


# ---------------------------------------------------------------------------- loading
def _expand(entry: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """An entry with ``grid: {k: [values]}``: one copy per combination, ``{k}`` in strings replaced."""
    if not isinstance(entry, Mapping):
        raise DeclarationError(f"{where}: expected a mapping, got {entry!r}")
    if "grid" not in entry:
        return [dict(entry)]
    grid = entry["grid"]
    if not isinstance(grid, Mapping) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise DeclarationError(f"{where}: grid must map names to non-empty lists, got {grid!r}")
    body = {k: v for k, v in entry.items() if k != "grid"}
    out = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))

        def fill(obj, values=values):
            if isinstance(obj, str):
                try:
                    text = obj.format(**values)
                except (KeyError, IndexError) as err:
                    raise DeclarationError(f"{where}: {obj!r} names {err} which is not in its grid") from None
                return int(text) if obj.startswith("{") and obj.endswith("}") and text.lstrip("-").isdigit() else text
            if isinstance(obj, list):
                return [fill(v) for v in obj]
            if isinstance(obj, Mapping):
                return {k: fill(v) for k, v in obj.items()}
            return obj

        out.append(fill(body))
    return out


def _one_of(value: Any, known: Iterable[Any], what: str, kind: str) -> Any:
    """``value`` when it is one of ``known``; else one :class:`DeclarationError` naming the entry:
    ``"<what>: <kind> <value!r> is not one of <known, ...>"``."""
    known = list(known)
    if value not in known:
        raise DeclarationError(f"{what}: {kind} {value!r} is not one of {', '.join(map(str, known))}")
    return value


def _declared(name: Any, tables: Mapping[str, Any], what: str, in_file: str = "") -> Any:
    """The declared table ``name``; else one :class:`DeclarationError`: ``"<what>: no table <name!r> is
    declared"`` (then ``" in <in_file>"`` when given)."""
    if name not in tables:
        raise DeclarationError(f"{what}: no table {name!r} is declared" + (f" in {in_file}" if in_file else ""))
    return tables[name]


def _ints(value: Any, what: str, lo: int = 0) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or v < lo for v in value)
    ):
        raise DeclarationError(f"{what}: expected a non-empty list of integers >= {lo}, got {value!r}")
    if len(set(value)) != len(value):
        raise DeclarationError(f"{what}: a value is given twice in {value!r}")
    return tuple(value)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise DeclarationError(f"{what}: expected a list of strings, got {value!r}")
    return tuple(value)


def _table(d: dict[str, Any], decl: dict[str, Any]) -> Table:
    from ..engine.experiment import RUNTIME_FIELDS, make_config

    name = d.get("name")
    if not isinstance(name, str) or not _SAFE.fullmatch(name):
        raise DeclarationError(f"table {name!r}: a table needs a name usable as a folder name")
    what = f"table {name}"
    unknown = sorted(set(d) - _TABLE)
    if unknown:
        raise DeclarationError(f"{what}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_TABLE))}")
    defaults = decl.get("defaults") or {}
    get = lambda k: d.get(k, defaults.get(k))  # noqa: E731
    dataset, method, profile = d.get("dataset"), d.get("method"), d.get("profile")
    _one_of(dataset, DATASET_TITLES, what, "dataset")
    try:
        setting = int(d.get("setting"))
    except (TypeError, ValueError):
        setting = None
    if setting not in SETTINGS:
        _one_of(d.get("setting"), SETTINGS, what, "setting")  # the value as declared, in the error
    _one_of(method, METHODS, what, "method")
    pending_profiles = decl.get("pending_profiles") or {}
    if profile not in RUN_PROFILES and profile not in pending_profiles:
        raise DeclarationError(
            f"{what}: profile {profile!r} is not one of {', '.join(RUN_PROFILES)} "
            f"(nor a pending profile: {', '.join(pending_profiles) or 'none'})"
        )
    pending = based_on = None
    if profile in pending_profiles:
        pending = f"profile {profile} is not defined yet: {' '.join(pending_profiles[profile]['why'].split())}"
        based_on = pending_profiles[profile]["based_on"]
    overrides = _strings(d.get("overrides"), f"{what}: overrides")
    runtime = _strings((decl.get("runtime") or {}).get(profile, []), f"runtime of profile {profile}")
    for o in overrides:
        key = o.split("=", 1)[0].strip()
        section, _, fname = key.partition(".")
        if fname in RUNTIME_FIELDS.get(section, ()) or key == "train.seed":
            raise DeclarationError(
                f"{what}: override {o!r} is not part of the config hash; seeds go in `seeds`, "
                "runtime settings in `runtime`"
            )
    folds = _ints(get("folds"), f"{what}: folds")
    seeds = _ints(get("seeds"), f"{what}: seeds")
    try:
        cfg = make_config(based_on or profile, dataset, setting, folds[0], method, [*overrides, *runtime])
        plain = make_config(based_on or profile, dataset, setting, folds[0], method, list(overrides))
    except (ValueError, TypeError) as err:
        raise DeclarationError(f"{what}: {err}") from None
    if cfg.config_hash() != plain.config_hash():
        raise DeclarationError(
            f"{what}: the runtime settings of profile {profile} {list(runtime)} change the config "
            "hash; only runtime-only fields belong there"
        )
    bad_folds = [f for f in folds if not 0 <= f < cfg.data.n_folds]
    if bad_folds:
        raise DeclarationError(f"{what}: folds {bad_folds} are out of range 0..{cfg.data.n_folds - 1}")
    made = cfg.model.variant_name()
    variant = d.get("variant", method)
    if variant != made:
        raise DeclarationError(
            f"{what}: variant {variant!r} is not what its method and overrides make ({made!r}); "
            f"declare `variant: {made}`"
            if made != method
            else f"{what}: variant {variant!r} is not what its method and overrides make ({made!r})"
        )
    family = None  # set from the comparisons that name the table (_families)
    page = d.get("page")
    _one_of(page, decl.get("pages") or {}, what, "page")
    budget = d.get("budget")
    if budget is not None and budget != "all":
        budget = _ints(budget, f"{what}: budget", lo=1)
        too_long = [b for b in budget if b > cfg.train.steps]
        if too_long:
            raise DeclarationError(f"{what}: budget steps {too_long} exceed the run's {cfg.train.steps} steps")
    summary = d.get("summary", True)
    if not isinstance(summary, bool):
        raise DeclarationError(f"{what}: summary must be true or false, got {summary!r}")
    prio = {}
    for key in ("priority", "seed_priority", "budget_priority"):
        value = get(key) if key == "priority" else d.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise DeclarationError(f"{what}: {key} must be an integer, got {value!r}")
        prio[key] = value
    from ..facts import METHOD_LABELS

    label = d.get("label") or (METHOD_LABELS[method] if variant == method else f"{METHOD_LABELS[method]} ({variant})")
    if not isinstance(label, str):
        raise DeclarationError(f"{what}: label must be text, got {label!r}")
    return Table(
        name,
        dataset,
        setting,
        method,
        variant,
        overrides,
        profile,
        folds,
        seeds,
        family,
        page,
        int(prio["priority"] or 0),
        prio["seed_priority"],
        budget if budget in (None, "all") else tuple(budget),
        prio["budget_priority"],
        summary,
        runtime,
        pending,
        based_on,
        label,
    )


def _comparison_name(a: Table, b: Table, on: str) -> str:
    strip = f"_{a.profile}"
    base_a = a.name[: -len(strip)] if a.name.endswith(strip) else a.name
    base_b = b.name[: -len(strip)] if b.name.endswith(strip) else b.name
    prefix = f"{b.dataset}_setting{b.setting}_"
    short_b = base_b[len(prefix) :] if base_b.startswith(prefix) else base_b
    return (
        f"{base_a}_vs_{short_b}"
        + ("_seed0" if on == "seed0" else "")
        + ("" if a.profile == "lite" else f"_{a.profile}")
    )


def _book(profile: str, d: Any, tables: Mapping[str, Table]) -> BookScope:
    what = f"book.{profile}"
    if profile not in PROFILES:
        raise DeclarationError(f"{what}: {profile!r} is not a book profile ({', '.join(PROFILES)})")
    if not isinstance(d, Mapping):
        raise DeclarationError(f"{what}: expected a mapping")
    unknown = sorted(set(d) - {"one_fold", "ablation_folds", "results", "left_out"})
    if unknown:
        raise DeclarationError(f"{what}: unknown field(s) {', '.join(unknown)}")
    one = dict(d.get("one_fold") or {})
    if set(one) - {"datasets", "folds", "settings", "methods"}:
        raise DeclarationError(
            f"{what}.one_fold: unknown field(s) {sorted(set(one) - {'datasets', 'folds', 'settings', 'methods'})}"
        )
    if one.get("datasets") not in ("main", "all"):
        raise DeclarationError(f"{what}.one_fold.datasets: expected main or all, got {one.get('datasets')!r}")
    one["folds"] = _ints(one.get("folds"), f"{what}.one_fold.folds")
    one["settings"] = _ints(one.get("settings"), f"{what}.one_fold.settings", lo=1)
    one["methods"] = _strings(one.get("methods"), f"{what}.one_fold.methods")
    for m in one["methods"]:
        _one_of(m, METHODS, f"{what}.one_fold", "method")
    if d.get("results") not in BOOK_RESULTS:
        raise DeclarationError(f"{what}.results: expected one of {', '.join(BOOK_RESULTS)}, got {d.get('results')!r}")
    left = []
    for i, item in enumerate(d.get("left_out") or []):
        w = f"{what}.left_out[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("why"), str) or not item["why"].strip():
            raise DeclarationError(f"{w}: each item needs a `why`")
        unknown = sorted(set(item) - {"why", *LEFT_OUT_KEYS})
        if unknown:
            raise DeclarationError(
                f"{w}: unknown field(s) {', '.join(unknown)}; known: why, {', '.join(LEFT_OUT_KEYS)}"
            )
        methods = _strings(item.get("methods"), f"{w}.methods")
        for m in methods:
            _one_of(m, METHODS, w, "method")
        datasets = _strings(item.get("datasets"), f"{w}.datasets")
        for ds in datasets:
            _one_of(ds, DATASET_TITLES, w, "dataset")
        points = {}
        for axis, values in (item.get("points") or {}).items():
            if axis not in ("blocks", "branches"):
                raise DeclarationError(f"{w}.points: axis {axis!r} is not blocks or branches")
            points[axis] = _ints(values, f"{w}.points.{axis}", lo=1)
        variants = _strings(item.get("variants"), f"{w}.variants")
        known_variants = {t.variant for t in tables.values()}
        for v in variants:
            if v not in known_variants:
                raise DeclarationError(f"{w}: variant {v!r} is no declared table's variant")
        settings = _ints(item["settings"], f"{w}.settings", lo=1) if "settings" in item else ()
        folds = _ints(item["folds"], f"{w}.folds") if "folds" in item else ()
        if not (methods or datasets or points or variants or settings or folds):
            raise DeclarationError(f"{w}: name what is left out ({', '.join(LEFT_OUT_KEYS)})")
        left.append(LeftOut(" ".join(item["why"].split()), methods, settings, folds, datasets, points, variants))
    abl = _ints(d.get("ablation_folds"), f"{what}.ablation_folds")
    return BookScope(profile, one, abl, d["results"], tuple(left))


def _families(tables: Mapping[str, Table], path: str) -> tuple[dict[str, str], list[Comparison]]:
    """The families of comparisons and their pairs, as the decision rule declares them
    (:data:`crapnet_core.engine.decision.FAMILIES`, fixed before the comparisons were computed),
    checked against the declared tables: a pair must name declared tables of one dataset, setting
    and profile (the same test scans)."""
    from ..engine.decision import FAMILIES

    families, comparisons = {}, []
    for fam in FAMILIES:
        families[fam.key] = fam.title
        for c in fam.comparisons:
            what = f"family {fam.key} of crapnet_core/engine/decision.py: comparison {c.key}"
            for n in (c.a, c.b):
                _declared(n, tables, what, in_file=path)
            a, b = tables[c.a], tables[c.b]
            if (a.dataset, a.setting, a.profile) != (b.dataset, b.setting, b.profile):
                raise DeclarationError(
                    f"{what}: the tables differ in dataset, setting or profile; a paired "
                    "comparison needs the same test scans"
                )
            on = "seed0" if c.seeds == (0,) else "common"
            if any(s not in a.seeds or s not in b.seeds for s in (c.seeds or ())):
                raise DeclarationError(f"{what}: seeds {c.seeds} are not declared for both tables")
            comparisons.append(Comparison(c.a, c.b, fam.key, on, _comparison_name(a, b, on)))
    return families, comparisons


def parse_declaration(data: Any, path: str = "<declaration>") -> Declaration:
    """Validate the parsed YAML ``data`` (see :func:`load_declaration`)."""
    if not isinstance(data, Mapping):
        raise DeclarationError(f"{path}: expected a mapping at the top")
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise DeclarationError(f"{path}: unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP))}")
    if data.get("version") != 1:
        raise DeclarationError(f"{path}: version {data.get('version')!r} is not 1")
    for name, spec in (data.get("pending_profiles") or {}).items():
        if name in RUN_PROFILES:
            raise DeclarationError(
                f"{path}: pending profile {name!r} is defined by the engine now "
                f"({', '.join(RUN_PROFILES)}): remove it from pending_profiles"
            )
        if not isinstance(spec, Mapping) or spec.get("based_on") not in RUN_PROFILES or not spec.get("why"):
            raise DeclarationError(
                f"{path}: pending profile {name!r} needs `based_on` (one of {', '.join(RUN_PROFILES)}) and `why`"
            )
    for profile in data.get("runtime") or {}:
        if profile not in RUN_PROFILES and profile not in (data.get("pending_profiles") or {}):
            raise DeclarationError(f"{path}: runtime: {profile!r} is not a profile")
    tables: dict[str, Table] = {}
    for i, raw in enumerate(data.get("tables") or []):
        for entry in _expand(raw, f"tables[{i}]"):
            t = _table(entry, data)
            if t.name in tables:
                raise DeclarationError(f"table {t.name}: declared twice")
            tables[t.name] = t
    families, comparisons = _families(tables, path)
    for c in comparisons:
        for n in (c.a, c.b):
            if tables[n].family is None:
                tables[n] = dataclasses.replace(tables[n], family=c.family)

    pages = dict(data.get("pages") or {})
    studies = []
    for i, raw in enumerate(data.get("support_studies") or []):
        for e in _expand(raw, f"support_studies[{i}]"):
            what = f"support study {e.get('name')!r}"
            ts = _strings(e.get("tables"), f"{what}: tables")
            for t in ts:
                _declared(t, tables, what)
            kinds = _strings(e.get("kinds"), f"{what}: kinds")
            for k in kinds:
                _one_of(k, SUPPORT_KINDS, what, "kind")
            _one_of(e.get("page"), pages, what, "page")
            unknown = sorted(set(e) - {"name", "tables", "seeds", "kinds", "shots", "page", "priority"})
            if unknown:
                raise DeclarationError(f"{what}: unknown field(s) {', '.join(unknown)}")
            priority = e.get("priority")
            if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
                raise DeclarationError(f"{what}: priority must be an integer, got {priority!r}")
            studies.append(
                SupportStudy(
                    str(e["name"]),
                    ts,
                    _ints(e.get("seeds"), f"{what}: seeds"),
                    kinds,
                    _ints(e.get("shots"), f"{what}: shots", lo=1),
                    e["page"],
                    priority,
                )
            )
    rerun = []
    for i, raw in enumerate(data.get("rerun_check") or []):
        for e in _expand(raw, f"rerun_check[{i}]"):
            what = f"rerun_check {e!r}"
            t = _declared(e.get("table"), tables, what)
            if e.get("seed") not in t.seeds or e.get("fold") not in t.folds:
                raise DeclarationError(
                    f"{what}: seed {e.get('seed')!r} / fold {e.get('fold')!r} is not a run of {t.name}"
                )
            rerun.append(RerunFold(t.name, int(e["seed"]), int(e["fold"])))
    analyses = {}
    for name, e in (data.get("analyses") or {}).items():
        what = f"analysis {name}"
        if not isinstance(e, Mapping) or e.get("function") not in ANALYSIS_FUNCTIONS:
            raise DeclarationError(
                f"{what}: function {None if not isinstance(e, Mapping) else e.get('function')!r} "
                f"is not one of {', '.join(ANALYSIS_FUNCTIONS)}"
            )
        if e.get("table") is not None:
            _declared(e["table"], tables, what)
        _one_of(e.get("page"), pages, what, "page")
        out = str(e.get("out", ""))
        if not out.startswith("results/") or ".." in Path(out).parts:
            raise DeclarationError(f"{what}: out {out!r} must be a folder under results/")
        analyses[name] = Analysis(name, e["function"], out, e["page"], e.get("table"))
    book = {p: _book(p, d, tables) for p, d in (data.get("book") or {}).items()}
    missing = [p for p in PROFILES if p not in book]
    if missing:
        raise DeclarationError(f"{path}: book: no entry for profile(s) {', '.join(missing)}")
    legacy = []
    for i, e in enumerate(data.get("legacy_hashes") or []):
        if (
            not isinstance(e, Mapping)
            or not isinstance(e.get("without"), str)
            or not isinstance(e.get("constants"), Mapping)
        ):
            raise DeclarationError(f"legacy_hashes[{i}]: needs `without`, `since` and `constants`")
        for m in e["constants"]:
            _one_of(m, METHODS, f"legacy_hashes[{i}]", "method")
        legacy.append(dict(e))
    return Declaration(
        path,
        families,
        pages,
        dict(data.get("pending_profiles") or {}),
        tables,
        tuple(comparisons),
        tuple(studies),
        tuple(rerun),
        analyses,
        book,
        tuple(legacy),
    )


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> Declaration:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no study declaration there") from None
    except yaml.YAMLError as err:
        raise DeclarationError(f"{path}: not valid YAML ({err})") from None
    return parse_declaration(data, path)


def load_declaration(path: str | os.PathLike | None = None) -> Declaration:
    """The validated study declaration (default: the packaged ``study.yaml``; cached per file version).

    Errors: :class:`DeclarationError` naming the first invalid entry; FileNotFoundError.
    """
    p = Path(path or DECLARATION).resolve()
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no study declaration there")
    return _load(str(p), p.stat().st_mtime)


__all__ = [
    "DECLARATION",
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
    "load_declaration",
    "parse_declaration",
    "hash_of",
    "COMPARE_ON",
    "SUPPORT_KINDS",
]

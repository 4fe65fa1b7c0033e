"""The per-run results layout: ``results/<table>/seed<s>/<run_name>/`` and what is made from it.

A finished run of a declared table is committed as one small folder (``<run_name>`` =
``ExperimentConfig.run_name()``, coordinates + config hash)::

    config.json     the run's config (ExperimentConfig.save, with config_hash)
    metrics.json    `crapnet evaluate`'s output for the test split (no prediction volumes)
    run_info.json   command, started_utc, wall_seconds, train_seconds, commit, machine, environment
    budget.json     optional: test Dice at the declared checkpoints (budget curve)

From these folders come ``results/<table>/seed<s>/summary.{json,md}`` (:func:`write_seed_summary`,
the layout of ``crapnet cross-validate``'s summary) and the seed aggregate
``results/<table>/summary.{json,md}`` (:func:`write_table_summary`). A folder appears at once or
not at all (:func:`publish_run` renames a complete temporary folder into place).

:func:`run_state` says, for each declared run, whether it is **done** (a folder at a config hash the
declaration produces, or at an accepted older hash: :meth:`Declaration.accepted_hashes`), **missing**,
**stale** (only folders at other hashes: never reused) or **pending** (its profile is not defined
yet). :func:`migrate_table` turns a table committed before this layout (``seed<s>/summary.json``
only) into per-run folders derived from the summary's per-fold entries, without retraining.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.metrics import json_number, nanmean
from ..io import read_json, write_json, write_text
from .entries import Declaration, Run, Table

#: The files of a run's result folder (``budget.json`` only where the table declares a budget curve).
RUN_FILES = ("config.json", "metrics.json", "run_info.json")
BUDGET_FILE = "budget.json"
#: Marks a per-run record derived from a summary by :func:`migrate_table` (in metrics.json).
DERIVED = "derived"


def seed_dir(results_dir: str | os.PathLike, table: str, seed: int) -> Path:
    return Path(results_dir) / table / f"seed{int(seed)}"


def result_dir(results_dir: str | os.PathLike, run: Run, folder: str | None = None) -> Path:
    """Where the result folder of ``run`` is (``folder``: an accepted older name instead of run.folder)."""
    return seed_dir(results_dir, run.table, run.seed) / (folder or run.folder)


# ---------------------------------------------------------------------------- state
@dataclass(frozen=True)
class RunState:
    """The state of one declared run in a results folder (see :func:`run_state`)."""

    run: Run
    status: str  # done | missing | stale | pending
    folder: str | None  # the folder that holds it (done), or the stale folder(s), comma-separated
    why: str = ""

    def line(self) -> str:
        where = self.run.where() if self.status != "done" else f"{self.run.table}/seed{self.run.seed}/{self.folder}"
        return f"{self.status:8s} {where}" + (f"  ({self.why})" if self.why else "")


def _budget_steps(folder: Path) -> set[int]:
    try:
        return {int(p["step"]) for p in json.loads((folder / BUDGET_FILE).read_text()).get("points", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _complete(folder: Path, table: Table) -> bool:
    """Every file of the run's result folder is there (a budget curve: with every declared step)."""
    needed = [*RUN_FILES] + ([BUDGET_FILE] if table.budget is not None else [])
    if not all((folder / f).is_file() for f in needed):
        return False
    return table.budget in (None, "all") or set(table.budget) <= _budget_steps(folder)


def _same_test_group(folder: Path, run: Run) -> bool:
    """Whether the result ``folder`` (same name prefix, another hash) holds ``run``'s test group. The
    prefix does not name the group in setting 1 (``all``), where a supervised method trains one model
    per test group: a folder of the other group is that run's result, not a stale version of this one.
    A folder without a config holds no result (a run the workflow is writing, or one it stopped): not a
    stale version of anything. One whose config cannot be read counts as the same group (reported as
    stale, for a person to look at)."""
    if not (folder / "config.json").exists():
        return False
    try:
        saved = json.loads((folder / "config.json").read_text())["data"]["test_group"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return saved is None or set(saved) == set(run.config.data.test_group)


def run_state(decl: Declaration, run: Run, results_dir: str | os.PathLike) -> RunState:
    """done / missing / stale / pending of ``run`` under ``results_dir`` (see the module docstring)."""
    if run.pending:
        return RunState(run, "pending", None, run.pending)
    table = decl.tables[run.table]
    sdir = seed_dir(results_dir, run.table, run.seed)
    accepted = decl.accepted_hashes(run.config)
    others = []
    for h, why in accepted.items():
        folder = sdir / f"{run.prefix}_{h}"
        if folder.is_dir():
            if _complete(folder, table):
                return RunState(run, "done", folder.name, "" if why == "current" else why)
            missing = [
                f
                for f in (*RUN_FILES, *([BUDGET_FILE] if table.budget is not None else []))
                if not (folder / f).is_file()
            ]
            if not any(folder.iterdir()):  # the empty folder the workflow makes before a run's job starts
                continue  # (an older accepted hash may still hold the run)
            if not missing:
                steps = sorted(set(table.budget) - _budget_steps(folder))
                missing = [f"budget steps {', '.join(map(str, steps))}"]
            return RunState(run, "missing", folder.name, f"incomplete: no {', '.join(missing)}")
    if sdir.is_dir():
        others = sorted(
            p.name
            for p in sdir.iterdir()
            if p.is_dir()
            and p.name.startswith(run.prefix + "_")
            and len(p.name) == len(run.prefix) + 13
            and p.name.rsplit("_", 1)[1] not in accepted  # an accepted hash's (empty) folder is not stale
            and _same_test_group(p, run)
        )
    if others:
        return RunState(
            run,
            "stale",
            ", ".join(others),
            f"committed at hash {', '.join(o.rsplit('_', 1)[1] for o in others)}; the declaration now gives "
            f"{run.hash}: rerun it (`crapnet study run --tables {run.table}`), then delete the stale folder",
        )
    return RunState(run, "missing", None)


def output_folder(decl: Declaration, run: Run, results_dir: str | os.PathLike) -> str:
    """The result folder name the workflow makes for ``run``: an existing accepted folder (done),
    else the current ``run.folder``."""
    state = run_state(decl, run, results_dir)
    return state.folder if state.status == "done" else run.folder


def undeclared(decl: Declaration, results_dir: str | os.PathLike, tables: Iterable[Table]) -> list[str]:
    """Folders under the tables' seed folders that no declared run names (stale by construction)."""
    out = []
    for table in tables:
        known = {}
        for run in table.runs():
            if run.config is not None:
                known.setdefault(run.seed, set()).update(f"{run.prefix}_{h}" for h in decl.accepted_hashes(run.config))
        tdir = Path(results_dir) / table.name
        if not tdir.is_dir() or table.pending:
            continue
        for sdir in sorted(tdir.glob("seed*")):
            try:
                seed = int(sdir.name[4:])
            except ValueError:
                continue
            if seed not in table.seeds:
                out.append(f"{table.name}/{sdir.name}: seed {seed} is not declared for this table")
                continue
            prefixes = {r.prefix for r in table.runs() if r.seed == seed}
            for d in sorted(p for p in sdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                if d.name not in known.get(seed, set()) and not any(d.name.startswith(p + "_") for p in prefixes):
                    out.append(f"{table.name}/{sdir.name}/{d.name}: no declared run has this name")
    return out


def states(decl: Declaration, results_dir: str | os.PathLike, tables: Iterable[Table]) -> list[RunState]:
    return [run_state(decl, r, results_dir) for t in tables for r in t.runs()]


def undeclared_tables(decl: Declaration, results_dir: str | os.PathLike) -> list[str]:
    """Folders of ``results_dir`` laid out as a table (``seed<k>/`` inside) that the declaration does not
    name: made outside the declared study (e.g. by a runner at another branch's code); never read by it."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and d.name not in decl.tables and any(s.is_dir() for s in d.glob("seed[0-9]*"))
    )


def training_progress(run: Run, runs_dir: str | os.PathLike | None) -> str | None:
    """``training: step 9000 of 20000`` when ``runs_dir`` holds an unfinished training of ``run`` (its
    newest step checkpoint), ``trained, not yet published`` when the training is done but its result folder
    is not written; None when ``runs_dir`` holds nothing of it. Only file names are read."""
    if runs_dir is None:
        return None
    from ..engine.run_folder import training_progress as progress_of
    from ..engine.runs import run_dir_for

    progress = progress_of(run_dir_for(run.config, runs_dir))
    if progress is None:
        return None
    if progress.trained:
        return "trained, not yet published"
    return f"training: step {progress.step} of {run.config.train.steps}" if progress.step else None


def status_report(
    decl: Declaration,
    results_dir: str | os.PathLike,
    tables: Sequence[Table],
    verbose: bool = False,
    runs_dir: str | os.PathLike | None = None,
) -> str:
    """The text of ``crapnet study status``: totals per profile, per table done / missing / stale / pending
    counts, one line per run that is stale or missing from a table begun or in training under ``runs_dir``
    (every run with ``verbose``; a missing run's training progress, :func:`training_progress`), and the
    folders no declared run names."""
    rows = states(decl, results_dir, tables)
    by_table: dict[str, list[RunState]] = {}
    for s in rows:
        by_table.setdefault(s.run.table, []).append(s)
    lines = []
    totals: dict[str, dict[str, int]] = {}
    for table in tables:
        mine = by_table.get(table.name, [])
        counts = {k: sum(s.status == k for s in mine) for k in ("done", "missing", "stale", "pending")}
        prof = totals.setdefault(table.profile, dict.fromkeys(counts, 0))
        for k, v in counts.items():
            prof[k] += v
        legacy = sum(1 for s in mine if s.status == "done" and s.why)
        shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        note = f"; {legacy} at an accepted older hash" if legacy else ""
        lines.append(f"{table.name:42s} {table.profile:9s} {len(mine):3d} runs: {shown or 'none'}{note}")
        partial = counts["done"] or counts["stale"]  # a table with nothing done: one line says it
        for s in mine:
            progress = training_progress(s.run, runs_dir) if s.status == "missing" else None
            if verbose or s.status == "stale" or (s.status == "missing" and (partial or progress)):
                lines.append("    " + s.line() + (f"  [{progress}]" if progress else ""))
    extra = undeclared(decl, results_dir, tables)
    head = ["Totals per profile (runs):"]
    for profile, c in totals.items():
        head.append(f"  {profile:9s} " + ", ".join(f"{v} {k}" for k, v in c.items()))
    for profile in dict.fromkeys(t.profile for t in tables if t.pending):
        why = next(t.pending for t in tables if t.profile == profile and t.pending)
        head.append(f"  pending: {why}")
    if extra:
        lines += ["", "Stale folders that no declared run names (never read; delete or declare them):"]
        lines += [f"    {x}" for x in extra]
    if {t.name for t in tables} == set(decl.tables):  # the whole study: tables it does not declare
        other = undeclared_tables(decl, results_dir)
        if other:
            lines += [
                "",
                "Result tables the declaration does not name (not part of the study; declare them to use them):",
            ]
            lines += [
                f"    {x}: {sum(1 for r in (Path(results_dir) / x).glob('seed*/*/metrics.json'))} run folder(s)"
                for x in other
            ]
    return "\n".join(head + [""] + lines) + "\n"


# ---------------------------------------------------------------------------- writing
def publish_run(dest: Path, files: Mapping[str, Any]) -> Path:
    """Make the result folder ``dest`` holding ``files`` (name -> dict written as JSON, or a Path copied)
    atomically: everything is written into a temporary sibling folder that is then renamed into place;
    an existing ``dest`` (an empty folder made by the workflow, or an earlier copy) is replaced."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, content in files.items():
            if isinstance(content, (str, os.PathLike)):
                shutil.copyfile(content, tmp / name)
            else:
                write_json(tmp / name, content)
        old = None
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def result_metrics(metrics: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """``metrics.json`` of a run as the result folder keeps it: paths of the building machine made
    relative to the run folder (the checkpoint)."""
    out = dict(metrics)
    ckpt = out.get("checkpoint")
    if ckpt:
        try:
            out["checkpoint"] = str(Path(ckpt).resolve().relative_to(Path(run_dir).resolve()))
        except ValueError:
            out["checkpoint"] = Path(ckpt).name
    return out


def _train_seconds_of(folder: Path) -> float | None:
    try:
        return json.loads((folder / "run_info.json").read_text()).get("train_seconds")
    except (OSError, json.JSONDecodeError):
        return None


def seed_summary(decl: Declaration, table: Table, seed: int, results_dir: str | os.PathLike) -> dict[str, Any]:
    """The cross-validation summary of one seed of ``table``, made from its result folders (every
    declared run must be done; ValueError naming the missing ones)."""
    from ..engine.runs import summarize_runs

    folders, missing = [], []
    for run in table.runs():
        if run.seed != seed:
            continue
        state = run_state(decl, run, results_dir)
        if state.status != "done":
            missing.append(f"{run.where()} ({state.status})")
        else:
            folders.append(seed_dir(results_dir, table.name, seed) / state.folder)
    if missing:
        raise ValueError(f"{table.name} seed {seed}: not every run is done: {'; '.join(missing)}")
    summary = summarize_runs(
        folders,
        dataset=table.dataset,
        setting=table.setting,
        method=table.method,
        profile=table.profile,
        train_seconds_of=_train_seconds_of,
    )
    summary["variant"] = table.variant
    summary["overrides"] = [*table.runtime, *table.overrides, *([f"train.seed={seed}"] if seed else [])]
    summary["table"] = table.name
    summary["seed"] = seed
    return summary


def write_seed_summary(decl: Declaration, table: Table, seed: int, results_dir: str | os.PathLike) -> Path:
    from ..engine.runs import summary_markdown

    summary = seed_summary(decl, table, seed, results_dir)
    out = seed_dir(results_dir, table.name, seed)
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", summary_markdown(summary))
    return out / "summary.json"


def write_table_summary(table: Table, results_dir: str | os.PathLike) -> Path:
    """``results/<table>/summary.{json,md}``: the one seed's summary, or the aggregate over the declared
    seeds (:func:`crapnet_core.engine.stats.aggregate_seeds`: per-scan Dice averaged over seeds, std
    over seeds and over folds). ValueError naming a missing or inconsistent seed summary."""
    from ..engine.runs import summary_markdown
    from ..engine.stats import aggregate_seeds

    folder = Path(results_dir) / table.name
    summaries = {}
    for seed in table.seeds:
        path = folder / f"seed{seed}" / "summary.json"
        if not path.is_file():
            raise ValueError(f"{path}: missing; the seed's runs are not all done")
        summaries[seed] = read_json(path)
    if len(summaries) == 1:
        (summary,) = summaries.values()
    else:
        try:
            summary = aggregate_seeds(summaries)
        except ValueError as err:
            raise ValueError(f"{folder}: {err}") from None
        summary["overrides"] = next(iter(summaries.values())).get("overrides", [])
    write_json(folder / "summary.json", summary)
    write_text(folder / "summary.md", summary_markdown(summary))
    return folder / "summary.json"


# ---------------------------------------------------------------------------- migration
def _derived_metrics(run: Run, entry: Mapping[str, Any], source: str, seconds: float | None) -> dict[str, Any]:
    """A ``metrics.json`` for one run, from the per-fold entry of a summary (what the summary kept)."""
    cfg = run.config
    organs = [o for o in cfg.data.test_group if o in entry["dice"]]
    per_scan = {o: {sid: {"dice": d} for sid, d in entry.get("per_scan", {}).get(o, {}).items()} for o in organs}
    per_organ = {
        o: {
            "dice_mean": entry["dice"].get(o),
            "dice_lcc_mean": (entry.get("dice_lcc") or {}).get(o),
            "hd95_mean": entry["hd95"].get(o),
            "asd_mean": entry["asd"].get(o),
            "n_scans": len(per_scan[o]),
        }
        for o in organs
    }
    support = {o: entry["support"][o] for o in organs if o in entry.get("support", {})}
    scan_ids = sorted({s["scan_id"] for s in support.values()})
    mean = {
        k: json_number(nanmean([per_organ[o][f"{k}_mean"] for o in organs]))
        for k in ("dice", "hd95", "asd", "dice_lcc")
    }
    return {
        "dataset": cfg.dataset_name(),
        "setting": cfg.data.setting,
        "fold": cfg.data.fold,
        "method": cfg.model.method,
        "variant": cfg.model.variant_name(),
        "profile": cfg.profile,
        "organs": organs,
        "split": "test",
        "test_scans": sorted({sid for o in organs for sid in per_scan[o]}, key=lambda s: (len(s), s)),
        "support": {
            "scan_id": scan_ids[0] if len(scan_ids) == 1 else scan_ids,
            "slices": {o: s["slices"] for o, s in support.items()},
        },
        "per_scan": per_scan,
        "per_organ": per_organ,
        "mean": mean,
        "units": {"dice": "fraction 0..1", "dice_lcc": "fraction 0..1", "hd95": "mm", "asd": "mm"},
        "seconds": seconds,
        "step": cfg.train.steps,
        "trained_steps": cfg.train.steps,
        DERIVED: {
            "from": source,
            "lost": "per-scan HD95/ASD/Dice after LCC, voxel counts, slice ranges, device "
            "(the summary did not keep them)",
        },
    }


def migrate_table(
    decl: Declaration, table: Table, results_dir: str | os.PathLike, legacy_root: str | None = None
) -> list[Path]:
    """Per-run folders for a table committed with ``seed<s>/summary.json`` only (no retraining).

    For each declared run, the per-fold entry of the seed's summary whose run names carry an accepted
    config hash of the run (:meth:`Declaration.accepted_hashes`) gives a derived ``metrics.json``
    (Dice, HD95, ASD per organ, per-scan Dice, support), the declaration gives ``config.json``, and the
    seed's ``run_info.json`` gives the provenance. A budget table (``budget.json`` at the table's top,
    the older layout) moves its curve into the run folder. Folders already there are kept. Returns the
    folders written. ValueError when the summary's run names carry no accepted hash (stale: rerun).
    """
    written = []
    root = Path(results_dir) / table.name
    for seed in table.seeds:
        sdir = root / f"seed{seed}"
        info_path = sdir / "run_info.json" if (sdir / "run_info.json").is_file() else root / "run_info.json"
        if not info_path.is_file():
            continue
        info = read_json(info_path)
        summary = read_json(sdir / "summary.json") if (sdir / "summary.json").is_file() else None
        budget = read_json(root / BUDGET_FILE) if (root / BUDGET_FILE).is_file() else None
        for run in table.runs():
            if run.seed != seed or run.config is None:
                continue
            accepted = decl.accepted_hashes(run.config)
            if run_state(decl, run, results_dir).status == "done":
                continue
            files: dict[str, Any] = {}
            cfg_json = run.config.to_dict()
            if summary is not None:
                entry = summary["per_fold"].get(str(run.fold))
                names = [] if entry is None else entry["runs"]
                hit = [n for n in names if n.rsplit("_", 1)[1] in accepted]  # the run's hash identifies it
                if not hit:
                    raise ValueError(
                        f"{sdir / 'summary.json'}: fold {run.fold} has no run at an accepted hash of "
                        f"{run.where()} ({', '.join(accepted)}); its runs: {', '.join(names) or 'none'}"
                    )
                committed_hash = hit[0].rsplit("_", 1)[1]
                one_run = len(names) == 1
                metrics = _derived_metrics(
                    run,
                    entry,
                    f"{table.name}/seed{seed}/summary.json per_fold[{run.fold}] (run {hit[0]})",
                    entry.get("eval_seconds") if one_run else None,
                )
                metrics["config_hash"] = committed_hash
                files["metrics.json"] = metrics
                train_s = entry.get("train_seconds") if one_run else None
                fold_totals = (
                    {}
                    if one_run
                    else {
                        "fold_train_seconds": entry.get("train_seconds"),
                        "fold_eval_seconds": entry.get("eval_seconds"),
                        "fold_runs": len(names),
                    }
                )
                fold_note = (
                    None
                    if one_run
                    else (
                        f"the summary kept only the fold's total over its {len(names)} test groups: "
                        f"{entry.get('train_seconds')} s training, {entry.get('eval_seconds')} s evaluation"
                    )
                )
            elif budget is not None and table.budget is not None:
                committed_hash = budget["config_hash"]
                if committed_hash not in accepted:
                    raise ValueError(
                        f"{root / BUDGET_FILE}: config hash {committed_hash} is not an accepted hash of "
                        f"{run.where()} ({', '.join(accepted)})"
                    )
                last = max(budget["points"], key=lambda p: p["step"])
                files[BUDGET_FILE] = root / BUDGET_FILE  # moved as it is (its `run` names the old run folder)
                organs = [o for o in budget["organs"]]
                files["metrics.json"] = {
                    "dataset": budget["dataset"],
                    "setting": budget["setting"],
                    "fold": budget["fold"],
                    "method": budget["method"],
                    "variant": run.config.model.variant_name(),
                    "profile": budget["profile"],
                    "config_hash": committed_hash,
                    "organs": organs,
                    "split": "test",
                    "per_scan": {o: {s: {"dice": d} for s, d in last["per_scan"].get(o, {}).items()} for o in organs},
                    "per_organ": {o: {"dice_mean": last["dice"].get(o)} for o in organs},
                    "mean": {"dice": last["dice"].get("mean")},
                    "step": last["step"],
                    "trained_steps": budget["trained_steps"],
                    "units": {"dice": "fraction 0..1"},
                    "seconds": last.get("seconds"),
                    DERIVED: {
                        "from": f"{table.name}/{BUDGET_FILE} point at step {last['step']} (the trained model)",
                        "lost": "HD95/ASD (the budget curve keeps Dice only)",
                    },
                }
                train_s, fold_note, fold_totals = None, None, {}
            else:
                continue
            cfg_json["config_hash"] = committed_hash
            files["config.json"] = cfg_json
            note = [
                f"migrated into the per-run layout from {info_path.relative_to(Path(results_dir))} and "
                + ("the seed's summary.json" if summary is not None else f"{table.name}/{BUDGET_FILE}")
                + " (no retraining); metrics.json is derived (see its `derived`)"
            ]
            if accepted[committed_hash] != "current":
                note.append(f"config hash {committed_hash}: {accepted[committed_hash]}")
            if fold_note:
                note.append(fold_note)
            if info.get("note"):
                note.append(f"original note: {info['note']}")
            command = info.get("command")
            if command and command.split()[-2:] == ["BUDGET", table.method]:
                # the old queue (results/run_study.sh) recorded its budget runs by the name of its function
                # budget(); these are the two commands that function ran
                command = (
                    f"{command.rsplit('BUDGET', 1)[0]}crapnet train --dataset {table.dataset} --setting "
                    f"{table.setting} --fold 0 --method {table.method} --profile lite --steps "
                    f"{run.config.train.steps} --set train.threads=1 --set train.checkpoint_every="
                    f"{run.config.train.checkpoint_every} --set train.keep_checkpoints="
                    f"{run.config.train.keep_checkpoints} --no-progress --out RUN && crapnet evaluate RUN "
                    f"--checkpoints {','.join(map(str, table.budget))} --no-progress"
                )
                note.append(f"the queue recorded the command as {info.get('command')!r}")
            files["run_info.json"] = {
                "command": command,
                "started_utc": info.get("started_utc"),
                "wall_seconds": info.get("wall_seconds"),
                "wall_seconds_scope": "the whole table (all folds) of this seed",
                "train_seconds": train_s,
                "commit": info.get("commit"),
                "machine": info.get("machine"),
                "environment": {"packages": {"torch": info.get("torch")}, "recorded": "torch only (before issue 25)"},
                **fold_totals,
                "encoder_init": info.get("encoder_init"),
                "profile": info.get("profile"),
                "note": "; ".join(note),
                "migrated": True,
            }
            dest = sdir / f"{run.prefix}_{committed_hash}"
            written.append(publish_run(dest, files))
    return written


__all__ = [
    "RUN_FILES",
    "BUDGET_FILE",
    "RunState",
    "seed_dir",
    "result_dir",
    "run_state",
    "output_folder",
    "states",
    "undeclared_tables",
    "status_report",
    "undeclared",
    "publish_run",
    "result_metrics",
    "seed_summary",
    "write_seed_summary",
    "write_table_summary",
    "migrate_table",
]

"""The rerun check: retrain a sample of committed folds here and compare their Dice (issue 25).

A committed number is only as good as its rerun. :func:`rerun_check` takes a sample of
committed folds (``TABLE:SEED:FOLD``, e.g. ``chaos_setting1_crapnet_lite:0:0``, as data:
the study declares it), rebuilds each fold's exact configs from the committed record and
checks that they give the committed config hashes, trains and evaluates them on this
machine and environment, and writes per fold the committed and the rerun Dice (per organ
and the organ mean) and their difference, with the environment of both where recorded.

Where a fold's committed record comes from:

- per-run layout (``results/<table>/seed<s>/<run_name>/config.json`` + ``metrics.json`` +
  ``run_info.json``): the config as it was saved, and the run's metrics and environment;
- the older ``lite`` tables (``results/<table>/seed<s>/summary.json`` only): the configs are
  made again from the summary's dataset, setting, method, profile and ``overrides`` (as
  ``crapnet cross-validate`` made them) and must reproduce the run names of the fold's
  ``runs`` entry, hash included; the committed Dice is the summary's per-fold entry.

Outputs (``out``): ``rerun_check.json`` (everything, rewritten after every fold, so an
interrupted check shows what it finished) and ``rerun_check.md`` (the tables); the rerun's
run folders live under ``runs_root`` (default ``runs/rerun_check``: ``results/`` holds only
results), and a rerun started again reuses what is finished there. Dice are fractions in the JSON, percent in the Markdown;
differences are rerun minus committed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..facts import ORGANS
from ..io import read_json, write_json, write_text
from .environment import describe as describe_environment
from .environment import differences, provenance_environment
from .experiment import ExperimentConfig

log = logging.getLogger(__name__)

#: Column titles of the four benchmark organs (Tables 1-2 order) and the mean.
ORGAN_TITLES = {"left_kidney": "LK", "right_kidney": "RK", "spleen": "Spleen", "liver": "Liver", "mean": "Mean"}
#: Per-scan Dice are stored with 6 decimals: a rerun whose every scan agrees to this is "identical".
SCAN_TOLERANCE = 5e-7


class RerunError(ValueError):
    """A sample that cannot be rerun as committed (missing record, config hash mismatch)."""


@dataclass(frozen=True)
class RerunSample:
    """One committed fold: ``results/<table>/seed<seed>/``, fold ``fold``."""

    table: str
    seed: int
    fold: int

    @classmethod
    def parse(cls, value: str | dict | RerunSample) -> RerunSample:
        """From ``"TABLE:SEED:FOLD"``, ``{"table", "seed", "fold"}`` or a sample."""
        if isinstance(value, RerunSample):
            return value
        if isinstance(value, dict):
            missing = {"table", "seed", "fold"} - set(value)
            if missing:
                raise ValueError(f"rerun sample {value}: missing {', '.join(sorted(missing))}")
            table, seed, fold = value["table"], value["seed"], value["fold"]
        else:
            parts = str(value).split(":")
            if len(parts) != 3:
                raise ValueError(
                    f"rerun sample {value!r}: expected TABLE:SEED:FOLD, e.g. chaos_setting1_crapnet_lite:0:0"
                )
            table, seed, fold = parts
        try:
            seed, fold = int(seed), int(fold)
        except (TypeError, ValueError):
            raise ValueError(f"rerun sample {value!r}: seed and fold must be integers") from None
        if not table or "/" in str(table) or str(table).startswith("."):
            raise ValueError(f"rerun sample {value!r}: {table!r} is not a table name under results/")
        return cls(str(table), seed, fold)

    def __str__(self) -> str:
        return f"{self.table}:{self.seed}:{self.fold}"


def read_samples(path: str | os.PathLike) -> list[RerunSample]:
    """Samples from a JSON or YAML file: a list of ``"TABLE:SEED:FOLD"`` strings or dicts,
    or a mapping with such a list under ``rerun_sample`` (a study declaration)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sample file")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text())
    else:
        data = read_json(path)
    if isinstance(data, dict):
        data = data.get("rerun_sample")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of TABLE:SEED:FOLD samples (or rerun_sample: [...])")
    try:
        return [RerunSample.parse(d) for d in data]
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


# --------------------------------------------------------------------------- committed records
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError) as err:  # one RerunError naming the file
        raise RerunError(str(err)) from None


def _with_data_root(cfg: ExperimentConfig, data_root: str | None) -> ExperimentConfig:
    """``data_root`` is a runtime field: point it at this machine's data (never in the hash)."""
    if data_root is not None:
        cfg.data.data_root = str(data_root)
    elif cfg.data.data_root and not Path(cfg.data.data_root).is_dir():
        cfg.data.data_root = None  # the committing machine's folder: use $CRAPNET_DATA_ROOT here
    return cfg


def committed_fold(
    results_root: str | os.PathLike, sample: RerunSample, data_root: str | None = None
) -> dict[str, Any]:
    """The committed record of one sampled fold.

    Returns ``{"configs": [ExperimentConfig], "runs": [run names], "dice": {organ: fraction,
    "mean": ...}, "per_scan": {organ: {scan: fraction}}, "run_info": {...}, "environment":
    dict | None, "layout": "per-run" | "summary"}``. Every config's hash equals the one in its
    committed run name (:class:`RerunError` otherwise, naming both).
    """
    from .runs import fold_configs

    folder = Path(results_root) / sample.table / f"seed{sample.seed}"
    if not folder.is_dir():
        raise RerunError(f"{folder}: no such committed table seed (sample {sample})")
    info_path = folder / "run_info.json"
    table_info = _read_json(info_path) if info_path.is_file() else {}
    summary = _read_json(folder / "summary.json") if (folder / "summary.json").is_file() else None
    run_folders = sorted(p.parent for p in folder.glob("*/config.json"))
    run_folders = [
        p for p in run_folders if int(_read_json(p / "config.json").get("data", {}).get("fold", -1)) == sample.fold
    ]
    if run_folders:  # per-run layout: the config as saved
        configs, names, envs, infos = [], [], [], []
        for run in run_folders:
            saved = _read_json(run / "config.json")
            cfg = _with_data_root(ExperimentConfig.load(run / "config.json"), data_root)
            if cfg.run_name() != run.name or saved.get("config_hash") != cfg.config_hash():
                raise RerunError(
                    f"{run}: its config gives {cfg.run_name()} (hash {cfg.config_hash()}), the folder "
                    f"and config.json say {run.name} / {saved.get('config_hash')}: the code no longer "
                    f"makes this config"
                )
            configs.append(cfg)
            names.append(run.name)
            info = _read_json(run / "run_info.json") if (run / "run_info.json").is_file() else {}
            infos.append(info)
            envs.append(info.get("environment"))
        from .runs import summarize_runs

        first = configs[0]
        fold_entry = summarize_runs(
            run_folders, first.dataset_name(), first.data.setting, first.model.method, first.profile
        )["per_fold"][str(sample.fold)]
        return {
            "configs": configs,
            "runs": names,
            "dice": fold_entry["dice"],
            "per_scan": fold_entry["per_scan"],
            "run_info": infos[0] or table_info,
            "environment": envs[0],
            "layout": "per-run",
        }
    if summary is None:
        raise RerunError(f"{folder}: neither run folders (<run>/config.json) nor summary.json")
    entry = summary.get("per_fold", {}).get(str(sample.fold))
    if entry is None:
        raise RerunError(f"{folder / 'summary.json'}: no fold {sample.fold} (folds {summary.get('folds')})")
    committed_runs = list(entry.get("runs", []))
    overrides = list(summary.get("overrides") or [])
    configs = fold_configs(
        summary["profile"], summary["dataset"], int(summary["setting"]), summary["method"], sample.fold, overrides
    )
    by_name = {cfg.run_name(): cfg for cfg in configs}
    missing = [r for r in committed_runs if r not in by_name]
    if missing or not committed_runs:
        raise RerunError(
            f"{folder / 'summary.json'}: fold {sample.fold}'s runs {committed_runs} are not what "
            f"{summary['method']} / {summary['profile']} with overrides {overrides} makes now ({sorted(by_name)}): "
            f"the config hash changed, so this fold cannot be rerun as committed"
        )
    return {
        "configs": [_with_data_root(by_name[r], data_root) for r in committed_runs],
        "runs": committed_runs,
        "dice": entry["dice"],
        "per_scan": entry.get("per_scan", {}),
        "run_info": table_info,
        "environment": table_info.get("environment"),
        "layout": "summary",
    }


# --------------------------------------------------------------------------- comparison
def _organs(*dice: dict[str, Any]) -> list[str]:
    keys = {k for d in dice for k in d if k != "mean"}
    return [o for o in ORGANS if o in keys] + sorted(keys - set(ORGANS)) + ["mean"]


def compare_fold(committed: dict[str, Any], rerun: dict[str, Any]) -> dict[str, Any]:
    """Per organ (and the mean): committed, rerun, difference (rerun - committed), fractions;
    ``identical``: every per-scan Dice agrees within :data:`SCAN_TOLERANCE` (the stored precision)."""
    rows = {}
    for organ in _organs(committed["dice"], rerun["dice"]):
        a, b = committed["dice"].get(organ), rerun["dice"].get(organ)
        diff = None if a is None or b is None else round(b - a, 6)
        rows[organ] = {"committed": a, "rerun": b, "difference": diff}
    scans = [
        (o, s, v, rerun["per_scan"].get(o, {}).get(s))
        for o, per in committed["per_scan"].items()
        for s, v in per.items()
    ]
    identical = bool(scans) and all(
        b is not None and v is not None and abs(b - v) <= SCAN_TOLERANCE for _, _, v, b in scans
    )
    max_scan = max((abs(b - v) for _, _, v, b in scans if b is not None and v is not None), default=None)
    return {"dice": rows, "identical": identical, "max_scan_difference": max_scan}


def rerun_spread(check: dict[str, Any]) -> dict[str, Any] | None:
    """What a rerun moves a fold's mean Dice by, over the checked folds (fractions).

    ``n``, ``identical`` (folds whose every scan agreed), ``mean_difference``,
    ``mean_abs_difference``, ``max_abs_difference`` and ``sd_difference`` (ddof 1; None for
    one fold) of the fold-mean Dice difference; None before any fold is done. For the book:
    next to the spread over training seeds.
    """
    diffs = [
        f["comparison"]["dice"]["mean"]["difference"]
        for f in check.get("folds", [])
        if f.get("comparison") and f["comparison"]["dice"]["mean"]["difference"] is not None
    ]
    if not diffs:
        return None
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else None
    return {
        "n": n,
        "identical": sum(bool(f["comparison"]["identical"]) for f in check["folds"] if f.get("comparison")),
        "mean_difference": round(mean, 6),
        "mean_abs_difference": round(sum(abs(d) for d in diffs) / n, 6),
        "max_abs_difference": round(max(abs(d) for d in diffs), 6),
        "sd_difference": None if sd is None else round(sd, 6),
    }


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def rerun_markdown(check: dict[str, Any]) -> str:
    """``rerun_check.md``: one table row per fold and organ, the spread, the environments."""
    lines = [
        "# Rerun check",
        "",
        "Committed folds trained and evaluated again with the committed configs (same config hashes, "
        "checked) on the machine below. Dice in percent; difference = rerun − committed; *identical*: "
        "every test scan's Dice agrees to the stored 6 decimals.",
        "",
        f"Command: `{check.get('command', '')}`; commit {check.get('commit')}; started "
        f"{check.get('started_utc')}; machine: {check.get('machine')}.",
        "",
    ]
    lines += [
        "| fold (table:seed:fold) | runs | organ | committed | rerun | difference | identical |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for f in check.get("folds", []):
        comp = f.get("comparison")
        if not comp:
            lines.append(f"| `{f['sample']}` | {', '.join(f['runs'])} | – | – | – | – | not done |")
            continue
        for organ, row in comp["dice"].items():
            lines.append(
                f"| `{f['sample']}` | {', '.join(r.rsplit('_', 1)[-1] for r in f['runs'])} | "
                f"{ORGAN_TITLES.get(organ, organ)} | {_pct(row['committed'])} | {_pct(row['rerun'])} | "
                f"{_pct(row['difference'], signed=True)} | {'yes' if comp['identical'] else 'no'} |"
            )
    spread = check.get("spread")
    if spread:
        sd = "–" if spread["sd_difference"] is None else f"{100 * spread['sd_difference']:.2f}"
        lines += [
            "",
            f"Spread of the fold-mean Dice over {spread['n']} rerun fold(s): mean difference "
            f"{100 * spread['mean_difference']:+.2f}, mean |difference| {100 * spread['mean_abs_difference']:.2f}, "
            f"max |difference| {100 * spread['max_abs_difference']:.2f}, SD {sd} Dice points; "
            f"{spread['identical']} of {spread['n']} identical.",
        ]
    lines += ["", "## Environments", "", f"- **rerun:** {describe_environment(check.get('environment'))}"]
    for f in check.get("folds", []):
        info = f.get("committed_run_info", {})
        env = f.get("committed_environment")
        recorded = (
            describe_environment(env)
            if env
            else (
                f"not recorded (run_info.json: machine {info.get('machine', '?')!r}, torch {info.get('torch', '?')}, "
                f"commit {info.get('commit', '?')})"
            )
        )
        lines.append(f"- **committed `{f['sample']}`:** {recorded}")
        diffs = f.get("environment_differences") or []
        if env and diffs:
            lines.append(f"  - differs from the rerun in: {'; '.join(diffs)}")
    if check.get("diagnosis"):
        lines += ["", "## Diagnosis", "", check["diagnosis"]]
    return "\n".join(lines) + "\n"


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def rerun_check(
    samples: Iterable[RerunSample | str | dict],
    results_root: str | os.PathLike = "results",
    out: str | os.PathLike = "results/rerun_check",
    runs_root: str | os.PathLike | None = None,
    data_root: str | None = None,
    progress: bool = True,
    command: str | None = None,
    diagnosis: str | None = None,
) -> dict[str, Any]:
    """Rerun the sampled committed folds here; write ``out/rerun_check.json`` and ``.md``.

    ``samples``: :class:`RerunSample`, ``"TABLE:SEED:FOLD"`` strings or dicts. Every sample's
    committed record and config hashes are checked (:func:`committed_fold`) before any
    training starts. Each fold is then trained and evaluated with
    :func:`crapnet_core.engine.runs.ensure_run` under ``runs_root`` (default ``runs/rerun_check``;
    finished runs there are reused), with the committed configs' thread counts, and compared
    (:func:`compare_fold`). ``diagnosis``: a paragraph explaining the differences, kept in both
    files. Returns the JSON record. Errors: :class:`RerunError` (a ``ValueError``) naming the
    committed file that cannot be rerun.
    """
    from .environment import machine_line
    from .runs import ensure_run, summarize_runs

    samples = [RerunSample.parse(s) for s in samples]
    if not samples:
        raise ValueError("rerun check: no samples given")
    if len(set(samples)) != len(samples):
        raise ValueError(f"rerun check: a sample is given twice ({[str(s) for s in samples]})")
    out = Path(out)
    runs_root = Path(runs_root) if runs_root is not None else Path("runs") / "rerun_check"
    committed = [(s, committed_fold(results_root, s, data_root)) for s in samples]  # all checked before training
    check: dict[str, Any] = {
        "command": command,
        "commit": _commit(),
        "machine": machine_line(),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "results_root": str(results_root),
        "units": "Dice as fractions; difference = rerun - committed",
        "folds": [
            {
                "sample": str(s),
                "runs": c["runs"],
                "layout": c["layout"],
                "committed_dice": c["dice"],
                "committed_run_info": {k: v for k, v in c["run_info"].items() if k != "environment"},
                "committed_environment": c["environment"],
            }
            for s, c in committed
        ],
        "environment": None,
        "spread": None,
    }
    if diagnosis:
        check["diagnosis"] = diagnosis
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    all_runs: list[Path] = []
    for (sample, record), entry in zip(committed, check["folds"]):
        t_fold = time.time()
        root = runs_root / sample.table / f"seed{sample.seed}"
        run_dirs = [ensure_run(cfg, root, progress=progress) for cfg in record["configs"]]
        all_runs += run_dirs
        cfg = record["configs"][0]
        rerun = summarize_runs(run_dirs, cfg.dataset_name(), cfg.data.setting, cfg.model.method, cfg.profile)[
            "per_fold"
        ][str(sample.fold)]
        env = provenance_environment(run_dirs)
        entry.update(
            rerun_dice=rerun["dice"],
            rerun_per_scan=rerun["per_scan"],
            committed_per_scan=record["per_scan"],
            comparison=compare_fold(record, rerun),
            rerun_environment=env,
            environment_differences=differences(record["environment"], env),
            rerun_seconds=round(time.time() - t_fold, 1),
        )
        check["environment"] = provenance_environment(all_runs)
        check["spread"] = rerun_spread(check)
        check["wall_seconds"] = round(time.time() - t0, 1)
        write_json(out / "rerun_check.json", check)
        write_text(out / "rerun_check.md", rerun_markdown(check))
        d = entry["comparison"]["dice"]["mean"]
        log.info(
            "rerun %s: committed %s, rerun %s, difference %s",
            sample,
            _pct(d["committed"]),
            _pct(d["rerun"]),
            _pct(d["difference"], signed=True),
        )
    return check


__all__ = [
    "RerunSample",
    "RerunError",
    "read_samples",
    "committed_fold",
    "compare_fold",
    "rerun_spread",
    "rerun_markdown",
    "rerun_check",
    "SCAN_TOLERANCE",
]

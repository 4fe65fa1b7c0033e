"""Run folders keyed by config hash, and 5-fold cross-validation with a paper-style summary.

``ensure_run(cfg, runs_root)`` is the one call notebooks and the CLI use to get a trained
and evaluated run: the folder is ``runs_root / cfg.run_name()`` (readable coordinates +
the config hash), so two callers asking for the same config share one run, and work
already done (training finished, metrics written) is skipped. An interrupted training is
resumed from its newest intact checkpoint. The run folder's lock
(:mod:`crapnet_core.engine.locks`) serialises concurrent callers of one run: a second caller
waits, saying for whom.

``cross_validate(...)`` runs every fold (setting 2: one model per test group per fold,
trained without that group, evaluated on that group only) and writes ``summary.json`` and
``summary.md`` (the layout of the paper's Tables 1-2: LK, RK, Spleen, Liver, Mean, each as
mean ± standard deviation over folds). The summary also keeps every test scan's Dice
(``per_scan``) for paired comparisons (:mod:`crapnet_core.engine.stats`).

``cross_validate_seeds(...)`` repeats a cross-validation with several training seeds (runs of
all seeds share one folder, keyed by config hash; per-seed summaries in ``out/seed<k>/``) and
writes the seed aggregate (per-scan Dice averaged over seeds, spreads over seeds and folds).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..facts import ORGAN_SHORT
from ..io import write_json, write_text
from ..models.config import summary_variant
from ..published import PUBLISHED_METHOD_KEYS, published_dice
from .evaluation import read_metrics  # noqa: F401 (re-exported for the notebooks)
from .experiment import ORGANS, ExperimentConfig, make_config
from .locks import run_lock  # noqa: F401 (re-exported: the book's workflow jobs take it)
from .metrics import json_number, nanmean
from .stats import aggregate_seeds, fold_spread, format_pm, mean_std, per_scan_from_metrics

log = logging.getLogger(__name__)

ORGAN_COLUMNS = ORGAN_SHORT

#: The paper's Dice (Tables 1-2) for the methods this project implements, for comparison
#: rows in summary.md: {(dataset, setting, method): (LK, RK, Spleen, Liver, Mean)}.
PAPER_DICE = published_dice()  # from the one transcription (crapnet_core.published)
PAPER_NAMES = PUBLISHED_METHOD_KEYS


def run_dir_for(cfg: ExperimentConfig, runs_root: str | Path) -> Path:
    """Where ``ensure_run`` keeps the run of ``cfg``."""
    return Path(runs_root) / cfg.run_name()


def is_evaluated(run_dir: str | Path, cfg: ExperimentConfig) -> bool:
    """``metrics.json`` exists, belongs to this config and to the fully trained model."""
    try:
        m = read_metrics(run_dir)
    except (FileNotFoundError, ValueError):
        return False
    return m.get("config_hash") == cfg.config_hash() and int(m.get("step", -1)) == cfg.train.steps


def ensure_run(
    cfg: ExperimentConfig,
    runs_root: str | Path = "runs",
    progress: bool = True,
    evaluate: bool = True,
    device: str | None = None,
) -> Path:
    """Train (or resume) and evaluate ``cfg`` under ``runs_root``, skipping completed work.

    Returns the run folder ``runs_root / cfg.run_name()``. ``device`` overrides
    ``train.device`` (runtime only: it does not change the config hash).
    """
    from .evaluation import evaluate as evaluate_run
    from .training import is_trained, latest_checkpoint, train

    if device is not None:
        cfg = cfg.copy()
        cfg.train.device = device
    run_dir = run_dir_for(cfg, runs_root)
    if not is_trained(run_dir):
        from .inputs import check_experiment_inputs

        check_experiment_inputs(cfg)  # before the run folder (and its lock file) is created
    with run_lock(run_dir):
        if not is_trained(run_dir):
            resume = latest_checkpoint(run_dir) is not None and (run_dir / "config.json").is_file()
            log.info("%s: %s", run_dir, "resuming training" if resume else "training")
            train(cfg, run_dir, resume=resume, progress=progress)
        if evaluate and not is_evaluated(run_dir, cfg):
            evaluate_run(run_dir, device=cfg.train.device, progress=progress)
    return run_dir


def run_config(
    profile: str,
    dataset: str,
    setting: int = 1,
    fold: int = 0,
    method: str = "crapnet",
    blocks: int | None = None,
    branches: int | None = None,
    test_group: str | None = None,
    steps: int | None = None,
    data_root: str | None = None,
    overrides: Sequence[str] = (),
):
    """The :class:`~crapnet_core.engine.experiment.ExperimentConfig` of one training run of the book.

    ``blocks``/``branches``/``steps`` = None keep the profile's values (so the runs of the
    default configuration are the same runs, same hash, as ``crapnet cross-validate``'s);
    ``data_root`` is a runtime field (not part of the hash). Notebooks 3-7 and the plan call
    this, so that equal coordinates give equal configs and hence one shared run folder.
    """
    extra: list[str] = []
    if blocks is not None:
        extra.append(f"model.n_blocks={int(blocks)}")
    if branches is not None:
        extra.append(f"model.branches={int(branches)}")
    if steps is not None:
        extra.append(f"train.steps={int(steps)}")
    if data_root:
        extra.append(f"data.data_root={data_root}")
    return make_config(profile, dataset, int(setting), int(fold), method, [*extra, *overrides], test_group=test_group)


# ---------------------------------------------------------------------- cross-validation
def fold_configs(
    profile: str,
    dataset: str,
    setting: int,
    method: str,
    fold: int,
    overrides: Sequence[str] = (),
    groups: Sequence[str | Sequence[str]] | None = None,
) -> list[ExperimentConfig]:
    """The configs of one fold: one per test group.

    ``groups`` (names such as ``kidneys``, comma lists such as ``"heart,lung"``, or organ
    tuples): the test groups; default: all organs (setting 1) or the paper's two groups
    (setting 2: kidneys, liver_spleen), or the method's own ``test_groups`` (e.g. alpnet_sup:
    the two groups in both settings).
    """
    from ..models.methods import hook
    from .experiment import SETTING2_GROUPS

    method_groups = hook(method, "test_groups")  # e.g. alpnet_sup: the two groups in both settings
    if (groups is None or len(groups) == 0) and method_groups is not None:
        groups = list(method_groups(int(setting)))
    elif groups is None or len(groups) == 0:
        groups = [None] if setting == 1 else list(SETTING2_GROUPS)
    return [make_config(profile, dataset, setting, fold, method, overrides, test_group=g) for g in groups]


def cross_validate(
    dataset: str,
    setting: int,
    method: str,
    profile: str,
    out: str | Path,
    overrides: Sequence[str] = (),
    folds: Sequence[int] | None = None,
    progress: bool = True,
    device: str | None = None,
    runs_root: str | Path | None = None,
    groups: Sequence[str | Sequence[str]] | None = None,
    write_summary: bool = True,
) -> dict[str, Any]:
    """Run the folds of one experiment (skipping finished ones) and write the summary.

    Run folders live in ``runs_root`` (default ``out``; named by config hash, so reruns and
    notebooks share them); ``out/summary.json`` and ``out/summary.md`` hold per-fold and mean
    Dice per organ (the paper averages the 5 folds) with the standard deviation over folds,
    every test scan's Dice, plus HD95 and ASD. ``groups``: the test groups (see
    :func:`fold_configs`; any organs of the dataset's label map). ``write_summary=False``:
    only the runs are written and the summary of :func:`summarize_runs` is returned (the
    book's cross-validation pages). Errors: ``ValueError`` for a fold out of range or no folds.

    Every fold's config and every scan the folds need are checked before ``out`` or any
    run folder is created (:func:`crapnet_core.engine.inputs.check_experiment_inputs`).
    """
    from .inputs import check_experiment_inputs
    from .run_folder import is_trained

    out = Path(out)
    runs_root = Path(runs_root) if runs_root is not None else out
    probe = make_config(profile, dataset, setting, 0, method, overrides)
    n_folds = probe.data.n_folds
    folds = list(range(n_folds)) if folds is None else [int(f) for f in folds]
    for f in folds:
        if not 0 <= f < n_folds:
            raise ValueError(f"fold: {f} is out of range 0..{n_folds - 1}")
    if not folds:
        raise ValueError("cross_validate: no folds given")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    plan = [(f, cfg) for f in folds for cfg in fold_configs(profile, dataset, setting, method, f, overrides, groups)]
    for _, cfg in plan:
        if not is_trained(run_dir_for(cfg, runs_root)):
            check_experiment_inputs(cfg)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[int, Path]] = []
    t0 = time.time()
    for f, cfg in plan:
        t_run = time.time()
        run_dir = ensure_run(cfg, runs_root, progress=progress, device=device)
        log.info("fold %d %s done in %.0f s: %s", f, cfg.group_name(), time.time() - t_run, run_dir)
        runs.append((f, run_dir))
    summary = summarize_runs(
        [r for _, r in runs], dataset=probe.dataset_name(), setting=setting, method=method, profile=profile
    )
    if not write_summary:
        return summary
    summary["variant"] = probe.model.variant_name()  # e.g. alpnet-att for a decomposition variant
    summary["wall_seconds_this_call"] = round(time.time() - t0, 1)
    summary["overrides"] = list(overrides)
    if runs_root != out:
        summary["runs_root"] = os.path.relpath(runs_root, out)
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", summary_markdown(summary))
    return summary


def cross_validate_seeds(
    dataset: str,
    setting: int,
    method: str,
    profile: str,
    out: str | Path,
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    folds: Sequence[int] | None = None,
    progress: bool = True,
    device: str | None = None,
    groups: Sequence[str | Sequence[str]] | None = None,
) -> dict[str, Any]:
    """:func:`cross_validate` once per training seed (``train.seed``), then the seed aggregate.

    The run folders of every seed live in ``out`` (keyed by config hash: the seed that equals
    the profile's default reuses the runs of a plain ``cross-validate --out out``); seed k's
    summary is ``out/seed<k>/summary.json|md``; ``out/summary.json|md`` become the aggregate
    (:func:`crapnet_core.engine.stats.aggregate_seeds`: per-scan Dice averaged over the seeds, mean ±
    std over seeds and over folds). Returns the aggregate.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: {seeds} must be distinct integers, at least one")
    if any(str(o).replace(" ", "").startswith("train.seed=") for o in overrides):
        raise ValueError("--seeds: an override already sets train.seed; give the seeds with --seeds only")
    out = Path(out)
    per_seed = {}
    for seed in seeds:
        per_seed[seed] = cross_validate(
            dataset,
            setting,
            method,
            profile,
            out / f"seed{seed}",
            overrides=[*overrides, f"train.seed={seed}"],
            folds=folds,
            progress=progress,
            device=device,
            runs_root=out,
            groups=groups,
        )
    agg = aggregate_seeds(per_seed)
    agg["overrides"] = list(overrides)
    write_json(out / "summary.json", agg)
    write_text(out / "summary.md", summary_markdown(agg))
    return agg


def summarize_runs(
    run_dirs: Sequence[Path], dataset: str, setting: int, method: str, profile: str, train_seconds_of=None
) -> dict[str, Any]:
    """Combine the ``metrics.json`` of evaluated runs into per-fold and 5-fold tables.

    ``train_seconds_of(run_dir)``: a run's training seconds (default: its ``TRAINED`` marker; the
    study's result folders keep them in ``run_info.json``); None when unknown.
    """
    from .run_folder import train_seconds

    train_seconds_of = train_seconds_of or train_seconds

    per_fold: dict[int, dict[str, Any]] = {}
    for run_dir in run_dirs:
        m = read_metrics(run_dir)
        fold = int(m["fold"])
        entry = per_fold.setdefault(
            fold,
            {
                "dice": {},
                "dice_lcc": {},
                "hd95": {},
                "asd": {},
                "runs": [],
                "support": {},
                "per_scan": {},
                "train_seconds": 0.0,
                "eval_seconds": 0.0,
            },
        )
        for organ, scans in per_scan_from_metrics(m).items():
            entry["per_scan"].setdefault(organ, {}).update(scans)
        for organ, row in m["per_organ"].items():
            entry["dice"][organ] = row["dice_mean"]
            entry["dice_lcc"][organ] = row.get("dice_lcc_mean")  # absent in metrics of version-1 runs
            entry["hd95"][organ] = row["hd95_mean"]
            entry["asd"][organ] = row["asd_mean"]
        entry["runs"].append(Path(run_dir).name)
        entry["support"].update(
            {o: {"scan_id": m["support"]["scan_id"], "slices": s} for o, s in m["support"]["slices"].items()}
        )
        entry["train_seconds"] += train_seconds_of(run_dir) or 0.0
        entry["eval_seconds"] += float(m.get("seconds") or 0.0)  # None: not recorded (derived records)
    organs = [o for o in ORGANS if any(o in e["dice"] for e in per_fold.values())]
    organs += sorted({o for e in per_fold.values() for o in e["dice"]} - set(organs))
    for entry in per_fold.values():
        entry["dice"]["mean"] = json_number(nanmean([entry["dice"].get(o) for o in organs]))
        entry["dice_lcc"]["mean"] = json_number(nanmean([entry["dice_lcc"].get(o) for o in organs]))
        entry["hd95"]["mean"] = json_number(nanmean([entry["hd95"].get(o) for o in organs]))
        entry["asd"]["mean"] = json_number(nanmean([entry["asd"].get(o) for o in organs]))
    mean: dict[str, dict[str, Any]] = {
        "dice": {},
        "dice_std_over_folds": {},
        "hd95": {},
        "asd": {},
        "dice_lcc": {},
        "dice_lcc_std_over_folds": {},
    }
    for organ in organs:
        mean["dice_lcc"][organ] = json_number(nanmean([e["dice_lcc"].get(organ) for e in per_fold.values()]))
        mean["dice_lcc_std_over_folds"][organ] = json_number(
            mean_std([e["dice_lcc"].get(organ) for e in per_fold.values()])[1]
        )
        mean["dice"][organ] = json_number(nanmean([e["dice"].get(organ) for e in per_fold.values()]))
        mean["hd95"][organ] = json_number(nanmean([e["hd95"].get(organ) for e in per_fold.values()]))
        mean["asd"][organ] = json_number(nanmean([e["asd"].get(organ) for e in per_fold.values()]))
    for key in ("dice", "hd95", "asd", "dice_lcc"):
        mean[key]["mean"] = json_number(nanmean([mean[key].get(o) for o in organs]))
    for key in [*organs, "mean"]:  # sample std (ddof=1) over folds, also of the per-fold organ mean
        mean["dice_std_over_folds"][key] = json_number(mean_std([e["dice"].get(key) for e in per_fold.values()])[1])
    per_scan: dict[str, dict[str, float]] = {}
    for entry in per_fold.values():
        for organ, scans in entry["per_scan"].items():
            per_scan.setdefault(organ, {}).update(scans)
    return {
        "dataset": dataset,
        "setting": setting,
        "method": method,
        "profile": profile,
        "organs": organs,
        "folds": sorted(per_fold),
        "per_fold": {str(k): per_fold[k] for k in sorted(per_fold)},
        "per_scan": per_scan,
        "mean": mean,
        "std_ddof": 1,
        "paper_dice": dict(zip([*ORGAN_COLUMNS.values(), "Mean"], PAPER_DICE.get((dataset, setting, method), ())))
        or None,
        "train_seconds_total": round(sum(e["train_seconds"] for e in per_fold.values()), 1),
        "eval_seconds_total": round(sum(e["eval_seconds"] for e in per_fold.values()), 1),
        "units": {"dice": "percent (0..100) in summary.md, fraction in summary.json", "hd95": "mm", "asd": "mm"},
    }


def _fmt(value: float | None, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.2f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """Markdown tables in the layout of the paper's Tables 1-2 (Dice x 100), plus HD95/ASD.

    Every cell of our rows is mean ± sample standard deviation (ddof=1) over folds, computed
    from ``per_fold`` (so summaries written before the std was stored render the same way);
    a seed aggregate (:func:`cross_validate_seeds`) adds the per-seed rows and the spread over
    seeds.
    """
    organs = summary["organs"]
    head = [ORGAN_COLUMNS.get(o, o) for o in organs] + ["Mean"]
    name = PAPER_NAMES.get(summary["method"], summary["method"])
    variant = summary_variant(summary) or summary["method"]
    if variant != summary["method"]:  # a component variant: no paper row to compare with
        name = f"{name} variant `{variant}`"
    ds_label = {"chaos": "Abdominal-MRI (CHAOS T2-SPIR)", "sabs": "Abdominal-CT (Synapse/BTCV)"}.get(
        summary["dataset"], summary["dataset"]
    )
    seeds = summary.get("seeds")
    folds = ", ".join(map(str, summary["folds"]))
    spread = {k: fold_spread(summary, k) for k in ("dice", "hd95", "asd")}
    keys = [*organs, "mean"]
    seed_text = (
        f" Training seeds {', '.join(map(str, seeds))}: each fold's Dice is the mean over the seeds." if seeds else ""
    )
    lines = [
        f"# {name}, {ds_label}, setting {summary['setting']}, profile `{summary['profile']}`",
        "",
        f"Dice score (0-100), mean ± standard deviation over folds {folds} (per fold: mean over the "
        f"fold's test scans; sample standard deviation, ddof=1).{seed_text}",
        "",
        "| Method | " + " | ".join(head) + " |",
        "|---" * (len(head) + 1) + "|",
    ]
    lines.append(
        f"| {name} ({summary['profile']}, this repo) | "
        + " | ".join(format_pm(spread["dice"][k]["mean"], spread["dice"][k]["std"]) for k in keys)
        + " |"
    )
    paper = summary.get("paper_dice")
    if paper and list(organs) == list(ORGAN_COLUMNS) and variant == summary["method"]:
        lines.append(
            f"| {name} (paper, Table {summary['setting']}) | "
            + " | ".join(f"{paper[k]:.2f}" for k in [*ORGAN_COLUMNS.values(), "Mean"])
            + " |"
        )
    if seeds:
        per_seed = summary.get("per_seed", {})
        std_seeds = summary["mean"].get("dice_std_over_seeds", {})
        lines += [
            "",
            "Per seed (Dice 0-100, mean over folds) and the spread over seeds:",
            "",
            "| Seed | " + " | ".join(head) + " |",
            "|---" * (len(head) + 1) + "|",
        ]
        for seed in seeds:
            row = per_seed.get(str(seed), {})
            lines.append(f"| {seed} | " + " | ".join(_fmt(row.get(k), 100) for k in keys) + " |")
        lines.append(
            "| mean ± std over seeds | "
            + " | ".join(format_pm(summary["mean"]["dice"].get(k), std_seeds.get(k)) for k in keys)
            + " |"
        )
    lines += ["", "Per fold (Dice 0-100):", "", "| Fold | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for fold, entry in summary["per_fold"].items():
        vals = [entry["dice"].get(o) for o in keys]
        lines.append(f"| {fold} | " + " | ".join(_fmt(v, 100) for v in vals) + " |")
    lines.append("| std over folds | " + " | ".join(_fmt(spread["dice"][k]["std"], 100) for k in keys) + " |")
    lines += [
        "",
        "Surface distances (mm, mean ± standard deviation over folds; scans with an empty prediction left out):",
        "",
        "| Metric | " + " | ".join(head) + " |",
        "|---" * (len(head) + 1) + "|",
    ]
    for key, label in (("hd95", "HD95"), ("asd", "ASD")):
        lines.append(
            f"| {label} | "
            + " | ".join(format_pm(spread[key][k]["mean"], spread[key][k]["std"], scale=1.0) for k in keys)
            + " |"
        )
    lcc = summary["mean"].get("dice_lcc") or {}
    if any(v is not None for v in lcc.values()):  # beyond the paper: a separate table, never mixed with Dice
        lcc_spread = fold_spread(summary, "dice_lcc")
        lines += [
            "",
            "Beyond the paper: Dice (0-100) after keeping the largest 3-D connected component of each "
            "prediction (`dice_lcc`; mean ± standard deviation over folds):",
            "",
            "| Post-processing | " + " | ".join(head) + " |",
            "|---" * (len(head) + 1) + "|",
        ]
        lines.append(
            "| largest connected component | "
            + " | ".join(format_pm(lcc_spread[k]["mean"], lcc_spread[k]["std"]) for k in keys)
            + " |"
        )
    lines += [
        "",
        f"Training time {summary['train_seconds_total']:.0f} s, evaluation time "
        f"{summary['eval_seconds_total']:.0f} s (all folds{', all seeds' if seeds else ''}, as measured in "
        "the runs).",
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "ensure_run",
    "run_dir_for",
    "is_evaluated",
    "fold_configs",
    "cross_validate",
    "cross_validate_seeds",
    "summarize_runs",
    "summary_markdown",
    "PAPER_DICE",
    "run_lock",
]

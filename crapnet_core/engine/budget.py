"""Budget curve: test Dice against training steps, from the saved checkpoints of one run.

``evaluate_checkpoints(RUN)`` evaluates every ``RUN/checkpoints/step_<n>.pt`` (or the steps
asked for) with the 1-shot protocol of :mod:`crapnet_core.engine.evaluation` and writes
``RUN/budget.json`` (atomically; ``RUN/metrics.json`` and the predictions are left alone):

    {"run", "config_hash", "dataset", "setting", "fold", "method", "profile", "trained_steps",
     "points": [{"step", "checkpoint", "dice": {organ: fraction, "mean": fraction},
                 "per_scan": {organ: {scan_id: fraction}}, "seconds"}, ...]}

Training keeps only the last ``train.keep_checkpoints`` step files; for a curve, train with
e.g. ``--set train.keep_checkpoints=100 --set train.checkpoint_every=1000`` (both are
runtime-only fields: they do not change the config hash, so an existing run can be resumed
or extended with them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def checkpoint_steps(run_dir: str | Path) -> dict[int, Path]:
    """{step: path} of the ``step_<n>.pt`` files of a run (sorted by step)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    out: dict[int, Path] = {}
    for p in ckpt_dir.glob("step_*.pt"):
        try:
            out[int(p.stem.split("_", 1)[1])] = p
        except ValueError:
            continue
    return dict(sorted(out.items()))


def parse_checkpoints(value: str, available: Sequence[int]) -> list[int]:
    """``"all"`` or a comma list of steps (``"1000,3000"``) -> the steps to evaluate.

    Raises ValueError naming the steps that have no checkpoint file.
    """
    available = sorted(int(s) for s in available)
    if value.strip().lower() == "all":
        if not available:
            raise ValueError("--checkpoints all: the run has no step_<n>.pt checkpoint")
        return available
    try:
        steps = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--checkpoints: {value!r} is not 'all' or a comma list of steps") from None
    missing = [s for s in steps if s not in available]
    if missing or not steps:
        raise ValueError(
            f"--checkpoints: no checkpoint for step(s) {missing or value!r}; "
            f"the run has steps {available or 'none'} (train with --set train.keep_checkpoints=N)"
        )
    return steps


def budget_filename(split: str = "test") -> str:
    """``budget.json`` for the test split, ``budget_validation.json`` for the validation split."""
    from .evaluation import SPLITS

    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not one of {', '.join(SPLITS)}")
    return "budget.json" if split == "test" else f"budget_{split}.json"


def evaluate_checkpoints(
    run_dir: str | Path,
    checkpoints: str = "all",
    device: str | None = None,
    progress: bool = True,
    split: str = "test",
    wait: bool = False,
) -> dict[str, Any]:
    """Evaluate the chosen checkpoints of a run and write ``RUN/budget.json``; returns its dict.

    checkpoints: ``"all"`` or a comma list of steps. Each point's Dice is the run's test
    protocol (fold, support, organs of its config) with that checkpoint's weights; no
    predictions are written. ``split="validation"`` scores the validation scans held out by
    ``data.validation=true`` instead and writes ``RUN/budget_validation.json`` (for choosing a
    budget without the test scans; ``ValueError`` for a run trained without the hold-out).
    Holds the run folder's lock (``wait``: as :func:`~crapnet_core.engine.evaluation.evaluate`);
    every checkpoint must belong to the run's config (its stored hash).
    """
    from ..io import check_output_folder
    from .checkpoints import run_hashes
    from .experiment import ExperimentConfig
    from .locks import run_lock

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.json)")
    cfg = ExperimentConfig.load(cfg_path)
    with run_lock(run_dir, wait=wait):  # one writer per run folder
        available = checkpoint_steps(run_dir)
        steps = parse_checkpoints(checkpoints, list(available))
        check_output_folder(run_dir, 2**20, what="run folder (budget file)")
        return _evaluate_checkpoints(run_dir, cfg, available, steps, device, progress, split, run_hashes(run_dir, cfg))


def _evaluate_checkpoints(run_dir, cfg, available, steps, device, progress, split, hashes):
    from ..io import write_json
    from .checkpoints import cpu_threads, load_model, resolve_device
    from .evaluation import evaluate_model
    from .stats import per_scan_from_metrics

    dev = resolve_device(device or cfg.train.device)
    points = []
    for step in steps:
        t0 = time.time()
        model, meta = load_model(cfg, available[step], dev, run_hashes=hashes)
        with cpu_threads(cfg, dev):
            m = evaluate_model(model, cfg, dev, out_dir=None, progress=progress, save_predictions=False, split=split)
        dice = {o: r["dice_mean"] for o, r in m["per_organ"].items()}
        dice["mean"] = m["mean"]["dice"]
        points.append(
            {
                "step": int(meta.get("step", step)),
                "checkpoint": available[step].name,
                "dice": dice,
                "per_scan": per_scan_from_metrics(m),
                "seconds": round(time.time() - t0, 2),
            }
        )
        log.info("%s step %d: mean Dice %s", run_dir, step, dice["mean"])
    out = {
        "run": run_dir.name,
        "config_hash": cfg.config_hash(),
        "dataset": cfg.dataset_name(),
        "setting": cfg.data.setting,
        "fold": cfg.data.fold,
        "method": cfg.model.method,
        "profile": cfg.profile,
        "trained_steps": cfg.train.steps,
        "organs": list(cfg.data.test_group),
        "points": points,
        "split": split,
        "scans": m["test_scans"] if points else [],
        "units": {"dice": "fraction 0..1", "step": "training iterations"},
    }
    write_json(run_dir / budget_filename(split), out)
    return out


def budget_markdown(budget: dict[str, Any]) -> str:
    """Markdown table of one ``budget.json``: a row per step, Dice 0-100 per organ and the mean."""
    from .stats import ORGAN_SHORT

    organs = budget["organs"]
    head = [ORGAN_SHORT.get(o, o) for o in organs] + ["Mean"]
    what = "Validation" if budget.get("split") == "validation" else "Test"
    lines = [
        f"{what} Dice (0-100) against training steps: {budget['method']}, {budget['dataset']} setting "
        f"{budget['setting']} fold {budget['fold']} (run `{budget['run']}`).",
        "",
        "| Step | " + " | ".join(head) + " |",
        "|---" * (len(head) + 1) + "|",
    ]
    for p in budget["points"]:
        vals = [p["dice"].get(o) for o in [*organs, "mean"]]
        lines.append(f"| {p['step']} | " + " | ".join("–" if v is None else f"{100 * v:.2f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def load_budgets(root: str | Path) -> list[dict[str, Any]]:
    """Every ``budget.json`` (or ``*budget*.json``) under ``root`` (recursive), ``_path`` added."""
    from ..io import read_json

    out = []
    root = Path(root)
    if not root.is_dir():
        return out
    for path in sorted({*root.rglob("budget.json"), *root.rglob("*budget*.json")}):
        data = read_json(path)
        if isinstance(data, dict) and "points" in data:
            data["_path"] = str(path)
            out.append(data)
    return out


def plot_budget(budgets: Sequence[dict[str, Any]], organ: str = "mean", ax=None):
    """Test Dice (0-100) of ``organ`` (or the organ mean) against training steps (log axis),
    one line per budget file (method, dataset, setting, fold)."""
    import matplotlib.pyplot as plt

    from ..facts import METHOD_LABELS

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.8))
    for b in budgets:
        pts = [p for p in b["points"] if p["dice"].get(organ) is not None]
        ax.plot(
            [p["step"] for p in pts],
            [100 * p["dice"][organ] for p in pts],
            marker="o",
            label=f"{METHOD_LABELS.get(b['method'], b['method'])}, {b['dataset']} s{b['setting']} f{b['fold']}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("training steps")
    ax.set_ylabel(f"test Dice ({'mean over organs' if organ == 'mean' else organ}, 0-100)")
    ax.legend(fontsize=8)
    return ax.figure


__all__ = [
    "budget_filename",
    "load_budgets",
    "plot_budget",
    "checkpoint_steps",
    "parse_checkpoints",
    "evaluate_checkpoints",
    "budget_markdown",
]

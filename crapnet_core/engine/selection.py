"""Choosing a training budget on validation scans: the doubling rule (issue 18 §1).

The converged profile keeps ``lite``'s model geometry and the paper's optimiser and schedule, and
chooses only the number of training steps, on validation scans held out of training
(``data.validation=true``, ``data.validation_scans=k``; CHAOS fold 0 with k = 4 holds out 36-39,
the test scans of fold 4), never on test scans. The rule, fixed before the trials were evaluated
(``results/select_converged/rule.md``):

    the chosen budget is the smallest B among the candidates such that doubling the steps
    (B -> 2B) gains less than ``min_gain`` Dice points on the validation scans for every method;
    if no candidate passes, the largest trained step count.

Because the learning-rate schedule (x ``lr_gamma`` every ``lr_step`` steps) and the episode stream
do not depend on the total number of steps, the checkpoint at step B of one long training is the
model a B-step training gives, so one training per method with checkpoints at every candidate
and its double answers the rule.

:func:`choose_budget` applies the rule to validation curves; :func:`selection_trials` trains the
trials (or resumes them), evaluates the checkpoints on the validation split
(:func:`crapnet_core.engine.budget.evaluate_checkpoints`) and returns the curves;
:func:`selection_markdown` renders the trials table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Candidates of the converged budget and the rule's threshold (Dice points, 0-100).
CANDIDATES = (1000, 2000, 5000, 10000)
MIN_GAIN = 1.0


def choose_budget(
    curves: Mapping[str, Mapping[int, float]],
    candidates: Sequence[int] = CANDIDATES,
    min_gain: float = MIN_GAIN,
) -> dict[str, Any]:
    """Apply the doubling rule to validation curves.

    curves: method -> {step: validation mean Dice in points (0-100)}; every candidate B and its
        double 2B must be present for every method, or ``ValueError`` names what is missing.
    candidates: increasing step counts B to test; min_gain: the threshold in Dice points.

    Returns ``{"chosen": B, "passed": bool, "gains": {B: {method: Dice(2B) - Dice(B)}},
    "rule": str}``; ``passed`` is False when no candidate passes (then ``chosen`` is the largest
    step of every curve).
    """
    if not curves:
        raise ValueError("choose_budget: no curves")
    cands = sorted(int(c) for c in candidates)
    missing = [
        f"{m}: step {s}"
        for m, c in curves.items()
        for b in cands
        for s in (b, 2 * b)
        if s not in c or c[s] is None or (isinstance(c[s], float) and math.isnan(c[s]))
    ]
    if missing:
        raise ValueError(f"choose_budget: validation Dice missing for {', '.join(missing)}")
    gains = {b: {m: round(float(c[2 * b]) - float(c[b]), 4) for m, c in curves.items()} for b in cands}
    rule = (
        f"smallest B in {{{', '.join(map(str, cands))}}} such that Dice(2B) - Dice(B) < {min_gain:g} "
        f"point(s) on the validation scans for every method ({', '.join(curves)})"
    )
    for b in cands:
        if all(g < min_gain for g in gains[b].values()):
            return {"chosen": b, "passed": True, "gains": gains, "rule": rule}
    last = min(max(c) for c in curves.values())
    return {"chosen": int(last), "passed": False, "gains": gains, "rule": rule}


def validation_curve(budget: Mapping[str, Any]) -> dict[int, float]:
    """{step: mean Dice in points} of a ``budget_validation.json`` dictionary."""
    if budget.get("split") != "validation":
        raise ValueError(f"{budget.get('run')}: not a validation budget curve (split {budget.get('split')!r})")
    return {
        int(p["step"]): 100.0 * float(p["dice"]["mean"]) for p in budget["points"] if p["dice"].get("mean") is not None
    }


def selection_trials(
    methods: Sequence[str],
    runs_root: str | Path,
    steps: int,
    checkpoints: Sequence[int],
    dataset: str = "chaos",
    fold: int = 0,
    validation_scans: int = 4,
    profile: str = "lite",
    extra: Sequence[str] = (),
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train (or resume) one validation trial per method and evaluate its checkpoints.

    Each trial: ``profile`` with ``data.validation=true``, ``data.validation_scans``,
    ``train.steps=steps``, a checkpoint every 1000 steps (all kept), one torch thread, setting 1,
    ``fold``; ``checkpoints`` (steps, multiples of 1000, at most ``steps``) are scored on the
    validation scans into ``RUN/budget_validation.json``. Returns method -> that dictionary, with
    ``config_hash`` and ``train_seconds``. Trials already evaluated at every asked step are reused.
    """
    from ..io import read_json
    from .budget import budget_filename, evaluate_checkpoints
    from .experiment import make_config
    from .training import is_trained, train, train_seconds

    bad = [c for c in checkpoints if int(c) % 1000 or int(c) > steps or int(c) < 1]
    if bad:
        raise ValueError(f"checkpoints {bad}: must be multiples of 1000 in 1000..{steps}")
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        overrides = [
            "data.validation=true",
            f"data.validation_scans={int(validation_scans)}",
            f"train.steps={int(steps)}",
            "train.threads=1",
            "train.checkpoint_every=1000",
            "train.keep_checkpoints=1000",
            *extra,
        ]
        cfg = make_config(profile, dataset, 1, fold, method, overrides)
        run = Path(runs_root) / cfg.run_name()
        if not is_trained(run):
            train(cfg, run, resume=(run / "config.json").is_file(), progress=progress)
        path = run / budget_filename("validation")
        wanted = sorted({int(c) for c in checkpoints})
        have = read_json(path) if path.is_file() else None
        if have is None or sorted(int(p["step"]) for p in have["points"]) != wanted:
            have = evaluate_checkpoints(run, ",".join(map(str, wanted)), progress=progress, split="validation")
        have["train_seconds"] = train_seconds(run)
        have["overrides"] = overrides
        out[method] = have
    return out


def selection_markdown(trials: Mapping[str, Mapping[str, Any]], choice: Mapping[str, Any]) -> str:
    """Markdown of the selection: validation Dice per method and step, the gains, the choice."""
    from ..facts import METHOD_LABELS

    steps = sorted({int(p["step"]) for t in trials.values() for p in t["points"]})
    first = next(iter(trials.values()))
    lines = [
        "# The converged budget, chosen on validation scans",
        "",
        f"Validation mean Dice (0-100) on scans {', '.join(first['scans'])} of {first['dataset']} "
        f"(held out of fold {first['fold']}'s training), support scan of fold {first['fold']}, "
        "against training steps; one training per method, seed 0.",
        "",
        "| method | " + " | ".join(f"{s:,}" for s in steps) + " |",
        "|---" * (len(steps) + 1) + "|",
    ]
    for method, t in trials.items():
        curve = validation_curve(t)
        lines.append(
            f"| {METHOD_LABELS.get(method, method)} | "
            + " | ".join(f"{curve[s]:.2f}" if s in curve else "–" for s in steps)
            + " |"
        )
    lines += [
        "",
        f"Rule: {choice['rule']}.",
        "",
        "| B | " + " | ".join(f"{METHOD_LABELS.get(m, m)}: Dice(2B) − Dice(B)" for m in trials) + " |",
        "|---" * (len(trials) + 1) + "|",
    ]
    for b, g in choice["gains"].items():
        lines.append(f"| {int(b):,} | " + " | ".join(f"{g[m]:+.2f}" for m in trials) + " |")
    verdict = (
        f"**Chosen: {choice['chosen']:,} steps.**"
        if choice["passed"]
        else f"**No candidate passes; the budget is the longest trial, {choice['chosen']:,} steps (not converged "
        "by this rule).**"
    )
    lines += ["", verdict]
    return "\n".join(lines) + "\n"


__all__ = ["CANDIDATES", "MIN_GAIN", "choose_budget", "validation_curve", "selection_trials", "selection_markdown"]

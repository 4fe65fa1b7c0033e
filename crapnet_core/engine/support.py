"""How much does the support matter? Support-choice sensitivity and k-shot evaluation of a fold model.

The paper's protocol (SSL-ALPNet's; :mod:`crapnet_core.engine.evaluation`) segments every query
scan of a fold from ONE fixed support scan (the next scan in the sorted list). Two evaluations
beyond it, both with the trained fold model unchanged (nothing is retrained):

**Admissible supports** of query scan ``q`` (:func:`admissible_supports`): the fold's support
scan first, then the fold's other query scans (its test scans; the validation scans for
``split="validation"``) in the fold's order (sorted ids) -- never ``q`` itself, never a training
scan (the model's self-supervised training saw those) and never a scan of another fold. For
an organ, a candidate that does not show the organ is skipped.

**Support-choice sensitivity** (:func:`support_sensitivity`, ``crapnet evaluate RUN --supports
all`` -> ``RUN/support_sensitivity.json``): every admissible support, in turn, as the 1-shot
support of every query (the protocol otherwise unchanged: 3 support slices at 1/6, 1/2, 5/6 of
the support's organ range, 3 chunks of the query's range). Per query and organ: the Dice for
each support and their spread (:func:`query_spread`: mean, sample SD (ddof=1), min, max,
range); per fold: the mean over the queries of these spreads next to the standard (fold
support) Dice. The column of the fold's support scan is exactly ``metrics.json``.

**k shots** (:func:`kshot_evaluation`, ``crapnet evaluate RUN --shots 1,2,3|all`` ->
``RUN/kshot.json``): query ``q`` is segmented from the first ``k`` admissible supports of the
organ (:func:`kshot_supports`: the fold's support scan first, then the next scans in the fold's
order, skipping ``q``), chunk ``p`` from the ``k`` supports' slices of chunk ``p`` (each support
contributes its slice at the same relative position of its own organ range), the prototypes
pooled over the shots as the method defines it (:mod:`crapnet_core.models.prototypes`,
:func:`crapnet_core.models.segmenter.attend_shots`). ``k`` runs from 1 to :func:`max_shots` (the
fewest admissible supports over the organs and queries: 4 for CHAOS, 6 for Synapse); ``k = 1``
is exactly the standard protocol (``metrics.json``).

Both files carry the run's coordinates, ``config_hash``, the checkpoint and its step, and the
``environment`` (training's and this evaluation's, as ``metrics.json``); neither
touches ``metrics.json`` or the predictions. Both use the run as ``crapnet evaluate`` does
(:func:`~crapnet_core.engine.evaluation.load_run`): the run folder's lock held, the folder
checked writable before the work, the final checkpoint (or its intact copy) of the run's config. ``support_sensitivity.json`` is written after each
support scan (``support_sensitivity.partial.json``) and an interrupted evaluation resumes from it;
``kshot.json`` keeps the points of earlier calls with the same checkpoint (one point per k).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_json
from .evaluation import FoldEvaluator, load_run, summarize_per_scan, summary_means
from .metrics import json_number

log = logging.getLogger(__name__)

SENSITIVITY_FILE = "support_sensitivity.json"
KSHOT_FILE = "kshot.json"
#: The rules, stated once and copied into every result file.
ADMISSIBLE_RULE = (
    "admissible supports of query q: the fold's support scan, then the fold's other query scans in "
    "the fold's (sorted) order; never q, never a training or validation scan; a scan that does not "
    "show the organ is skipped for that organ"
)
KSHOT_RULE = (
    "k shots of query q: the first k admissible supports (the fold's support scan first); chunk p is "
    "segmented from the k supports' chunk-p slices (1/6, 1/2, 5/6 of each support's organ range), "
    "prototypes pooled over the shots as the method defines it"
)


# ---------------------------------------------------------------------- rules (pure)
def admissible_supports(fold, query_id: str, query_ids: Sequence[str] | None = None) -> list[str]:
    """Support candidates of query scan ``query_id`` in order: ``fold.support_id``, then the scans of
    ``query_ids`` (default ``fold.test_ids``) other than the query, in the fold's order.

    ValueError when ``query_id`` is not one of the query scans (a training scan is never a query here).
    """
    query_ids = [str(q) for q in (fold.test_ids if query_ids is None else query_ids)]
    if str(query_id) not in query_ids:
        raise ValueError(
            f"admissible_supports: scan {query_id} is not a query scan of fold {fold.index} ({', '.join(query_ids)})"
        )
    out = [str(fold.support_id)] + [q for q in query_ids if q != str(query_id)]
    bad = set(out) & (set(map(str, fold.train_ids)) | (set(map(str, fold.validation_ids)) - set(query_ids)))
    if bad or str(query_id) in out:  # by construction never; a guard against a malformed Fold
        raise ValueError(f"admissible_supports: fold {fold.index} would use {sorted(bad) or [query_id]} as support")
    return out


def kshot_supports(candidates: Sequence[str], k: int, query_id: str | None = None) -> list[str]:
    """The first ``k`` of ``candidates`` (admissible supports that show the organ, in order).

    ValueError when ``k < 1``, when there are fewer than ``k`` candidates, or when the query is among them.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"--shots: k = {k!r} must be an integer >= 1")
    if query_id is not None and str(query_id) in map(str, candidates):
        raise ValueError(f"kshot_supports: query scan {query_id} is among its own support candidates")
    if len(candidates) < k:
        raise ValueError(
            f"--shots: k = {k} needs {k} admissible supports; query {query_id} has {len(candidates)} "
            f"({', '.join(map(str, candidates)) or 'none'})"
        )
    return [str(c) for c in candidates[: int(k)]]


def parse_shots(value: str | int | Sequence[int], max_k: int) -> list[int]:
    """``"all"`` (1..max_k), an integer, or a comma list (``"1,2,4"``) -> sorted shot counts.

    ValueError naming the value when a count is < 1 or above ``max_k`` (the fold's admissible supports).
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return list(range(1, int(max_k) + 1))
        try:
            ks = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--shots: {value!r} is not 'all', an integer or a comma list of integers") from None
    elif isinstance(value, int):
        ks = [value]
    else:
        ks = [int(v) for v in value]
    if not ks:
        raise ValueError(f"--shots: {value!r} names no shot count")
    bad = [k for k in ks if k < 1 or k > max_k]
    if bad:
        raise ValueError(
            f"--shots: {', '.join(map(str, bad))} outside 1..{max_k} (this fold offers at most {max_k} "
            f"admissible supports per query: its support scan and its other query scans)"
        )
    return sorted(set(ks))


def query_spread(values: Mapping[str, Any], standard: str | None = None) -> dict[str, Any]:
    """Spread of one query's Dice over its supports: ``values`` {support: Dice or None}.

    Returns n, mean, sd (sample, ddof=1; None for n < 2), min, max, range and ``standard`` (the
    value of support ``standard``, None when absent). Fractions 0..1 as given.
    """
    arr = np.array([float(v) for v in values.values() if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    std = values.get(standard) if standard is not None else None
    if arr.size == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None, "range": None, "standard": std}
    return {
        "n": int(arr.size),
        "mean": json_number(arr.mean()),
        "sd": json_number(arr.std(ddof=1)) if arr.size > 1 else None,
        "min": json_number(arr.min()),
        "max": json_number(arr.max()),
        "range": json_number(arr.max() - arr.min()),
        "standard": std,
    }


def organ_mean_table(
    dice: Mapping[str, Mapping[str, Mapping[str, Any]]], organs: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """{query: {support: mean over the organs}} from ``dice[organ][query][support]`` (organs with a value only)."""
    out: dict[str, dict[str, Any]] = {}
    for organ in organs:
        for q, row in dice.get(organ, {}).items():
            for s, v in row.items():
                if v is not None:
                    out.setdefault(q, {}).setdefault(s, []).append(float(v))
    return {q: {s: json_number(float(np.mean(v))) for s, v in row.items()} for q, row in out.items()}


def sensitivity_stats(
    dice: Mapping[str, Mapping[str, Mapping[str, Any]]], organs: Sequence[str], standard: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(per_query, per_fold) of a sensitivity table ``dice[organ][query][support]``.

    per_query[organ or "mean"][query] = :func:`query_spread`; per_fold[organ or "mean"] = the mean
    over the queries of ``sd``, ``range``, ``mean`` and ``standard``, with ``n_queries``,
    ``worst`` / ``best`` (the fold's mean Dice when every query gets its worst / best support).
    The "mean" rows use the per-support mean over the organs (:func:`organ_mean_table`).
    """
    tables = {o: dice.get(o, {}) for o in organs}
    tables["mean"] = organ_mean_table(dice, organs)
    per_query: dict[str, Any] = {}
    per_fold: dict[str, Any] = {}
    for key, table in tables.items():
        rows = {q: query_spread(vals, standard) for q, vals in table.items()}
        per_query[key] = rows
        used = [r for r in rows.values() if r["n"] > 0]

        def avg(field: str, used: list = used) -> float | None:
            vals = [r[field] for r in used if r[field] is not None]
            return json_number(float(np.mean(vals))) if vals else None

        per_fold[key] = {
            "n_queries": len(used),
            "sd": avg("sd"),
            "range": avg("range"),
            "mean": avg("mean"),
            "standard": avg("standard"),
            "worst": avg("min"),
            "best": avg("max"),
        }
    return per_query, per_fold


# ---------------------------------------------------------------------- evaluations
def organ_candidates(ev: FoldEvaluator, organ: str, query_id: str) -> list[str]:
    """Admissible supports of ``query_id`` that show ``organ`` (in order)."""
    return [s for s in admissible_supports(ev.fold, query_id, ev.query_ids) if ev.support(s, organ) is not None]


def max_shots(ev: FoldEvaluator) -> int:
    """The largest k every (organ, query) of the fold can be given (queries showing the organ only)."""
    counts = []
    for organ in ev.organs:
        for q in ev.query_ids:
            if (ev.file_label(q) == ev.spec.label_id(organ)).any():
                counts.append(len(organ_candidates(ev, organ, q)))
    return min(counts) if counts else 0


def _header(ev: FoldEvaluator, source: Mapping[str, Any] | None) -> dict:
    """Run coordinates of a result file: ``source`` (run, checkpoint, step) + the fold's."""
    return {
        **dict(source or {}),
        **ev.header(),
        "query_scans": [str(q) for q in ev.query_ids],
        "standard_support": str(ev.fold.support_id),
        "n_parts": ev.n_parts,
    }


def support_sensitivity(
    model,
    cfg,
    device=None,
    progress: bool = True,
    split: str = "test",
    partial: str | Path | None = None,
    resume: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every admissible support of the fold as the 1-shot support of every query (module docstring).

    ``source``: the run's name, checkpoint and step (copied into the result). ``partial``: a file
    rewritten (atomically) after each support scan, so that ``resume`` (its content from an
    interrupted call with the same model) skips the supports already done.
    Returns the ``support_sensitivity.json`` dict: ``dice`` / ``hd95`` [organ][query][support]
    (fractions, mm; null where the organ is absent from the query), the support slices used,
    ``per_query`` and ``per_fold`` (:func:`sensitivity_stats`).
    """
    from ..io import write_json

    t0 = time.time()
    ev = FoldEvaluator(model, cfg, device, split)
    standard = str(ev.fold.support_id)
    pool = [standard] + [str(q) for q in ev.query_ids]
    dice: dict[str, dict[str, dict[str, Any]]] = {o: {str(q): {} for q in ev.query_ids} for o in ev.organs}
    hd95: dict[str, dict[str, dict[str, Any]]] = {o: {str(q): {} for q in ev.query_ids} for o in ev.organs}
    slices: dict[str, dict[str, list[int] | None]] = {}
    done: list[str] = []
    if resume:
        done = [s for s in resume.get("supports_done", []) if s in pool]
        for s in done:
            slices[s] = resume["support_slices"][s]
            for o in ev.organs:
                for q in map(str, ev.query_ids):
                    if s in resume["dice"][o][q]:
                        dice[o][q][s] = resume["dice"][o][q][s]
                        hd95[o][q][s] = resume["hd95"][o][q][s]
    todo = [s for s in pool if s not in done]
    n_jobs = sum(1 for s in todo for _ in ev.organs for q in ev.query_ids if str(q) != s)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_jobs, desc=f"supports of fold {cfg.data.fold}", unit="scan")
    head = _header(ev, source)
    for s in todo:
        slices[s] = {}
        for organ in ev.organs:
            sup = ev.support(s, organ)
            slices[s][organ] = list(sup.slices) if sup is not None else None
            for q in map(str, ev.query_ids):
                if q == s:
                    continue
                if sup is None:  # not admissible for this organ
                    if bar is not None:
                        bar.update(1)
                    continue
                row, _ = ev.score(organ, q, [sup])
                dice[organ][q][s] = None if row.get("absent") else row["dice"]
                hd95[organ][q][s] = None if row.get("absent") else row["hd95"]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(support=s, organ=organ)
        done.append(s)
        if partial is not None:
            write_json(partial, {**head, "supports_done": done, "support_slices": slices, "dice": dice, "hd95": hd95})
    if bar is not None:
        bar.close()
    per_query, per_fold = sensitivity_stats(dice, ev.organs, standard)
    return {
        **head,
        "rule": ADMISSIBLE_RULE,
        "supports": pool,
        "support_slices": slices,
        "dice": dice,
        "hd95": hd95,
        "per_query": per_query,
        "per_fold": per_fold,
        "units": {"dice": "fraction 0..1", "hd95": "mm", "sd": "sample standard deviation (ddof=1) over supports"},
        "device": str(ev.device),
        "seconds": round(time.time() - t0, 2),
    }


def kshot_evaluation(
    model,
    cfg,
    shots: str | int | Sequence[int] = "all",
    device=None,
    progress: bool = True,
    split: str = "test",
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The protocol with k support scans per query for each k of ``shots`` (module docstring).

    ``source``: the run's name, checkpoint and step (copied into the result). Returns the run's
    coordinates and ``{"max_shots", "points": [{"k", "supports": {organ: {query: [scan ids]}}, "per_scan":
    {organ: {query: row}}, "per_organ", "mean", "seconds"}]}``; rows and means as ``metrics.json``
    (``k = 1`` gives exactly its ``per_scan``, ``per_organ`` and ``mean``).
    """
    ev = FoldEvaluator(model, cfg, device, split)
    top = max_shots(ev)
    ks = parse_shots(shots, top)
    points = []
    for k in ks:
        t0 = time.time()
        per_scan: dict[str, dict[str, Any]] = {}
        used: dict[str, dict[str, list[str]]] = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ev.organs) * len(ev.query_ids), desc=f"fold {cfg.data.fold}, {k} shot(s)", unit="scan")
        for organ in ev.organs:
            per_scan[organ], used[organ] = {}, {}
            for q in map(str, ev.query_ids):
                if not (ev.file_label(q) == ev.spec.label_id(organ)).any():
                    ids, sups = [], []  # the query does not show the organ: an "absent" row
                elif k == 1:  # the standard protocol: the fold's support scan (error if it lacks the organ)
                    ids = [str(ev.fold.support_id)]
                    sups = [ev.standard_support(organ)]
                else:
                    ids = kshot_supports(organ_candidates(ev, organ, q), k, q)
                    sups = [ev.support(s, organ) for s in ids]
                row, _ = ev.score(organ, q, sups)
                per_scan[organ][q] = row
                used[organ][q] = ids
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        per_organ = summarize_per_scan(per_scan)
        points.append(
            {
                "k": k,
                "supports": used,
                "per_scan": per_scan,
                "per_organ": per_organ,
                "mean": summary_means(per_organ, ev.organs),
                "seconds": round(time.time() - t0, 2),
            }
        )
        log.info("fold %s, %d shot(s): mean Dice %s", cfg.data.fold, k, points[-1]["mean"]["dice"])
    return {
        **_header(ev, source),
        "rule": KSHOT_RULE,
        "admissible": ADMISSIBLE_RULE,
        "max_shots": top,
        "points": points,
        "units": {"dice": "fraction 0..1", "hd95": "mm", "asd": "mm"},
        "device": str(ev.device),
    }


# ---------------------------------------------------------------------- run folders
def _load_run(run_dir: str | Path, checkpoint: str | Path | None, device: str | None):
    cfg, ckpt, dev, model, meta = load_run(run_dir, checkpoint, device)
    return cfg, ckpt, dev, model, int(meta.get("step", -1))


def _environment(run_dir: Path, device) -> dict[str, Any]:
    """What computed the numbers, as ``metrics.json`` records it: the training start's record and this
    evaluation's (:mod:`crapnet_core.engine.environment`)."""
    from .environment import environment, read_run_environment

    return {"train": read_run_environment(run_dir), "evaluate": environment(device)}


def read_json_or_none(path: Path) -> dict[str, Any] | None:
    """The JSON content of ``path``, None when there is no such file (ValueError naming a broken one)."""
    path = Path(path)
    if not path.is_file():
        return None
    return read_json(path, invalid="delete it to recompute")


def _same_model(old: Mapping[str, Any] | None, cfg, checkpoint: Path, step: int) -> bool:
    return (
        bool(old)
        and old.get("config_hash") == cfg.config_hash()
        and old.get("checkpoint") == checkpoint.name
        and old.get("step") == step
    )


@contextmanager
def _writing_into(run_dir: Path, wait: bool, what: str):
    """The run folder checked writable (``OSError`` naming it) and held (its lock: ``RunFolderBusy``
    naming the holder, or ``wait``), as :func:`crapnet_core.engine.evaluation.evaluate` holds it."""
    from ..io import check_output_folder
    from .evaluation import read_run_config
    from .locks import run_lock

    read_run_config(run_dir)  # not a run folder: said before anything
    check_output_folder(run_dir, 2**20, what=f"run folder ({what})")
    with run_lock(run_dir, wait=wait):  # one writer per run folder (a training of it, another evaluation)
        yield


def evaluate_supports(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    wait: bool = False,
) -> dict[str, Any]:
    """Support-choice sensitivity of a trained run: writes ``RUN/support_sensitivity.json`` (atomically;
    ``metrics.json`` and the predictions are left alone) and returns its dict. Resumes an interrupted
    call from ``RUN/support_sensitivity.partial.json`` (same config hash and checkpoint).

    The run as :func:`crapnet_core.engine.evaluation.evaluate` uses it: its lock held (``wait``), the
    folder checked writable, the checkpoint its final intact one, of the run's config
    (:func:`~crapnet_core.engine.evaluation.load_run`)."""
    from ..io import write_json
    from .checkpoints import cpu_threads

    run_dir = Path(run_dir)
    with _writing_into(run_dir, wait, SENSITIVITY_FILE):
        cfg, ckpt, dev, model, step = _load_run(run_dir, checkpoint, device)
        partial = run_dir / SENSITIVITY_FILE.replace(".json", ".partial.json")
        old = read_json_or_none(partial)
        resume = old if _same_model(old, cfg, ckpt, step) else None
        source = {"run": run_dir.name, "checkpoint": ckpt.name, "step": step}
        with cpu_threads(cfg, dev):
            out = support_sensitivity(model, cfg, dev, progress=progress, partial=partial, resume=resume, source=source)
            out["environment"] = _environment(run_dir, dev)
        write_json(run_dir / SENSITIVITY_FILE, out)
        partial.unlink(missing_ok=True)
    return out


def evaluate_shots(
    run_dir: str | Path,
    shots: str | int | Sequence[int] = "all",
    checkpoint: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    wait: bool = False,
) -> dict[str, Any]:
    """k-shot evaluation of a trained run: writes ``RUN/kshot.json`` (atomically; ``metrics.json`` is
    left alone) and returns it. Points of earlier calls for other k with the same config hash and
    checkpoint are kept; the k asked for are recomputed. The run's lock, folder and checkpoint as
    :func:`evaluate_supports`."""
    from ..io import write_json
    from .checkpoints import cpu_threads

    run_dir = Path(run_dir)
    with _writing_into(run_dir, wait, KSHOT_FILE):
        cfg, ckpt, dev, model, step = _load_run(run_dir, checkpoint, device)
        source = {"run": run_dir.name, "checkpoint": ckpt.name, "step": step}
        with cpu_threads(cfg, dev):
            res = kshot_evaluation(model, cfg, shots, dev, progress=progress, source=source)
            res["environment"] = _environment(run_dir, dev)
        path = run_dir / KSHOT_FILE
        old = read_json_or_none(path)
        new_ks = {p["k"] for p in res["points"]}
        same = _same_model(old, cfg, ckpt, step)
        kept = [p for p in (old or {}).get("points", []) if p["k"] not in new_ks] if same else []
        out = {
            **{k: v for k, v in res.items() if k != "points"},
            "points": sorted(kept + res["points"], key=lambda p: p["k"]),
        }
        write_json(path, out)
    return out


def read_result(run_dir: str | Path, name: str) -> dict[str, Any]:
    """``RUN/support_sensitivity.json`` or ``RUN/kshot.json`` (FileNotFoundError / ValueError naming the file)."""
    path = Path(run_dir) / name
    data = read_json_or_none(path)
    if data is None:
        raise FileNotFoundError(
            f"{path}: not found; run crapnet evaluate {run_dir} "
            f"{'--supports all' if name == SENSITIVITY_FILE else '--shots all'} first"
        )
    return data


__all__ = [
    "SENSITIVITY_FILE",
    "KSHOT_FILE",
    "ADMISSIBLE_RULE",
    "KSHOT_RULE",
    "admissible_supports",
    "kshot_supports",
    "parse_shots",
    "query_spread",
    "organ_mean_table",
    "sensitivity_stats",
    "organ_candidates",
    "max_shots",
    "support_sensitivity",
    "kshot_evaluation",
    "evaluate_supports",
    "evaluate_shots",
    "read_result",
    "read_json_or_none",
]

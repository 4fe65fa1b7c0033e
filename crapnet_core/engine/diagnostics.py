"""Inside the attention: what the cycle-resemblance blocks of a trained run actually do (issue 8 §3).

Notation of the paper (Sec. 3.4-3.6, Eq. 9-16) and of :mod:`crapnet_core.models.attention`: a block
updates the pixels j of one side (N_u of them) from the pixels i of the other side (N_o).

Per block and per episode (:func:`block_statistics`, from a :func:`trace_attention` of one
forward pass):

* **cycle consistency** -- share of updated pixels whose cycle comes back to themselves,
  j*(j) = j (Eq. 11-12; :func:`cycle_consistency`). 1/N_u for a degenerate cycle that sends
  every pixel to one pixel, 1 for a perfect one-to-one match.
* **column entropy** -- entropy (nats) of the column softmax softmax_j'(A[j', i]) that
  aggregates the values for other-side pixel i (Eq. 1, 1/C(x)), mean over the columns i,
  against its maximum log N_u (uniform attention; :func:`column_entropy`).
* **residual ratio** -- ||W_z y|| / ||x|| (Frobenius norms over channels and pixels of one
  episode; Eq. 7-8: z = W_z y + x, so W_z y = z - x): how much the block changes its input
  (0 = identity, as at initialisation; :func:`residual_ratio`).
* **resemblance weights** w = N_u softmax_j(cos(x(j), x(j*))) (Eq. 13, mean one):
  their distribution (:func:`weight_summary`; all 1 when every cycle comes back to a
  pixel equally resembling its start), and their entropy against the bound the formula sets.

What the formula itself allows (:func:`eq13_bounds`): Eq. 13 is a softmax over cosine
similarities in [-1, 1] *without a temperature*, so two weights differ by at most a factor e^2;
at N = 256 pixels the largest weight is at most N e^2 / (e^2 + N - 1) = 7.2 (mean-one scale) and
the entropy of softmax_j is at least 0.914 log N (reached with about a fifth of the logits at +1,
the rest at -1). A trained model cannot make Eq. 13 selective beyond that, whatever it learns.
The **column entropy** above is a different quantity: that of this project's own column softmax
of A with its 1/sqrt(d) scale (Eq. 1's normaliser C(x) read as a softmax), which has no such
bound. It is a reading of the implementation, not a quantity the paper defines.

Per support (:func:`prototype_counts`): the number of valid local foreground / background
prototypes under the ``threshold`` rule (0.95, Sec. 3.6) on the classifier's prototype grid,
and the grid size.

Test Dice of variants (:func:`variant_dice`), same protocol as
:func:`crapnet_core.engine.evaluation.evaluate_model`; a variant is an attention mode of the model
(:attr:`crapnet_core.models.segmenter.FewShotSegmenter.attention_mode`, defined there):

* ``full`` -- the trained model as it is (prototypes and scores from z, our reading);
* ``bypass`` -- attention skipped, z = x (the blocks' contribution removed);
* ``literal`` -- Eq. 14-16 read literally: local prototypes by CARAFE++ from z_s (Eq. 14),
  the global prototypes by masked average pooling of x_s (Eq. 15) and the scores against
  x_q (Eq. 16), i.e. the attended query features z_q are not used at all.

Everything here runs under ``torch.no_grad`` on a model in eval mode and never changes
the model's parameters; the hooks are removed on exit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.attention import CycleResemblance, CycleResemblanceBlock
from ..models.base import eval_mode, fg_bg
from ..models.segmenter import ATTENTION_MODES, FewShotSegmenter

#: the variants of :func:`variant_dice`: the segmenter's attention modes
VARIANTS = ATTENTION_MODES


# ---------------------------------------------------------------------- the measured quantities
def cycle_consistency(cyc: CycleResemblance) -> torch.Tensor:
    """Share of updated pixels j with j*(j) = j (Eq. 12), float32 (B,) in [1/N_u .. 1] (or 0)."""
    n = cyc.cycle_back.shape[1]
    ident = torch.arange(n, device=cyc.cycle_back.device).unsqueeze(0)
    return (cyc.cycle_back == ident).float().mean(dim=1)


def column_entropy(cyc: CycleResemblance) -> tuple[torch.Tensor, float]:
    """Mean over other-side pixels i of the entropy (nats) of softmax_j'(A[j', i]); and log N_u.

    Returns ((B,) float32, log N_u). Uniform columns give exactly log N_u; one-hot columns 0.
    """
    p = cyc.column_softmax.float()  # (B, N_u, N_o), each column sums to one over dim 1
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1)  # (B, N_o); 0 log 0 = 0
    return ent.mean(dim=1), math.log(p.shape[1])


def eq13_bounds(n: int) -> dict[str, float]:
    """What Eq. 13 (softmax over cosine similarities, no temperature) allows for ``n`` pixels.

    Returns {"n", "max_weight" (largest w = n softmax_j on the mean-one scale: one logit at +1,
    the rest at -1), "max_ratio" (e^2: largest ratio of two weights), "min_entropy_ratio" (the
    smallest entropy of softmax_j over log n, a vertex of [-1, 1]^n with k logits at +1),
    "min_entropy_k" (that k)}. Errors: ``ValueError`` for n < 2.
    """
    if int(n) < 2:
        raise ValueError(f"eq13_bounds: n = {n} must be at least 2")
    n = int(n)
    e2 = math.e**2
    best = (math.inf, 0)
    # dH/dz_i = -p_i (z_i - sum_j p_j z_j): along each logit the entropy rises up to the weighted mean
    # and falls beyond it, so its minimum over the box [-1, 1]^n lies at a vertex (k logits at +1)
    for k in range(1, n):
        z = k * e2 + (n - k)
        p_hi, p_lo = e2 / z, 1.0 / z
        ent = -(k * p_hi * math.log(p_hi) + (n - k) * p_lo * math.log(p_lo))
        best = min(best, (ent, k))
    return {
        "n": n,
        "max_weight": n * e2 / (e2 + n - 1),
        "max_ratio": e2,
        "min_entropy_ratio": best[0] / math.log(n),
        "min_entropy_k": best[1],
    }


def weight_entropy(cyc: CycleResemblance) -> torch.Tensor:
    """Entropy (nats) of Eq. 13's softmax_j over the updated pixels, (B,) float32 (w / N_u is that softmax)."""
    p = cyc.weights.float() / cyc.weights.shape[1]
    return -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1)


def residual_ratio(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||W_z y|| / ||x|| per episode with W_z y = z - x (Eq. 7/8); x, z (B, C, H, W) -> (B,)."""
    x = x.float().flatten(1)
    wy = z.float().flatten(1) - x
    return wy.norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)


def weight_summary(weights: torch.Tensor) -> dict[str, float]:
    """Distribution of the resemblance weights w (Eq. 13, scaled to mean one): mean, std, quantiles.

    weights: tensor or array, any shape (all values pooled). Returns {"mean", "std", "min", "q05", "median",
    "q95", "max", "share_above_2"} (std with ddof=0 over the pooled pixels).
    """
    if isinstance(weights, torch.Tensor):
        w = weights.detach().float().flatten().cpu().numpy()
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
    q = np.quantile(w, [0.05, 0.5, 0.95])
    return {
        "mean": float(w.mean()),
        "std": float(w.std()),
        "min": float(w.min()),
        "q05": float(q[0]),
        "median": float(q[1]),
        "q95": float(q[2]),
        "max": float(w.max()),
        "share_above_2": float((w > 2).mean()),
    }


# ---------------------------------------------------------------------- tracing the blocks
@dataclass
class BlockTrace:
    """Inputs and output of one block call, and its Eq. 9-13 quantities.

    branch: "support" or "query" (the side the block updates); index: position in its stack;
    x (B, C, H, W) the updated side's input, other (B, C, H', W') the fixed side, z the output.
    """

    branch: str
    index: int
    x: torch.Tensor
    other: torch.Tensor
    z: torch.Tensor
    cycle: CycleResemblance


@contextlib.contextmanager
def trace_attention_blocks(blocks: Sequence[nn.Module], branch: str = "support") -> Iterator[list[BlockTrace]]:
    """Record every call of the given :class:`~crapnet_core.models.attention.CycleResemblanceBlock` s.

    Forward hooks (removed on exit) capture each call's inputs and output; the Eq. 9-13
    quantities are recomputed with ``block.cycle`` on the same inputs (the block's own code,
    so what is measured is what the block computed). ``blocks`` may also be a sequence of
    ``(branch, index, block)``. Yields the list the calls are appended to.
    """
    traces: list[BlockTrace] = []
    handles = []
    items = [b if isinstance(b, tuple) else (branch, i, b) for i, b in enumerate(blocks)]
    for name, i, block in items:
        if not isinstance(block, CycleResemblanceBlock):
            raise TypeError(f"trace_attention_blocks: {type(block).__name__} is not a CycleResemblanceBlock")

        def hook(mod, inputs, output, name=name, i=i):
            x_u, x_o = inputs[0], inputs[1]
            with torch.no_grad():
                cyc = mod.cycle(x_u, x_o)
            traces.append(BlockTrace(name, i, x_u.detach(), x_o.detach(), output.detach(), cyc))

        handles.append(block.register_forward_hook(hook))
    try:
        yield traces
    finally:
        for h in handles:
            h.remove()


def trace_attention(model: nn.Module):
    """:func:`trace_attention_blocks` over every block of ``model.attention`` (support and query
    branches); a model without attention (the baselines) records nothing."""
    attention = getattr(model, "attention", None)
    items = []
    if attention is not None:
        for name, blocks in (("support", attention.support_blocks), ("query", attention.query_blocks)):
            items += [(name, i, b) for i, b in enumerate(blocks)]
    return trace_attention_blocks(items)


def block_statistics(traces: Sequence[BlockTrace]) -> list[dict[str, Any]]:
    """One row per (block call, episode of the batch): branch, block, the four quantities.

    Keys: branch, block, episode, cycle_consistency, column_entropy, log_n, entropy_ratio
    (entropy / log N_u), residual_ratio, w_mean, w_std, w_min, w_max, n_updated, n_other, and
    Eq. 13 against its bound (:func:`eq13_bounds`): w_entropy_ratio (entropy of softmax_j / log N_u),
    w_entropy_bound (the formula's minimum of that ratio), w_max_bound (the formula's largest w).
    """
    rows = []
    for t in traces:
        cc = cycle_consistency(t.cycle)
        ent, log_n = column_entropy(t.cycle)
        rr = residual_ratio(t.x, t.z)
        w = t.cycle.weights.float()
        went = weight_entropy(t.cycle)
        bound = eq13_bounds(w.shape[1])
        for b in range(cc.shape[0]):
            rows.append(
                {
                    "branch": t.branch,
                    "block": t.index + 1,
                    "episode": b,
                    "cycle_consistency": float(cc[b]),
                    "column_entropy": float(ent[b]),
                    "log_n": log_n,
                    "entropy_ratio": float(ent[b]) / log_n if log_n > 0 else float("nan"),
                    "residual_ratio": float(rr[b]),
                    "w_mean": float(w[b].mean()),
                    "w_std": float(w[b].std(unbiased=False)),
                    "w_min": float(w[b].min()),
                    "w_max": float(w[b].max()),
                    "n_updated": int(t.cycle.cycle_back.shape[1]),
                    "n_other": int(t.cycle.best_other.shape[1]),
                    "w_entropy_ratio": float(went[b]) / log_n if log_n > 0 else float("nan"),
                    "w_entropy_bound": bound["min_entropy_ratio"],
                    "w_max_bound": bound["max_weight"],
                }
            )
    return rows


def resemblance_weights(traces: Sequence[BlockTrace]) -> dict[tuple[str, int], np.ndarray]:
    """{(branch, block): all w values of those calls} (for histograms)."""
    out: dict[tuple[str, int], list[np.ndarray]] = {}
    for t in traces:
        out.setdefault((t.branch, t.index + 1), []).append(t.cycle.weights.float().flatten().cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


# ---------------------------------------------------------------------- prototypes
def prototype_counts(
    classifier: nn.Module, features: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor
) -> dict[str, Any]:
    """Valid local prototypes of a support under the classifier's threshold rule (Sec. 3.6).

    classifier: :class:`~crapnet_core.models.prototypes.PrototypeClassifier` (its ``grid_features``
    and ``threshold``; ``eval()`` for the test-time grid); features (B, C, h, w) the support
    features the prototypes are made from (z_s); fg, bg (B, H, W) masks in [0, 1].
    Returns {"fg": (B,) int, "bg": (B,) int, "grid": (gh, gw)}; SSL-PANet (no grid): zeros, (0, 0).
    """
    from ..models.prototypes import local_prototypes

    b = features.shape[0]
    with torch.no_grad():
        grid = classifier.grid_features(features)
    if grid is None:
        return {"fg": np.zeros(b, int), "bg": np.zeros(b, int), "grid": (0, 0)}
    _, fg_valid, bg_valid = local_prototypes(grid, fg, bg, classifier.threshold)
    return {
        "fg": fg_valid.sum(1).cpu().numpy().astype(int),
        "bg": bg_valid.sum(1).cpu().numpy().astype(int),
        "grid": tuple(int(s) for s in grid.shape[-2:]),
    }


# ---------------------------------------------------------------------- episodes of a run
def training_episodes(cfg, n: int = 8, seed: int = 1234) -> list[dict[str, Any]]:
    """``n`` self-supervised training episodes of ``cfg``'s fold (superpixel pseudo-labels).

    Drawn from the run's own :class:`~crapnet_core.data.episodes.EpisodeDataset` with augmentation,
    at seeded indices (``seed``), so the diagnostics see what training saw.
    """
    from .training import build_episodes

    dataset, _, _, _ = build_episodes(cfg)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(dataset), size=min(int(n), len(dataset)), replace=False)
    return [dict(dataset[int(i)], organ="superpixel") for i in idx]


def protocol_pairs(cfg, per_scan: int = 1, organs: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Support/query slice pairs of the 1-shot test protocol of ``cfg``'s fold.

    For each organ and test scan: ``per_scan`` query slices (the middle slice of chunks
    spread over the organ's range) with the support slice of their chunk
    (:mod:`crapnet_core.engine.evaluation`). Each pair: support_image (3, S, S), support_mask (S, S),
    query_image, query_mask, organ, scan_id, slice_index.
    """
    from ..data import datasets as ds
    from ..data.protocol import make_fold
    from .evaluation import chunk_assignment, organ_range, support_slices

    spec = ds.resolve_dataset(cfg.data.dataset, cfg.data.labels, cfg.data.data_root)
    fold = make_fold(
        ds.scan_ids(spec), cfg.data.fold, cfg.data.n_folds, validation=cfg.data.n_validation
    )  # same training scans as the run
    stats = ds.normalization_stats(spec, fold.train_ids)
    size, n_parts = cfg.data.input_size, cfg.eval.n_parts
    s_vol = ds.load_volume(spec, fold.support_id)
    s_norm = ds.normalize(s_vol, spec, stats)
    pairs = []
    vols = {sid: ds.load_volume(spec, sid) for sid in fold.test_ids}
    norms = {sid: ds.normalize(v, spec, stats) for sid, v in vols.items()}
    for organ in organs or cfg.data.test_group:
        lid = spec.label_id(organ)
        s_zs = ds.organ_slices(s_vol, organ, spec, warn=False).tolist()
        if not s_zs:
            continue
        chosen = support_slices(s_zs, n_parts)
        for sid in fold.test_ids:
            rng = organ_range(ds.organ_slices(vols[sid], organ, spec, warn=False).tolist())
            if rng is None:
                continue
            assignment = chunk_assignment(*rng, n_parts)
            parts = np.linspace(0, n_parts - 1, int(per_scan)).round().astype(int) if per_scan > 1 else [n_parts // 2]
            for part in parts:
                zs = [z for z, p in assignment if p == int(part)]
                if not zs:
                    continue
                z = zs[len(zs) // 2]
                pairs.append(
                    {
                        "support_image": ds.slice_tensor(s_norm, chosen[int(part)], size),
                        "support_mask": ds.mask_tensor(s_vol.label == lid, chosen[int(part)], size),
                        "query_image": ds.slice_tensor(norms[sid], z, size),
                        "query_mask": ds.mask_tensor(vols[sid].label == lid, z, size),
                        "organ": organ,
                        "scan_id": sid,
                        "slice_index": int(z),
                    }
                )
    return pairs


def diagnose(
    model: nn.Module, episodes: Sequence[dict[str, Any]], source: str, batch_size: int = 8
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[tuple[str, int], np.ndarray]]:
    """Run ``model`` (eval mode, no gradients) on ``episodes`` and measure everything.

    Returns (block_rows, prototype_rows, weights): block_rows from :func:`block_statistics`
    with ``source``, ``organ`` added; prototype_rows one per episode (source, organ, scan_id,
    n_fg_local, n_bg_local, grid); weights {(branch, block): w values}.
    """
    device = next(model.parameters()).device
    block_rows: list[dict[str, Any]] = []
    proto_rows: list[dict[str, Any]] = []
    weights: dict[tuple[str, int], list[np.ndarray]] = {}
    with eval_mode(model):
        for start in range(0, len(episodes), batch_size):
            batch = episodes[start : start + batch_size]
            s_img = torch.stack([e["support_image"] for e in batch]).to(device)
            s_mask = torch.stack([e["support_mask"] for e in batch]).to(device)
            q_img = torch.stack([e["query_image"] for e in batch]).to(device)
            with torch.no_grad(), trace_attention(model) as traces:
                out = model(s_img, s_mask, q_img)
            for row in block_statistics(traces):
                e = batch[row["episode"]]
                block_rows.append(
                    dict(
                        row,
                        source=source,
                        organ=e.get("organ"),
                        scan_id=e.get("scan_id"),
                        episode=start + row["episode"],
                    )
                )
            for key, w in resemblance_weights(traces).items():
                weights.setdefault(key, []).append(w)
            fg, bg = fg_bg(out.support_mask)
            counts = prototype_counts(model.classifier, out.support_features, fg, bg)
            for i, e in enumerate(batch):
                proto_rows.append(
                    {
                        "source": source,
                        "organ": e.get("organ"),
                        "scan_id": e.get("scan_id"),
                        "n_fg_local": int(counts["fg"][i]),
                        "n_bg_local": int(counts["bg"][i]),
                        "grid": "x".join(map(str, counts["grid"])),
                        "fg_fraction": float(fg[i].mean()),
                    }
                )
    return block_rows, proto_rows, {k: np.concatenate(v) for k, v in weights.items()}


def variant_dice(
    model: nn.Module, cfg, variants: Sequence[str] = VARIANTS, device=None, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """Test Dice of each variant (an attention mode of ``model``, :data:`VARIANTS`) with the run's 1-shot protocol.

    ``model``: a :class:`~crapnet_core.models.segmenter.FewShotSegmenter`, evaluated in each mode and left
    in its own mode afterwards; another model can only be evaluated as ``full`` (TypeError otherwise,
    ValueError for an unknown variant). Returns {variant: {"dice": {organ: fraction, "mean": fraction},
    "per_scan": {organ: {scan: fraction}}}}; no file is written (predictions are not saved).
    """
    from .evaluation import evaluate_model
    from .stats import per_scan_from_metrics

    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"variant: {v!r} is not one of {', '.join(VARIANTS)}")
        if v != "full" and not isinstance(model, FewShotSegmenter):
            raise TypeError(
                f"variant_dice: variant {v!r} is an attention mode of a FewShotSegmenter "
                f"(crapnet, alpnet, panet); got {type(model).__name__}"
            )
    out = {}
    for v in variants:
        mode = model.attention_mode_as(v) if isinstance(model, FewShotSegmenter) else contextlib.nullcontext()
        with mode:
            m = evaluate_model(model, cfg, device, out_dir=None, progress=progress, save_predictions=False)
        dice = {o: r["dice_mean"] for o, r in m["per_organ"].items()}
        dice["mean"] = m["mean"]["dice"]
        out[v] = {"dice": dice, "per_scan": per_scan_from_metrics(m)}
    return out


def inside_attention(
    run_dir,
    n_train: int = 8,
    per_scan: int = 1,
    variants: Sequence[str] = VARIANTS,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """All diagnostics of a trained run (its ``config.json`` and ``checkpoints/last.pt``).

    Returns {"config", "blocks": rows, "prototypes": rows, "weights": {source: {(branch, block): w}},
    "variants": :func:`variant_dice`} on ``n_train`` training episodes and the test pairs
    (:func:`protocol_pairs` with ``per_scan``). Nothing is written to the run folder.
    """
    from pathlib import Path

    from .checkpoints import cpu_threads, load_model, resolve_device, run_checkpoint, run_hashes
    from .experiment import ExperimentConfig

    run_dir = Path(run_dir)
    cfg = ExperimentConfig.load(run_dir / "config.json")
    ckpt, state = run_checkpoint(run_dir, cfg)  # last.pt or its intact copy; belongs to the run's config
    dev = resolve_device(device or cfg.train.device)
    model, _ = load_model(cfg, ckpt, dev, state=state, run_hashes=run_hashes(run_dir, cfg))
    blocks, protos, weights = [], [], {}
    with cpu_threads(cfg, dev):
        for source, eps in (
            ("training episodes", training_episodes(cfg, n_train)),
            ("test pairs", protocol_pairs(cfg, per_scan)),
        ):
            b, p, w = diagnose(model, eps, source)
            blocks += b
            protos += p
            weights[source] = w
        variants_out = variant_dice(model, cfg, variants, dev, progress) if variants else {}
    return {"config": cfg, "blocks": blocks, "prototypes": protos, "weights": weights, "variants": variants_out}


# ---------------------------------------------------------------------- tables and figures
def block_table(rows: Sequence[dict[str, Any]]):
    """Mean over episodes per (source, branch, block): cycle consistency, entropy / log N,
    ||W_z y|| / ||x||, std and max of w (a pandas DataFrame)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    cols = {
        "cycle_consistency": "cycle j*=j",
        "entropy_ratio": "entropy / log N",
        "column_entropy": "entropy (nats)",
        "log_n": "log N",
        "residual_ratio": "‖W_z y‖/‖x‖",
        "w_std": "std w",
        "w_max": "max w",
    }
    out = frame.groupby(["source", "branch", "block"])[list(cols)].mean().rename(columns=cols)
    return out


def prototype_table(rows: Sequence[dict[str, Any]]):
    """Mean number of valid local foreground / background prototypes per (source, organ), the
    share of supports with no local foreground prototype, and the grid."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    g = frame.groupby(["source", "organ"])
    out = pd.DataFrame(
        {
            "supports": g.size(),
            "grid": g["grid"].agg(lambda v: ", ".join(sorted(set(v)))),
            "fg share of image": g["fg_fraction"].mean(),
            "local fg prototypes": g["n_fg_local"].mean(),
            "no local fg (share)": g["n_fg_local"].agg(lambda v: float((v == 0).mean())),
            "local bg prototypes": g["n_bg_local"].mean(),
        }
    )
    return out


def variant_table(variants: dict[str, dict[str, Any]]):
    """Test Dice (0-100) per organ and mean for each variant, rows in :data:`VARIANTS` order."""
    import pandas as pd

    from .stats import ORGAN_SHORT

    rows = {
        v: {ORGAN_SHORT.get(k, k): (None if x is None else 100 * x) for k, x in d["dice"].items()}
        for v, d in variants.items()
    }
    labels = {
        "full": "full (trained model)",
        "bypass": "attention bypassed (z = x)",
        "literal": "Eq. 14-16 literal (global prototype and scores from x)",
    }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = [labels.get(i, i) for i in frame.index]
    return frame


def plot_blocks(rows: Sequence[dict[str, Any]]):
    """Three panels against the block index: cycle consistency, entropy / log N, ||W_z y||/||x||;
    one line per (source, branch), mean over episodes with the interquartile range shaded."""
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if frame.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no attention blocks", ha="center", va="center", transform=ax.transAxes)
        return fig
    for ax, (col, title) in zip(
        axes,
        (
            ("cycle_consistency", "cycle consistency (share j* = j)"),
            ("entropy_ratio", "column-softmax entropy / log N"),
            ("residual_ratio", "‖W_z y‖ / ‖x‖"),
        ),
    ):
        for (source, branch), grp in frame.groupby(["source", "branch"]):
            st = grp.groupby("block")[col]
            x = st.mean().index
            ax.plot(x, st.mean().values, marker="o", label=f"{source}, {branch} branch")
            ax.fill_between(x, st.quantile(0.25).values, st.quantile(0.75).values, alpha=0.15)
        ax.set_title(title)
        ax.set_xlabel("block")
        ax.set_xticks(sorted(frame.block.unique()))
    axes[1].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_weights(weights: dict[str, dict[tuple[str, int], np.ndarray]], bins: int = 60):
    """Histograms of the resemblance weights w (Eq. 13, mean one): one panel per source, one
    line per (branch, block) (log count axis)."""
    import matplotlib.pyplot as plt

    sources = [s for s, w in weights.items() if w]
    fig, axes = plt.subplots(1, max(1, len(sources)), figsize=(6.5 * max(1, len(sources)), 3.6), squeeze=False)
    if not sources:
        axes[0, 0].text(0.5, 0.5, "no attention blocks", ha="center", va="center", transform=axes[0, 0].transAxes)
        return fig
    for ax, source in zip(axes[0], sources):
        allw = np.concatenate(list(weights[source].values()))
        edges = np.linspace(0, max(2.0, float(np.quantile(allw, 0.999))), bins + 1)
        for (branch, block), w in sorted(weights[source].items()):
            hist, _ = np.histogram(w, bins=edges)
            ax.step(edges[:-1], hist, where="post", label=f"{branch} {block}", lw=1)
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("w (1 = uniform)")
        ax.set_ylabel("pixels")
        ax.set_title(source)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


__all__ = [
    "block_table",
    "prototype_table",
    "variant_table",
    "plot_blocks",
    "plot_weights",
    "VARIANTS",
    "cycle_consistency",
    "column_entropy",
    "residual_ratio",
    "weight_summary",
    "BlockTrace",
    "trace_attention",
    "trace_attention_blocks",
    "block_statistics",
    "resemblance_weights",
    "prototype_counts",
    "eq13_bounds",
    "weight_entropy",
    "training_episodes",
    "protocol_pairs",
    "diagnose",
    "variant_dice",
    "inside_attention",
]

"""The 1-shot evaluation protocol of SSL-ALPNet (Ouyang et al., 2020), followed by the paper.

For one fold and one test organ:

1. The support is the fold's support scan (``protocol.make_fold(...).support_id``). Let
   ``zs`` be the sorted list of its n slices that contain the organ.
2. Each test (query) scan's organ range ``[z_min, z_max]`` (first and last slice holding
   the organ in the ground truth) is split into ``n_parts = 3`` equal chunks; slice ``z``
   belongs to chunk ``floor((z - z_min) * n_parts / (z_max - z_min))`` clipped to
   ``n_parts - 1`` (:func:`chunk_index`).
3. Chunk p is segmented with the support slice ``zs[floor(f_p * n)]``,
   ``f_p = (2p + 1) / (2 n_parts)`` = 1/6, 1/2, 5/6 (:func:`support_positions`).
4. Only the query slices in ``[z_min, z_max]`` are predicted and scored. TP, FP and FN are
   summed over those slices: one Dice per scan and organ (:mod:`crapnet_core.engine.metrics`).
   Means per organ are over scans, the overall mean is over organs.

Beyond the paper, and reported separately (``dice_lcc`` next to ``dice``): the Dice of the
largest 3-D connected component of each scan's prediction on the scored slab
(:func:`crapnet_core.engine.metrics.largest_component`, 26-connectivity), a standard
post-processing step in medical segmentation. ``dice`` and the saved predictions are
always the raw model output.

Beyond the paper, HD95 and ASD (mm, from the volume spacing) are computed on the same
scored slab with MONAI; an empty prediction makes them undefined (``null``, left out of
the means and counted in ``n_empty_pred``; see :mod:`crapnet_core.engine.metrics`).

Grid: the model sees the canonical 256 x 256 grid (:mod:`crapnet_core.data.geometry`); its
foreground probability is mapped back to the FILE's own in-plane grid (bilinear; zero
outside a preset crop) before the 0.5 threshold, and Dice/HD95/ASD are computed there
against the file's own label voxels with the file's spacing (organ range included).

The saved predictions ``RUN/predictions/<scan>_<organ>.nii.gz`` hold 1 where the model
predicts the organ on the scored slices and 0 everywhere else, in the input file's shape,
axis order and affine: Dice recomputed with any tool on the whole volume equals the reported one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_json
from .metrics import Counts, confusion_counts, json_number, largest_component, nanmean, nanstd, surface_distances
from .prediction import (  # the protocol's slice rules and the prediction core (shared with `crapnet segment`)
    SupportSet,
    chunk_assignment,
    organ_range,
    predict_chunks,
    stack_shots,
    support_slices,
    support_tensors,
)

log = logging.getLogger(__name__)

EMPTY_PREDICTION_POLICY = (
    "HD95/ASD are undefined when the prediction (or ground truth) on the scored slices is empty: "
    "recorded as null, left out of the HD95/ASD means and counted in n_empty_pred; Dice is 0 there "
    "and always included."
)


# ---------------------------------------------------------------------- evaluation
def prediction_file_name(scan_id: str, organ: str) -> str:
    """``<scan>_<organ>.nii.gz`` with the organ as one safe file-name part (``paths.safe_name``:
    ``"left kidney"`` -> ``left_kidney``, ``"a/b"`` -> ``a_b``; never a sub-folder)."""
    from ..paths import safe_name

    return f"{safe_name(scan_id)}_{safe_name(organ)}.nii.gz"


#: Scans a run can be evaluated on: the fold's test scans or its held-out validation scan.
SPLITS = ("test", "validation")


def metrics_filename(split: str = "test") -> str:
    """``metrics.json`` for the test split, ``metrics_validation.json`` for the validation split."""
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not one of {', '.join(SPLITS)}")
    return "metrics.json" if split == "test" else f"metrics_{split}.json"


class FoldEvaluator:
    """The protocol of one fold with one model, scan by scan: what :func:`evaluate_model`, the
    support-choice sensitivity and the k-shot evaluation (:mod:`crapnet_core.engine.support`) share.

    ``support(scan_id, organ)`` prepares any scan of the fold as a support (None when the organ is
    absent from it); ``score(organ, query_id, supports)`` segments one query scan's organ range with
    the support scans given (one = the 1-shot protocol; K = k shots) and returns its metrics row and
    prediction. Volumes, normalised queries and support tensors are cached.
    """

    def __init__(self, model, cfg, device=None, split: str = "test") -> None:
        import torch

        from ..data import datasets as ds
        from ..data.protocol import make_fold
        from .checkpoints import resolve_device

        if split not in SPLITS:
            raise ValueError(f"split: {split!r} is not one of {', '.join(SPLITS)}")
        self.model, self.cfg, self.split = model, cfg, split
        self.device = torch.device(device) if device is not None else resolve_device(cfg.train.device)
        self.spec = ds.resolve_dataset(cfg.data.dataset, cfg.data.labels, cfg.data.data_root)
        self.fold = make_fold(ds.scan_ids(self.spec), cfg.data.fold, cfg.data.n_folds, validation=cfg.data.n_validation)
        if split == "validation" and not self.fold.validation_ids:
            raise ValueError(
                "split validation: this run was trained with data.validation=false, so no scan was held out of its "
                "training; train with --set data.validation=true to evaluate on a validation scan"
            )
        self.query_ids = self.fold.validation_ids if split == "validation" else self.fold.test_ids
        self.stats = ds.normalization_stats(self.spec, self.fold.train_ids)
        self.organs = list(cfg.data.test_group)
        for organ in self.organs:
            self.spec.label_id(organ)  # clear DatasetError when the dataset does not label the organ
        self.n_parts = cfg.eval.n_parts
        self.size = cfg.data.input_size
        model.eval()
        model.to(self.device)
        self._supports: dict[tuple[str, str], SupportSet | None] = {}
        self._file_labels: dict[str, np.ndarray] = {}  # scans' labels on their own grid (canonical order)
        self._norm: dict[str, np.ndarray] = {}
        self._image_labels: dict[str, np.ndarray] = {}  # support scans' labels on their image's array

    def file_label(self, scan_id: str) -> np.ndarray:
        from ..data import datasets as ds

        if scan_id not in self._file_labels:
            self._file_labels[scan_id] = ds.load_volume(self.spec, scan_id).file_label()
        return self._file_labels[scan_id]

    def normalized(self, scan_id: str) -> np.ndarray:
        from ..data import datasets as ds

        if scan_id not in self._norm:
            self._norm[scan_id] = ds.normalize(ds.load_volume(self.spec, scan_id), self.spec, self.stats)
        return self._norm[scan_id]

    def support(self, scan_id: str, organ: str) -> SupportSet | None:
        """Scan ``scan_id`` as the support of ``organ``: its slices at 1/6, 1/2, 5/6 of the organ's
        range (on the model grid, from the file's own labels so that small structures survive the
        in-plane step) and their tensors; None when the scan does not show the organ."""
        from ..data import datasets as ds

        key = (str(scan_id), organ)
        if key not in self._supports:
            vol = ds.load_volume(self.spec, scan_id)  # the pair rule and the label check, as for training
            if scan_id not in self._image_labels:  # the label file on the image's array (the pair rule)
                self._image_labels[scan_id] = vol.label_on_image_axes()
            s_fg, _ = vol.geometry.mask_to_model(self._image_labels[scan_id] == self.spec.label_id(organ))
            s_zs = np.flatnonzero(s_fg.any(axis=(0, 1))).astype(np.int64)
            if s_zs.size == 0:
                self._supports[key] = None
            else:
                chosen = support_slices(s_zs.tolist(), self.n_parts)
                images, masks = support_tensors(
                    self.normalized(scan_id), s_fg, chosen, self.size, source=str(vol.label_path)
                )
                self._supports[key] = SupportSet(
                    str(scan_id), tuple(int(z) for z in chosen), int(s_zs.size), images, masks
                )
        return self._supports[key]

    def standard_support(self, organ: str) -> SupportSet:
        """The fold's support scan for ``organ`` (DatasetError when it does not show the organ)."""
        from ..data import datasets as ds

        sup = self.support(self.fold.support_id, organ)
        if sup is None:
            vol = ds.load_volume(self.spec, self.fold.support_id)
            raise ds.DatasetError(
                f"{vol.label_path}: organ {organ!r} (label {self.spec.label_id(organ)}) is absent from the support "
                f"scan {self.fold.support_id}; it cannot serve as the 1-shot support for fold {self.cfg.data.fold}"
            )
        return sup

    def score(self, organ: str, query_id: str, supports: Sequence[SupportSet]) -> tuple[dict[str, Any], Any]:
        """Segment ``organ`` in query scan ``query_id`` from ``supports`` (steps 2-4 of the protocol).

        Returns ``(row, prediction)``: the metrics row of ``metrics.json["per_scan"][organ][scan]``
        (``{"absent": True}`` when the query does not show the organ) and the uint8 prediction on
        the file's canonical grid (None when absent). ValueError when a support is the query itself.
        """
        from ..data import datasets as ds

        if any(s.scan_id == str(query_id) for s in supports):
            raise ValueError(f"score: query scan {query_id} cannot be its own support")
        vol = ds.load_volume(self.spec, query_id)
        geom = vol.geometry
        gt = self.file_label(query_id) == self.spec.label_id(organ)  # scored on the file's own grid
        rng = organ_range(np.flatnonzero(gt.any(axis=(0, 1))).tolist())
        if rng is None:
            ds.organ_slices(vol, organ, self.spec)  # the warning naming the file
            return {"absent": True}, None
        z_min, z_max = rng
        n_parts = self.n_parts
        assignment = chunk_assignment(z_min, z_max, n_parts)
        s_img, s_mask = stack_shots(supports)
        cfg = self.cfg
        fg = predict_chunks(
            self.model,
            s_img,
            s_mask,
            self.normalized(query_id),
            assignment,
            self.size,
            cfg.eval.batch_size,
            self.device,
            amp=cfg.train.amp,
            channels_last=cfg.train.channels_last,
            geometry=geom,
        )
        pred = np.zeros(gt.shape, dtype=np.uint8)
        for z, mask in fg.items():
            pred[:, :, z] = mask
        slab = slice(z_min, z_max + 1)
        counts = confusion_counts(pred[:, :, slab], gt[:, :, slab])
        dist = surface_distances(pred[:, :, slab], gt[:, :, slab], geom.canon_spacing)
        lcc = confusion_counts(largest_component(pred[:, :, slab]), gt[:, :, slab])  # extra row
        row = {
            "dice": json_number(counts.dice),
            "dice_lcc": json_number(lcc.dice),
            "hd95": json_number(dist["hd95"]),
            "asd": json_number(dist["asd"]),
            "tp": counts.tp,
            "fp": counts.fp,
            "fn": counts.fn,
            "z_range": [int(z_min), int(z_max)],
            "chunks": [int(sum(1 for _, p in assignment if p == k)) for k in range(n_parts)],
            "empty_prediction": bool(counts.tp + counts.fp == 0),
        }
        return row, pred

    def header(self) -> dict[str, Any]:
        """The run-identifying fields that open every result dict of this fold."""
        cfg = self.cfg
        return {
            "dataset": self.spec.name,
            "setting": cfg.data.setting,
            "fold": cfg.data.fold,
            "method": cfg.model.method,
            "variant": cfg.model.variant_name(),
            "profile": cfg.profile,
            "config_hash": cfg.config_hash(),
            "organs": self.organs,
            "split": self.split,
        }


def summary_means(per_organ: dict[str, dict[str, Any]], organs: Sequence[str]) -> dict[str, Any]:
    """The overall means of ``metrics.json``: each metric's mean over the organs' means."""
    return {
        "dice": json_number(nanmean([per_organ[o]["dice_mean"] for o in organs])),
        "hd95": json_number(nanmean([per_organ[o]["hd95_mean"] for o in organs])),
        "asd": json_number(nanmean([per_organ[o]["asd_mean"] for o in organs])),
        "dice_lcc": json_number(nanmean([per_organ[o]["dice_lcc_mean"] for o in organs])),
    }


def evaluate_model(
    model,
    cfg,
    device=None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    save_predictions: bool | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Run the 1-shot protocol for ``cfg``'s dataset, fold and test organs with ``model``.

    ``split``: ``test`` (the fold's test scans; the reported numbers) or ``validation`` (the
    scan held out of training by ``data.validation=true``, for choosing settings only; a
    ``ValueError`` when the run was trained without that hold-out). Writes the predictions
    under ``out_dir/predictions`` (``out_dir/predictions_validation`` for the validation
    split) when ``save_predictions`` and returns the metrics dictionary (see :func:`evaluate`),
    without writing it.
    """
    from ..io import save_nifti

    t0 = time.time()
    ev = FoldEvaluator(model, cfg, device, split)
    save = cfg.eval.save_predictions if save_predictions is None else bool(save_predictions)
    organs, query_ids, fold = ev.organs, ev.query_ids, ev.fold
    support_info: dict[str, Any] = {"scan_id": fold.support_id, "slices": {}, "n_slices_with_organ": {}}
    per_scan: dict[str, dict[str, Any]] = {}
    pred_name = "predictions" if split == "test" else f"predictions_{split}"
    pred_dir = Path(out_dir) / pred_name if out_dir is not None else None

    jobs = [(organ, sid) for organ in organs for sid in query_ids]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"evaluate fold {cfg.data.fold}", unit="scan")
    for organ in organs:
        sup = ev.standard_support(organ)
        support_info["slices"][organ] = list(sup.slices)
        support_info["n_slices_with_organ"][organ] = sup.n_slices_with_organ
        per_scan[organ] = {}
        for sid in query_ids:
            row, pred = ev.score(organ, sid, [sup])
            per_scan[organ][sid] = row
            if pred is not None and save and pred_dir is not None:
                from ..data import datasets as ds

                vol = ds.load_volume(ev.spec, sid)
                save_nifti(pred_dir / prediction_file_name(sid, organ), vol.geometry.from_canonical(pred), vol.affine)
            if bar is not None:
                bar.update(1)
                if pred is not None:
                    bar.set_postfix(organ=organ, dice=f"{row['dice']:.3f}")
    if bar is not None:
        bar.close()

    per_organ = summarize_per_scan(per_scan)
    return {
        **ev.header(),
        "test_scans": list(query_ids),  # the scans scored (the validation scan for split=validation)
        "support": support_info,
        "n_parts": ev.n_parts,
        "per_scan": per_scan,
        "per_organ": per_organ,
        "mean": summary_means(per_organ, organs),
        "empty_prediction_policy": EMPTY_PREDICTION_POLICY,
        "units": {"dice": "fraction 0..1", "dice_lcc": "fraction 0..1", "hd95": "mm", "asd": "mm"},
        "postprocessing": {
            "dice": "none (raw argmax)",
            "dice_lcc": "largest 3-D connected component (26-connectivity) of the prediction "
            "on the scored slices; beyond the paper, reported separately",
        },
        "device": str(ev.device),
        "seconds": round(time.time() - t0, 2),
    }


def summarize_per_scan(per_scan: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per organ: mean/std Dice over scans, mean HD95/ASD over scans where defined, counts."""
    out: dict[str, dict[str, Any]] = {}
    for organ, scans in per_scan.items():
        rows = [r for r in scans.values() if not r.get("absent")]
        dices = [r["dice"] for r in rows]
        out[organ] = {
            "dice_mean": json_number(nanmean(dices)),
            "dice_std": json_number(nanstd(dices)),
            "dice_lcc_mean": json_number(nanmean([r.get("dice_lcc") for r in rows])),
            "dice_lcc_std": json_number(nanstd([r.get("dice_lcc") for r in rows])),
            "hd95_mean": json_number(nanmean([r["hd95"] for r in rows])),
            "asd_mean": json_number(nanmean([r["asd"] for r in rows])),
            "n_scans": len(rows),
            "n_absent": len(scans) - len(rows),
            "n_empty_pred": sum(1 for r in rows if r["hd95"] is None),
        }
    return out


def check_evaluation_space(cfg, run_dir: Path, save_predictions: bool) -> None:
    """Before evaluating: ``run_dir`` writable, with room for the predictions (``OSError`` naming it).

    The predictions (compressed uint8 NIfTI, one per query scan and organ) take about what the
    scans' compressed label files take; that is the estimate.
    """
    from ..data import datasets as ds
    from ..io import check_output_folder

    need = 2**20
    if save_predictions:
        try:
            spec = ds.resolve_dataset(cfg.data.dataset, cfg.data.labels, cfg.data.data_root)
            sizes = [ds.label_path(spec, sid).stat().st_size for sid in ds.scan_ids(spec)]
            need += int(len(cfg.data.test_group) * sum(sizes) / max(1, cfg.data.n_folds))
        except (OSError, ValueError):
            pass  # the evaluation itself reports a missing dataset, with its own message
    check_output_folder(run_dir, need, what="run folder (metrics and predictions)")


@contextmanager
def _staged_folder(dest: Path, enabled: bool):
    """Yield a staging root whose ``dest.name`` sub-folder replaces ``dest`` on success.

    On an error the staging folder is removed and ``dest`` is left as it was. ``enabled``
    False: yields ``None`` (nothing is written).
    """
    import os
    import shutil

    if not enabled:
        yield None
        return
    stage = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
        new = stage / dest.name
        new.mkdir(exist_ok=True)
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def read_run_config(run_dir: str | Path):
    """``RUN/config.json`` as an ``ExperimentConfig``; FileNotFoundError naming a folder that is not a run."""
    from .experiment import ExperimentConfig

    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.json); train first or pass a run folder")
    return ExperimentConfig.load(cfg_path)


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, device: str | None = None, cfg=None):
    """``(cfg, checkpoint, device, model, meta)`` of a trained run folder, as every evaluation of a
    run uses it (:func:`evaluate`, the support-choice and k-shot evaluations of
    :mod:`crapnet_core.engine.support`).

    ``cfg``: the run's config (default: ``RUN/config.json``); ``checkpoint``: default the run's
    final one, ``RUN/checkpoints/last.pt`` or its intact copy of the same step
    (:func:`~crapnet_core.engine.checkpoints.run_checkpoint`, which says what it skipped). The
    checkpoint, given or not, must belong to the run's config (its stored hash:
    :func:`~crapnet_core.engine.checkpoints.run_hashes`); loaded on ``device`` (default the run's
    ``train.device``). Errors: FileNotFoundError naming the folder or file that is missing,
    ``CheckpointUnreadable`` / ``CheckpointMismatch`` naming the checkpoint.
    """
    from .checkpoints import load_model, resolve_device, run_checkpoint, run_hashes

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir) if cfg is None else cfg
    state = None
    if checkpoint is None:
        checkpoint, state = run_checkpoint(run_dir, cfg)  # last.pt, or its intact copy; says what it skipped
    dev = resolve_device(device or cfg.train.device)
    model, meta = load_model(cfg, checkpoint, dev, state=state, run_hashes=run_hashes(run_dir, cfg))
    return cfg, Path(checkpoint), dev, model, meta


def evaluate(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    save_predictions: bool | None = None,
    split: str = "test",
    wait: bool = False,
) -> dict[str, Any]:
    """Evaluate the run in ``run_dir`` (its ``config.json`` and final checkpoint, or ``checkpoint``).

    Writes ``RUN/metrics.json`` (Dice, HD95, ASD per scan and organ; means per organ; the
    overall mean; the support scan and slices used; ``environment``: the training's and this
    evaluation's :func:`crapnet_core.engine.environment.environment`) and ``RUN/predictions/<scan>_<organ>.nii.gz``
    (same shape and affine as the input volume files). Returns the metrics dictionary.
    ``split="validation"`` scores the fold's validation scan instead (runs trained with
    ``data.validation=true`` only) and writes ``RUN/metrics_validation.json`` and
    ``RUN/predictions_validation/``; ``metrics.json`` is left alone.

    Holds the run folder's lock (another process holding it: ``RunFolderBusy`` naming it, or
    ``wait=True`` to wait); checks the folder is writable and has room for the predictions
    before the work; the checkpoint must belong to the run's config (its stored hash). The
    predictions replace ``RUN/predictions`` only once all are written.
    """
    from ..io import check_output_folder, write_json
    from .checkpoints import cpu_threads
    from .locks import run_lock

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    check_output_folder(run_dir, what="run folder")  # read-only, no permission: said before anything
    with run_lock(run_dir, wait=wait):  # one writer per run folder (a training of it, another evaluation)
        save = cfg.eval.save_predictions if save_predictions is None else bool(save_predictions)
        check_evaluation_space(cfg, run_dir, save)
        cfg, checkpoint, dev, model, meta = load_run(run_dir, checkpoint, device, cfg=cfg)
        pred_name = "predictions" if split == "test" else f"predictions_{split}"
        from .environment import environment, read_run_environment

        with cpu_threads(cfg, dev), _staged_folder(run_dir / pred_name, save) as stage:
            # predictions go to a staging folder that replaces RUN/predictions only when every scan is
            # done: a failure (disk full...) leaves the previous predictions and metrics as they were
            metrics = evaluate_model(
                model, cfg, dev, out_dir=stage, progress=progress, save_predictions=save, split=split
            )
            evaluated_in = environment(dev)
            metrics["checkpoint"] = str(Path(checkpoint).resolve())
            metrics["step"] = int(meta.get("step", -1))
            metrics["trained_steps"] = int(cfg.train.steps)
            from ..models.methods import method_info

            if method_info(cfg):
                metrics["method_info"] = method_info(cfg)  # e.g. alpnet_init: how the encoder was initialised
            # what computed these numbers: the training start's record (RUN/environment.json; None for
            # runs trained before it existed) and this evaluation's (engine.environment)
            metrics["environment"] = {"train": read_run_environment(run_dir), "evaluate": evaluated_in}
            # written before the staged predictions move in (a rename, which needs no space)
            write_json(run_dir / metrics_filename(split), metrics)
    mean_dice = metrics["mean"]["dice"]
    log.info("%s: mean Dice %.4f", run_dir, math.nan if mean_dice is None else mean_dice)
    return metrics


def read_metrics(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """``RUN/metrics.json`` (``split="validation"``: ``RUN/metrics_validation.json``) as
    :func:`evaluate` wrote it: the one reader of those files.

    Errors: ``FileNotFoundError`` naming the file when the run is not evaluated;
    ``ValueError`` when the file is not JSON (e.g. truncated).
    """
    return read_json(Path(run_dir) / metrics_filename(split), missing="evaluate the run first")


__all__ = [
    "EMPTY_PREDICTION_POLICY",
    "prediction_file_name",
    "SPLITS",
    "metrics_filename",
    "FoldEvaluator",
    "summary_means",
    "evaluate_model",
    "read_run_config",
    "load_run",
    "summarize_per_scan",
    "check_evaluation_space",
    "evaluate",
    "read_metrics",
    "Counts",
]

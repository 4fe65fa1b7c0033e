"""Self-supervised training episodes on superpixel pseudo-labels (paper Sec. 3.7).

One episode (1-way 1-shot): a random training slice ``I`` and one of its superpixels
``Y(l^p)`` as the binary foreground (background ``Y(l^0) = 1 - Y(l^p)``). Support and query
are two independently augmented copies of the same (slice, superpixel) pair, each
``T_g(T_gamma(I))`` with mask ``T_g(Y(l^p))`` (:class:`~crapnet_core.data.augment.SSLAugment`).

Choice of slices and superpixels (documented deviation from SSL-ALPNet, which draws any
superpixel id of any slice):

- only training scans of the fold (never test or support scans), and in setting 2 never a
  slice that contains an excluded (tested) organ (:func:`~crapnet_core.data.protocol.training_slices`);
- a superpixel is *usable* when it covers at least ``min_superpixel_area`` pixels (default
  200, half of Felzenszwalb's ``min_size=400``; config field ``superpixels.min_area``, the
  Felzenszwalb parameters are ``superpixels.min_size/sigma/scale``) on the 256 x 256 grid: the body-mask cut can
  leave tiny slivers of superpixels at the body outline, which make degenerate episodes;
- slices without a usable superpixel (e.g. slices outside the body) are skipped;
- a slice is drawn uniformly among the usable slices, then a superpixel uniformly among the
  slice's usable superpixels.

Determinism: episode ``i`` depends only on ``(seed, i)`` (``numpy.random.default_rng([seed, i])``
draws the slice, the superpixel and two augmentation seeds), so training resumes exactly
and DataLoader workers need no special seeding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch

from .augment import AugmentParams, SSLAugment
from .errors import DatasetError
from .intensities import apply_normalization, normalization_params, normalization_stats
from .protocol import Fold, training_slices
from .spec import DatasetSpec
from .superpixels import SuperpixelParams, ensure_superpixels, load_superpixels
from .tensors import SLICE_SIZE, mask_tensor, slice_tensor
from .volumes import load_volume

log = logging.getLogger(__name__)

MIN_SUPERPIXEL_AREA = 200


class EpisodeDataset(torch.utils.data.Dataset):
    """Map-style dataset of ``length`` self-supervised episodes for one fold.

    ``__getitem__(i)`` returns a dict:

    - ``support_image`` float32 ``(3, S, S)``, ``support_mask`` int64 ``(S, S)`` in {0, 1};
    - ``query_image`` float32 ``(3, S, S)``, ``query_mask`` int64 ``(S, S)`` in {0, 1};
    - ``scan_id`` (str), ``slice_index`` (int z), ``superpixel`` (int id in the slice).

    ``S = size`` (256 in the paper; images are resized in the augmentation's interpolation).
    ``stats``: CT normalisation statistics (default: computed over ``fold.train_ids``).
    ``augment=False`` gives support == query (the resized slice and mask; for debugging).
    ``jobs``: processes for computing missing superpixels into the cache (default: all cores).

    Memory: the dataset keeps a reference to each training :class:`~crapnet_core.data.volumes.Volume`
    (raw image, no normalised copy: slices are normalised when drawn, with the same values
    as :func:`~crapnet_core.data.intensities.normalize`) and the superpixels as int16.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        fold: Fold,
        exclude_organs: Iterable[str] = (),
        size: int = SLICE_SIZE,
        seed: int = 0,
        length: int = 1_000_000,
        stats: tuple[float, float] | None = None,
        augment: bool = True,
        min_superpixel_area: int = MIN_SUPERPIXEL_AREA,
        superpixel_params: SuperpixelParams = SuperpixelParams(),
        augment_params: AugmentParams = AugmentParams(),
        jobs: int | None = None,
        progress: bool = False,
    ) -> None:
        if int(size) < 8:
            raise ValueError(f"EpisodeDataset: size must be >= 8, got {size}")
        if int(length) < 1:
            raise ValueError(f"EpisodeDataset: length must be >= 1, got {length}")
        self.spec = spec
        self.fold = fold
        self.exclude_organs = tuple(exclude_organs)
        self.size = int(size)
        self.seed = int(seed)
        self.length = int(length)
        self.augment = bool(augment)
        self.min_superpixel_area = int(min_superpixel_area)
        self.stats = stats if stats is not None else normalization_stats(spec, fold.train_ids)

        ensure_superpixels(spec, fold.train_ids, jobs=jobs, progress=progress, params=superpixel_params)
        candidates = training_slices(spec, fold, self.exclude_organs)
        by_scan: dict[str, list[int]] = {}
        for sid, z in candidates:
            by_scan.setdefault(sid, []).append(z)

        self._volumes: dict = {}
        self._norm: dict[str, tuple[float, float]] = {}
        self._superpixels: dict[str, np.ndarray] = {}
        self.entries: list[tuple[str, int, np.ndarray]] = []  # (scan_id, z, usable superpixel ids)
        self._empty_superpixel_scans: list[str] = []
        for sid, zs in by_scan.items():
            vol = load_volume(spec, sid)
            sp = load_superpixels(spec, sid, superpixel_params)
            if not sp.any():
                self._empty_superpixel_scans.append(sid)
            kept = False
            for z in zs:
                counts = np.bincount(sp[:, :, z].ravel())
                usable = np.flatnonzero(counts >= self.min_superpixel_area)
                usable = usable[usable > 0].astype(np.int32)
                if usable.size:
                    self.entries.append((sid, z, usable))
                    kept = True
            if kept:
                self._volumes[sid] = vol
                self._norm[sid] = normalization_params(vol, spec, self.stats)
                self._superpixels[sid] = sp.astype(np.int16) if sp.max() < 2**15 else sp
        if not self.entries:
            cause = ""
            if self._empty_superpixel_scans and len(self._empty_superpixel_scans) == len(by_scan):
                cause = (
                    f"; every training scan's superpixel map is empty: the body mask (body threshold "
                    f"{spec.body_threshold if spec.body_threshold is not None else 'otsu'}) keeps nothing of "
                    f"their intensities (e.g. MR scaled 0-1 with a fixed threshold of 50); set 'body_threshold' "
                    f'in the label map to a number in the data\'s range or "otsu"'
                )
            raise DatasetError(
                f"{spec.root}: fold {fold.index} has no training slice with a superpixel of >= "
                f"{self.min_superpixel_area} pixels (excluded organs: {self.exclude_organs or 'none'}){cause}"
            )
        self._aug = SSLAugment(augment_params, size=self.size)
        log.info(
            "episodes: %d usable slices from %d training scans (%d candidate slices)",
            len(self.entries),
            len(self._volumes),
            len(candidates),
        )

    @property
    def slices(self) -> list[tuple[str, int]]:
        """``(scan_id, z)`` of every slice episodes are drawn from."""
        return [(sid, z) for sid, z, _ in self.entries]

    def __len__(self) -> int:
        return self.length

    def _draw(self, index: int) -> tuple[str, int, int, np.random.Generator]:
        rng = np.random.default_rng([self.seed, int(index)])
        sid, z, usable = self.entries[int(rng.integers(len(self.entries)))]
        label = int(usable[int(rng.integers(len(usable)))])
        return sid, z, label, rng

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"episode index {index} out of range 0..{self.length - 1}")
        sid, z, label, rng = self._draw(index)
        image = apply_normalization(self._volumes[sid].image[:, :, z], self._norm[sid])
        mask = (self._superpixels[sid][:, :, z] == label).astype(np.int64)
        if self.augment:
            seeds = rng.integers(0, 2**31 - 1, size=2)
            pair = []
            for s in seeds:
                self._aug.set_random_state(seed=int(s))
                out = self._aug({"image": image, "mask": mask})
                rgb = np.repeat(out["image"].numpy()[None], 3, axis=0)  # numpy copy: no torch thread pool
                pair.append((torch.from_numpy(rgb), out["mask"]))
            (s_img, s_mask), (q_img, q_mask) = pair
        else:
            s_img, s_mask = slice_tensor(image, 0, self.size), mask_tensor(mask, None, self.size)
            q_img, q_mask = s_img.clone(), s_mask.clone()
        return {
            "support_image": s_img,
            "support_mask": s_mask,
            "query_image": q_img,
            "query_mask": q_mask,
            "scan_id": sid,
            "slice_index": z,
            "superpixel": label,
        }

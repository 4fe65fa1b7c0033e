"""ALPNet (supervised): the ALPNet network trained on episodes from MANUAL labels (SSL-ALPNet's baseline).

Network and loss are those of ``method="alpnet"`` (Eq. 18-20 with ALPNet's prototypes); only
the episodes differ. The rule, as SSL-ALPNet's supervised baseline builds them (its
``dataloaders/dev_customized_med.py`` ``med_fewshot`` + ``ReloadPairedDataset`` + ``ManualAnnoDataset``,
inherited from PANet, with ``DATASET_INFO[...]['LABEL_GROUP']``):

- **organs**: the four organs of the tables are split into the two groups {left kidney,
  right kidney} and {liver, spleen}; a run tests one group and is trained on the manual
  labels of the *other* group only (``LABEL_GROUP[label_sets]`` = training classes,
  ``pa_all - LABEL_GROUP[label_sets]`` = test classes). Setting 1 therefore also runs the two
  groups separately (:func:`test_groups`), and its table row joins them; other labelled
  structures (e.g. SABS's stomach or aorta) are never used;
- **scans/slices**: the training scans of the fold (never test or support scans); a slice
  is a candidate for an organ when it holds at least ``MIN_FOREGROUND`` voxel of it
  (``min_fg_data = 1``); in setting 2 slices holding a tested organ are dropped
  (``exclude_list``), in setting 1 they stay (the tested organs are then background);
- **pairs**: episode i draws one training organ uniformly, then two *different* slices
  uniformly from that organ's candidate slices (any training scans): the first is the
  support, the second the query (``random.sample(..., k=n_shots + n_queries)``);
- **masks**: support and query labels are 1 on the organ, 0 elsewhere (1-way);
- **augmentation**: support and query are augmented independently with the same geometric
  and intensity transforms as the self-supervised episodes (SSL-ALPNet applies its
  ``transform_with_label`` to every sample of the pair).

Episode i depends only on ``(seed, i)`` (as :class:`~crapnet_core.data.episodes.EpisodeDataset`).
"""

from __future__ import annotations

import numpy as np
import torch

from crapnet_core.models.config import ModelConfig

#: a slice is a candidate for an organ when it holds at least this many voxels of it (SSL-ALPNet: min_fg_data = 1)
MIN_FOREGROUND = 1


def build_model(cfg: ModelConfig):
    """The ALPNet network (``FewShotSegmenter`` with ``method="alpnet"``) for ``cfg``."""
    from dataclasses import replace

    from crapnet_core.models.segmenter import FewShotSegmenter

    return FewShotSegmenter(replace(cfg, method="alpnet"))


def test_groups(setting: int) -> list[tuple[str, ...]]:
    """Both settings test the two organ groups in turn (each trained on the other group's labels)."""
    from crapnet_core.data.protocol import SETTING2_GROUPS

    if setting not in (1, 2):
        raise ValueError(f"setting must be 1 or 2, got {setting!r}")
    return [tuple(g) for g in SETTING2_GROUPS]


test_groups.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def training_organs(test_group) -> tuple[str, ...]:
    """The organs whose manual labels train a run testing ``test_group`` (the other group).

    ValueError when ``test_group`` is not one of the two groups (e.g. all four organs).
    """
    from crapnet_core.data.datasets import ORGANS
    from crapnet_core.data.protocol import SETTING2_GROUPS

    group = tuple(test_group)
    if sorted(group) not in [sorted(g) for g in SETTING2_GROUPS]:
        raise ValueError(
            f"data.test_group: alpnet_sup tests one organ group and trains on the other's labels; "
            f"{','.join(group)} is not one of "
            + " or ".join(",".join(g) for g in SETTING2_GROUPS)
            + " (use --group kidneys or --group liver_spleen)"
        )
    return tuple(o for o in ORGANS if o not in group)


def validate(cfg) -> None:
    """The run must test one organ group (ValueError naming ``data.test_group`` otherwise)."""
    training_organs(cfg.data.test_group)


class ManualEpisodeDataset(torch.utils.data.Dataset):
    """``length`` supervised 1-way 1-shot episodes from the manual labels of ``organs``.

    ``__getitem__(i)``: the keys of :class:`~crapnet_core.data.episodes.EpisodeDataset` (``support_image``
    float32 (3, S, S), ``support_mask`` int64 (S, S) {0, 1}, ``query_image``, ``query_mask``,
    ``scan_id`` / ``slice_index`` of the query) plus ``organ`` and ``support_scan_id`` /
    ``support_slice_index``. Raises DatasetError when an organ has fewer than 2 candidate slices.
    """

    def __init__(
        self,
        spec,
        fold,
        organs,
        exclude_organs=(),
        size: int = 256,
        seed: int = 0,
        length: int = 1,
        stats=None,
        augment: bool = True,
        min_foreground: int = MIN_FOREGROUND,
    ) -> None:
        from crapnet_core.data.augment import AugmentParams, SSLAugment
        from crapnet_core.data.datasets import DatasetError, load_volume, normalization_params, normalization_stats
        from crapnet_core.data.protocol import training_slices

        if int(length) < 1:
            raise ValueError(f"ManualEpisodeDataset: length must be >= 1, got {length}")
        if not organs:
            raise ValueError("ManualEpisodeDataset: no training organs")
        self.spec, self.fold, self.organs = spec, fold, tuple(organs)
        self.size, self.seed, self.length, self.augment = int(size), int(seed), int(length), bool(augment)
        self.stats = stats if stats is not None else normalization_stats(spec, fold.train_ids)
        allowed = set(training_slices(spec, fold, tuple(exclude_organs)))
        self._volumes: dict = {}
        self._norm: dict = {}
        self.slices: dict[str, list[tuple[str, int]]] = {}
        for organ in self.organs:
            lid = spec.label_id(organ)
            cands: list[tuple[str, int]] = []
            for sid in fold.train_ids:
                vol = load_volume(spec, sid)
                counts = (vol.label == lid).sum(axis=(0, 1))
                for z in np.flatnonzero(counts >= int(min_foreground)).tolist():
                    if (sid, z) in allowed:
                        cands.append((sid, int(z)))
                        if sid not in self._volumes:
                            self._volumes[sid] = vol
                            self._norm[sid] = normalization_params(vol, spec, self.stats)
            if len(cands) < 2:
                raise DatasetError(
                    f"{spec.root}: fold {fold.index} has {len(cands)} training slice(s) labelled {organ} "
                    f"(excluded organs: {', '.join(exclude_organs) or 'none'}); a supervised episode needs 2"
                )
            self.slices[organ] = cands
        self._aug = SSLAugment(AugmentParams(), size=self.size)

    def __len__(self) -> int:
        return self.length

    def draw(self, index: int) -> tuple[str, tuple[str, int], tuple[str, int], np.random.Generator]:
        """(organ, support (scan, z), query (scan, z), rng) of episode ``index``."""
        rng = np.random.default_rng([self.seed, int(index)])
        organ = self.organs[int(rng.integers(len(self.organs)))]
        cands = self.slices[organ]
        i, j = rng.choice(len(cands), size=2, replace=False)
        return organ, cands[int(i)], cands[int(j)], rng

    def _item(self, organ: str, sid: str, z: int, seed: int):
        from crapnet_core.data.datasets import apply_normalization, mask_tensor, slice_tensor

        vol = self._volumes[sid]
        image = apply_normalization(vol.image[:, :, z], self._norm[sid])
        mask = (vol.label[:, :, z] == self.spec.label_id(organ)).astype(np.int64)
        if not self.augment:
            return slice_tensor(image, 0, self.size), mask_tensor(mask, None, self.size)
        self._aug.set_random_state(seed=int(seed))
        out = self._aug({"image": image, "mask": mask})
        rgb = np.repeat(out["image"].numpy()[None], 3, axis=0)
        return torch.from_numpy(rgb), out["mask"]

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"episode index {index} out of range 0..{self.length - 1}")
        organ, (s_sid, s_z), (q_sid, q_z), rng = self.draw(index)
        seeds = rng.integers(0, 2**31 - 1, size=2)
        s_img, s_mask = self._item(organ, s_sid, s_z, seeds[0])
        q_img, q_mask = self._item(organ, q_sid, q_z, seeds[1])
        return {
            "support_image": s_img,
            "support_mask": s_mask,
            "query_image": q_img,
            "query_mask": q_mask,
            "scan_id": q_sid,
            "slice_index": q_z,
            "organ": organ,
            "support_scan_id": s_sid,
            "support_slice_index": s_z,
        }


def build_episodes(cfg, spec, fold, stats) -> ManualEpisodeDataset:
    """The supervised episodes of run ``cfg`` (ExperimentConfig)."""
    return ManualEpisodeDataset(
        spec,
        fold,
        training_organs(cfg.data.test_group),
        exclude_organs=cfg.data.exclude_organs,
        size=cfg.data.input_size,
        seed=cfg.train.seed,
        length=cfg.train.steps * cfg.train.batch_size,
        stats=stats,
        augment=cfg.data.augment,
    )


def hashed_constants() -> dict:
    """The module constants that decide a run (config hash, :mod:`crapnet_core.models.methods`)."""
    return {"min_foreground": MIN_FOREGROUND}


def method_info(cfg) -> dict:
    from crapnet_core.models.methods.common import encoder_init

    return {
        "network": "alpnet",
        "episodes": "manual labels",
        "encoder_init": encoder_init(cfg),
        "training_organs": list(training_organs(cfg.data.test_group)),
    }

"""Augmentations keep image and mask aligned; episodes are seeded, well-formed and follow the protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crapnet_core.data import datasets as D
from crapnet_core.data.augment import AugmentParams, SSLAugment, adjust_gamma
from crapnet_core.data.episodes import EpisodeDataset
from crapnet_core.data.protocol import SETTING2_GROUPS, make_fold


def _disc_mask(size=256):
    ii, jj = np.mgrid[:size, :size]
    m = ((ii - 100) ** 2 + (jj - 140) ** 2 < 40**2).astype(np.int64)
    m[30:60, 30:90] = 1  # plus a rectangle: not rotation-symmetric
    return m


@pytest.mark.parametrize("size", [256, 128])
def test_augmented_mask_follows_image_geometry(size):
    m = _disc_mask()
    aug = SSLAugment(size=size)
    for seed in range(6):
        aug.set_random_state(seed=seed)
        # image intensity == mask; gamma keeps 0 -> 0 and 1 -> 1, so image and mask must still agree
        out = aug({"image": m.astype(np.float32), "mask": m})
        img, mask = out["image"], out["mask"]
        assert img.shape == (size, size) and mask.dtype == torch.int64
        assert set(torch.unique(mask).tolist()) <= {0, 1}
        disagree = int(((img > 0.5).long() != mask).sum())
        assert disagree <= 0.001 * size * size, (seed, disagree)
        # the geometry really changed something, but not too much (+-5 deg, +-5 px, scale 0.9-1.2)
        ref = torch.from_numpy(m[:: 256 // size, :: 256 // size])
        changed = int((mask != ref).sum())
        area = int(ref.sum())
        assert 0 < changed < 0.8 * area
        assert 0.7 * area < int(mask.sum()) < 1.6 * area


def test_identity_when_geometry_and_gamma_off():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(256, 256)).astype(np.float32)
    m = _disc_mask()
    out = SSLAugment(gamma=False, geometry=False)({"image": img, "mask": m})
    assert torch.equal(out["image"], torch.from_numpy(img)) and torch.equal(out["mask"], torch.from_numpy(m))
    small = SSLAugment(size=128, gamma=False, geometry=False)({"image": img, "mask": m})
    ref = D.slice_tensor(img, 0, 128)[0]
    assert torch.allclose(small["image"], ref, atol=1e-5)  # same resize as evaluation slices


def test_seeded_and_gamma_on_image_only():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 5, size=(256, 256)).astype(np.float32)
    m = _disc_mask()
    a = SSLAugment()
    a.set_random_state(seed=7)
    o1 = a({"image": img, "mask": m})
    a.set_random_state(seed=7)
    o2 = a({"image": img, "mask": m})
    a.set_random_state(seed=8)
    o3 = a({"image": img, "mask": m})
    assert torch.equal(o1["image"], o2["image"]) and torch.equal(o1["mask"], o2["mask"])
    assert not torch.equal(o1["image"], o3["image"])
    g = adjust_gamma(img, 0.5)
    assert g.min() == pytest.approx(img.min(), abs=1e-4) and g.max() == pytest.approx(img.max(), abs=1e-3)
    assert np.all(np.diff(g.ravel()[np.argsort(img.ravel())]) >= -1e-5)  # monotone
    p = AugmentParams()
    assert (p.rotate_deg, p.shift_px, p.shear_deg, p.scale, p.elastic_alpha, p.elastic_sigma, p.gamma) == (
        5.0,
        5.0,
        5.0,
        (0.9, 1.2),
        10.0,
        5.0,
        (0.5, 1.5),
    )


@pytest.fixture(scope="module")
def phantom():
    return D.resolve_dataset("phantom")


@pytest.fixture(scope="module")
def fold(phantom):
    return make_fold(D.scan_ids(phantom), 0)


@pytest.fixture(scope="module")
def episodes(phantom, fold):
    return EpisodeDataset(phantom, fold, size=256, seed=3, length=1000)


def test_episode_fields_and_shapes(episodes, fold):
    e = episodes[0]
    for k in ("support_image", "query_image"):
        assert e[k].shape == (3, 256, 256) and e[k].dtype == torch.float32
        assert torch.equal(e[k][0], e[k][2])
    for k in ("support_mask", "query_mask"):
        assert e[k].shape == (256, 256) and e[k].dtype == torch.int64
        assert set(torch.unique(e[k]).tolist()) == {0, 1}
    assert e["scan_id"] in fold.train_ids and isinstance(e["slice_index"], int) and e["superpixel"] >= 1
    assert not torch.equal(e["support_image"], e["query_image"])  # two independent augmentations
    assert len(episodes) == 1000
    with pytest.raises(IndexError):
        episodes[1000]


def test_episodes_deterministic_in_seed_and_index(episodes, phantom, fold):
    fresh = EpisodeDataset(phantom, fold, size=256, seed=3, length=1000)  # e.g. a resumed run
    for i in (0, 17, 999):
        a, b = episodes[i], fresh[i]
        for k in a:
            assert torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k], (i, k)
    other_seed = EpisodeDataset(phantom, fold, size=256, seed=4, length=10)
    draws = {(episodes[i]["scan_id"], episodes[i]["slice_index"], episodes[i]["superpixel"]) for i in range(10)}
    assert len(draws) > 5
    assert [other_seed[i]["slice_index"] for i in range(10)] != [episodes[i]["slice_index"] for i in range(10)]


def test_episode_mask_is_the_superpixel(phantom, fold):
    from crapnet_core.data.superpixels import load_superpixels

    ds = EpisodeDataset(phantom, fold, size=256, seed=0, length=50, augment=False)
    for i in range(5):
        e = ds[i]
        sp = load_superpixels(phantom, e["scan_id"])[:, :, e["slice_index"]]
        expected = torch.from_numpy((sp == e["superpixel"]).astype(np.int64))
        assert torch.equal(e["support_mask"], expected) and torch.equal(e["query_mask"], expected)
        assert int(expected.sum()) >= ds.min_superpixel_area
        vol = D.normalize(D.load_volume(phantom, e["scan_id"]), phantom)
        assert torch.equal(e["support_image"][0], torch.from_numpy(vol[:, :, e["slice_index"]]))


def test_setting2_episodes_never_show_test_organs(phantom, fold):
    for group in SETTING2_GROUPS:
        ds = EpisodeDataset(phantom, fold, exclude_organs=group, size=128, seed=1, length=200)
        ids = [phantom.labels[o] for o in group]
        for sid, z in ds.slices:
            assert not np.isin(D.load_volume(phantom, sid).label[:, :, z], ids).any()
        assert sid in fold.train_ids
        e = ds[5]
        assert e["support_image"].shape == (3, 128, 128) and e["query_mask"].shape == (128, 128)
        assert not np.isin(D.load_volume(phantom, e["scan_id"]).label[:, :, e["slice_index"]], ids).any()


def test_dataloader_batches(episodes):
    batch = next(iter(torch.utils.data.DataLoader(episodes, batch_size=3)))
    assert batch["support_image"].shape == (3, 3, 256, 256) and batch["query_mask"].shape == (3, 256, 256)
    assert len(batch["scan_id"]) == 3

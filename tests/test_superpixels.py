"""Superpixel pseudo-labels (paper Sec. 3.7; SSL-ALPNet "MIDDLE" Felzenszwalb setting)."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest

from crapnet_core.data import datasets as D
from crapnet_core.data.phantom import generate_phantom
from crapnet_core.data.superpixels import (
    SuperpixelParams,
    body_mask,
    cache_folder,
    compute_superpixels,
    load_superpixels,
    superpixels_slice,
    superpixels_volume,
)


def _check_slice(sp: np.ndarray, raw: np.ndarray, threshold: float) -> int:
    body = body_mask(raw, threshold)
    assert sp.dtype == np.int32 and sp.shape == raw.shape
    assert not sp[~body].any()  # nothing outside the body
    assert (sp[body] > 0).all()  # every body pixel belongs to a superpixel
    k = int(sp.max())
    assert sorted(np.unique(sp[body]).tolist()) == list(range(1, k + 1))  # numbered 1..K
    return k


def test_body_mask_largest_component_holes_filled():
    img = np.zeros((64, 64))
    img[10:40, 10:40] = 100
    img[20:25, 20:25] = 0  # a hole (e.g. air in bowel): filled
    img[50:55, 50:55] = 100  # a smaller component (e.g. the scanner table): dropped
    m = body_mask(img, 50)
    assert m[20:25, 20:25].all() and not m[50:55, 50:55].any() and m.sum() == 900
    assert not body_mask(np.zeros((8, 8)), 50).any()


def test_params_default_to_ssl_alpnet_middle():
    assert SuperpixelParams() == SuperpixelParams(min_size=400, sigma=1.0, scale=1.0)


@pytest.mark.realdata
def test_chaos_slices_deterministic_inside_body_plausible(chaos_dir):
    spec = D.resolve_dataset(chaos_dir, labels="chaos")
    raw = np.asanyarray(nib.load(str(chaos_dir / "image_1.nii.gz")).dataobj)
    for z in (10, 18, 25):
        a = superpixels_slice(raw[:, :, z], spec.body_threshold)
        b = superpixels_slice(raw[:, :, z].copy(), spec.body_threshold)
        np.testing.assert_array_equal(a, b)
        k = _check_slice(a, raw[:, :, z], spec.body_threshold)
        # min_size=400 on a ~20k-pixel body: tens of superpixels, not hundreds
        assert 5 <= k <= 80, (z, k)
        sizes = np.bincount(a.ravel())[1:]
        assert np.median(sizes) >= 400


@pytest.mark.realdata
def test_sabs_slices_inside_body(sabs_dir):
    spec = D.resolve_dataset(sabs_dir, labels="sabs")
    raw = np.asanyarray(nib.load(str(sabs_dir / "image_0.nii.gz")).dataobj)
    vol = superpixels_volume(raw[:, :, 60:62], spec.body_threshold)  # full 257 grid, as SSL-ALPNet
    assert vol.shape == (257, 257, 2)
    for z in range(2):
        k = _check_slice(vol[:, :, z], raw[:, :, 60 + z], spec.body_threshold)
        assert 5 <= k <= 100


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory):
    return D.resolve_dataset(generate_phantom(tmp_path_factory.mktemp("sp") / "ph", n_scans=2, seed=3))


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_compute_writes_files_and_skips_done(tiny_phantom, tmp_path):
    before = {p.name: (_digest(p), p.stat().st_mtime_ns) for p in tiny_phantom.root.iterdir()}
    out = tmp_path / "sp"
    timings: dict[str, float] = {}
    paths = compute_superpixels(tiny_phantom, out, jobs=2, progress=False, timings=timings)
    assert [p.name for p in paths] == ["superpix_1.nii.gz", "superpix_2.nii.gz"] and set(timings) == {"1", "2"}
    vol = D.load_volume(tiny_phantom, "1")  # superpixels live on the model grid (canonical, 256 x 256)
    sp = nib.load(str(paths[0]))
    assert sp.shape == vol.image.shape and np.allclose(sp.affine, vol.geometry.model_affine)
    arr = np.asanyarray(sp.dataobj)
    assert np.issubdtype(arr.dtype, np.integer)
    z = vol.n_slices // 2
    np.testing.assert_array_equal(arr[:, :, z], superpixels_slice(vol.image[:, :, z], tiny_phantom.body_threshold))
    stamp = paths[0].stat().st_mtime_ns
    timings.clear()
    compute_superpixels(tiny_phantom, out, progress=False, timings=timings)
    assert timings == {} and paths[0].stat().st_mtime_ns == stamp  # already done: skipped
    after = {p.name: (_digest(p), p.stat().st_mtime_ns) for p in tiny_phantom.root.iterdir()}
    assert after == before  # the data folder is never written
    with pytest.raises(ValueError, match="data folder"):
        compute_superpixels(tiny_phantom, tiny_phantom.root / "sp", progress=False)


def test_load_superpixels_uses_own_cache(tiny_phantom, tmp_path, monkeypatch):
    monkeypatch.setenv("CRAPNET_CACHE", str(tmp_path / "cache"))
    sp = load_superpixels(tiny_phantom, "2")
    vol = D.load_volume(tiny_phantom, "2")
    assert sp.shape == vol.image.shape and sp.dtype == np.int32
    folder = cache_folder(tiny_phantom)
    assert folder.is_relative_to(tmp_path / "cache") and (folder / "superpix_2.nii.gz").is_file()
    assert cache_folder(tiny_phantom, SuperpixelParams(min_size=100)) != folder  # keyed on parameters
    np.testing.assert_array_equal(load_superpixels(tiny_phantom, "2"), sp)

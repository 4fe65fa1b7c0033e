"""The synthetic phantom: deterministic, same layout as the real data, labelled as synthetic, varied."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from crapnet_core.data import datasets as D
from crapnet_core.data.phantom import generate_phantom, phantom_root


@pytest.fixture(scope="module")
def small_phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("ph") / "a", n_scans=3, seed=5)


def test_layout_and_labels_file(small_phantom):
    names = sorted(p.name for p in small_phantom.iterdir())
    assert names == sorted(
        ["README.md", "labels.json"] + [f"{k}_{i}.nii.gz" for i in (1, 2, 3) for k in ("image", "label")]
    )
    meta = json.loads((small_phantom / "labels.json").read_text())
    assert meta["synthetic"] is True and meta["modality"] == "MR"
    assert "SYNTHETIC" in (small_phantom / "README.md").read_text()
    spec = D.resolve_dataset(small_phantom)
    assert spec.is_phantom and spec.name == "phantom" and spec.labels == D.CHAOS_LABELS
    assert D.scan_ids(spec) == ["1", "2", "3"]


def test_deterministic(small_phantom, tmp_path):
    again = generate_phantom(tmp_path / "b", n_scans=2, seed=5)
    spec_a, spec_b = D.resolve_dataset(small_phantom), D.resolve_dataset(again)
    for sid in ("1", "2"):
        a, b = D.load_volume(spec_a, sid), D.load_volume(spec_b, sid)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        np.testing.assert_array_equal(a.affine, b.affine)
    other = generate_phantom(tmp_path / "c", n_scans=1, seed=6)
    assert not np.array_equal(D.load_volume(D.resolve_dataset(other), "1").image, D.load_volume(spec_a, "1").image)


def test_anatomy_plausible_and_varied(small_phantom):
    spec = D.resolve_dataset(small_phantom)
    centroids = {o: [] for o in D.ORGANS}
    for sid in D.scan_ids(spec):
        vol = D.load_volume(spec, sid)
        assert vol.image.shape[:2] == (256, 256) and 16 <= vol.n_slices <= 24
        assert 1.0 < vol.spacing[0] < 2.0 and 6.0 < vol.spacing[2] < 10.0
        assert vol.image.min() >= 0 and vol.image.max() < 2000
        body = vol.image > spec.body_threshold
        assert 0.2 < body.mean() < 0.6  # an abdomen, not an empty or full frame
        for organ in D.ORGANS:
            lid = spec.labels[organ]
            zs = D.organ_slices(vol, organ, spec)
            assert 3 <= zs.size < vol.n_slices, (sid, organ)  # present, but not on every slice
            areas = [(vol.label[:, :, z] == lid).sum() for z in zs]
            assert max(areas) > 1.5 * min(areas)  # cross-section changes from slice to slice
            centroids[organ].append(ndi.center_of_mass(vol.label == lid))
            inside = vol.image[vol.label == lid].mean()
            assert inside > spec.body_threshold
        # canonical model grid (A, L, S): columns run patient right -> left, so the liver
        # (patient's right) has low column indices, the spleen high ones
        ci = {o: ndi.center_of_mass(vol.label == spec.labels[o])[1] for o in D.ORGANS}
        assert ci["liver"] < 128 < ci["spleen"] and ci["right_kidney"] < ci["left_kidney"]
    for organ, cs in centroids.items():
        cs = np.array(cs)
        assert np.ptp(cs[:, 0]) > 1.0 or np.ptp(cs[:, 1]) > 1.0, organ  # position varies per scan


def test_phantom_root_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("CRAPNET_CACHE", str(tmp_path / "cache"))
    root = phantom_root(n_scans=2, seed=1)
    assert (root / "labels.json").is_file()
    stamp = (root / "image_1.nii.gz").stat().st_mtime_ns
    assert phantom_root(n_scans=2, seed=1) == root
    assert (root / "image_1.nii.gz").stat().st_mtime_ns == stamp  # generated once


def test_phantom_root_generates_once_when_several_ask_at_once(monkeypatch, tmp_path):
    """Two callers on an empty cache (parallel test workers, workflow jobs): one generates, the other
    waits and finds the folder complete. flock locks are per open file, so threads contend like processes."""
    import threading
    import time

    from crapnet_core.data import phantom as P

    monkeypatch.setenv("CRAPNET_CACHE", str(tmp_path / "cache"))
    generated = []
    real = P.generate_phantom

    def slow_generate(out_dir, **kw):
        generated.append(out_dir)
        time.sleep(0.5)  # long enough for the other caller to see an incomplete folder
        return real(out_dir, **kw)

    monkeypatch.setattr(P, "generate_phantom", slow_generate)
    roots, errors = [], []

    def ask():
        try:
            roots.append(P.phantom_root(n_scans=1, seed=3))
        except Exception as err:  # surfaced below: a thread's exception would otherwise be lost
            errors.append(err)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(generated) == 1 and len(set(roots)) == 1
    assert (roots[0] / "labels.json").is_file() and (roots[0] / "image_1.nii.gz").is_file()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_scans"):
        generate_phantom(tmp_path, n_scans=0)

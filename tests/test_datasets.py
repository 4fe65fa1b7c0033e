"""Dataset resolution, loading (crop, dtype, caching), normalisation, organ index, tensors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from crapnet_core.data import datasets as D


@pytest.fixture(scope="module")
def chaos(chaos_dir):
    return D.resolve_dataset(chaos_dir, labels="chaos")


@pytest.fixture(scope="module")
def sabs(sabs_dir):
    return D.resolve_dataset(sabs_dir, labels="sabs")


def test_presets_resolve_through_data_root(tmp_path, monkeypatch):
    (tmp_path / "CHAOST2").mkdir()
    (tmp_path / "SABS").mkdir()
    monkeypatch.setenv("CRAPNET_DATA_ROOT", str(tmp_path))
    c = D.resolve_dataset("chaos")
    assert c.root == (tmp_path / "CHAOST2").resolve() and c.modality == "MR" and c.body_threshold == 50
    assert c.labels == {"liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
    s = D.resolve_dataset("sabs")
    assert s.modality == "CT" and s.body_threshold == pytest.approx(1e-4)
    assert (s.labels["spleen"], s.labels["right_kidney"], s.labels["left_kidney"], s.labels["liver"]) == (1, 2, 3, 6)
    assert len(s.labels) == 13 and not c.is_phantom
    monkeypatch.delenv("CRAPNET_DATA_ROOT")
    with pytest.raises(D.DatasetError, match="CRAPNET_DATA_ROOT"):
        D.resolve_dataset("chaos")
    assert D.resolve_dataset("sabs", data_root=tmp_path).root == (tmp_path / "SABS").resolve()


def test_custom_folder_label_maps(tmp_path):
    (tmp_path / "labels.yaml").write_text("modality: CT\nlabels:\n  liver: 2\n  spleen: 5\n")
    spec = D.resolve_dataset(tmp_path)
    assert spec.labels == {"liver": 2, "spleen": 5} and spec.modality == "CT" and spec.name == tmp_path.name
    other = tmp_path / "map.json"
    other.write_text(json.dumps({"modality": "mr", "labels": {"kidney": 1}, "body_threshold": 7}))
    spec = D.resolve_dataset(tmp_path, labels=other)
    assert spec.modality == "MR" and spec.body_threshold == 7 and spec.labels == {"kidney": 1}
    assert D.resolve_dataset(tmp_path, labels="chaos").labels == D.CHAOS_LABELS
    assert hash(spec) == hash(D.resolve_dataset(tmp_path, labels=other))


@pytest.mark.realdata
def test_chaos_volume_layout_and_cache(chaos):
    vol = D.load_volume(chaos, "1")
    raw = nib.load(str(chaos.root / "image_1.nii.gz"))
    arr = np.asanyarray(raw.dataobj)
    assert vol.image.shape == (256, 256, arr.shape[2]) and vol.image.dtype == np.float32
    assert vol.label.dtype == np.int16 and vol.label.shape == vol.image.shape
    # SSL-ALPNet's view: SimpleITK GetArrayFromImage (k, j, i) then transpose(1, 2, 0) -> (j, i, k)
    ssl_alpnet = np.transpose(np.transpose(arr, (2, 1, 0)), (1, 2, 0))
    np.testing.assert_array_equal(vol.image, ssl_alpnet.astype(np.float32))
    assert vol.geometry.inplane == "identity" and "".join(nib.aff2axcodes(raw.affine)) == "LAS"
    np.testing.assert_allclose(vol.affine, raw.affine)  # the file's affine (predictions are saved with it)
    assert vol.spacing == pytest.approx((1.25, 1.25, 7.7), abs=1e-4)
    assert D.load_volume(chaos, 1) is vol  # loaded once, reused


@pytest.mark.realdata
def test_sabs_crop_257_like_ssl_alpnet_and_restore(sabs):
    vol = D.load_volume(sabs, "1")
    lab = np.asanyarray(nib.load(str(sabs.root / "label_1.nii.gz")).dataobj)
    assert lab.shape[:2] == (257, 257) and vol.original_shape == lab.shape
    assert vol.label.shape == (256, 256, lab.shape[2]) and vol.geometry.inplane == "crop"
    # SSL-ALPNet keeps file voxels i, j < 256 of its (j, i, k) array; the file is LPS, so in the
    # canonical (A, L, S) order the rows are that array's rows reversed (see crapnet_core.data.geometry)
    ssl_alpnet = np.transpose(lab, (1, 0, 2))[:256, :256, :]
    np.testing.assert_array_equal(vol.label, ssl_alpnet[::-1].astype(np.int16))
    back = D.restore_shape(vol.label, vol)
    assert back.shape == lab.shape
    np.testing.assert_array_equal(back[:256, :256], lab[:256, :256])  # the file's own axis order again
    assert not back[256, :, :].any() and not back[:, 256, :].any()
    with pytest.raises(ValueError, match="restore_shape"):
        D.restore_shape(vol.label[:10], vol)


@pytest.mark.realdata
def test_normalisation_mr_and_ct(chaos, sabs):
    vol = D.load_volume(chaos, "2")
    assert D.normalization_stats(chaos, ["2"]) is None
    x = D.normalize(vol, chaos)
    assert x.dtype == np.float32 and x.shape == vol.image.shape
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3  # per-volume z-score

    ct = D.load_volume(sabs, "1")
    mean, std = D.normalization_stats(sabs, ["1"])
    assert mean == pytest.approx(float(ct.image.astype(np.float64).mean()), rel=1e-6)
    assert std == pytest.approx(float(ct.image.astype(np.float64).std()), rel=1e-6)
    y = D.normalize(ct, sabs, (mean, std))
    assert abs(float(y.mean())) < 1e-3 and abs(float(y.std()) - 1) < 1e-3
    z = D.normalize(ct, sabs, (mean + 10.0, std))  # CT uses the given (training) statistics
    np.testing.assert_allclose(z, y - 10.0 / std, atol=1e-4)
    with pytest.raises(ValueError, match="stats"):
        D.normalize(ct, sabs, None)


@pytest.mark.realdata
def test_organ_slice_index_matches_labels(chaos):
    vol = D.load_volume(chaos, "1")
    lab = np.asanyarray(nib.load(str(chaos.root / "label_1.nii.gz")).dataobj)
    for organ, lid in chaos.labels.items():
        expected = [z for z in range(lab.shape[2]) if (lab[:, :, z] == lid).any()]
        assert D.organ_slices(vol, organ, chaos).tolist() == expected
        assert expected, organ
    index = D.organ_index(chaos, ["1"])
    assert set(index) == set(D.ORGANS)
    assert index["liver"]["1"] == D.organ_slices(vol, "liver", chaos).tolist()
    with pytest.raises(D.DatasetError, match="gallbladder"):
        D.organ_slices(vol, "gallbladder", chaos)


def test_slice_and_mask_tensors():
    vol = np.random.default_rng(0).normal(size=(256, 256, 3)).astype(np.float32)
    t = D.slice_tensor(vol, 1, 256)
    assert t.shape == (3, 256, 256) and t.dtype == torch.float32
    assert torch.equal(t[0], torch.from_numpy(vol[:, :, 1])) and torch.equal(t[0], t[2])
    small = D.slice_tensor(vol, 1, 128)
    assert small.shape == (3, 128, 128)
    assert torch.allclose(small[0], torch.from_numpy(vol[:, :, 1]).reshape(128, 2, 128, 2).mean((1, 3)), atol=1e-5)
    m = np.zeros((256, 256, 2), dtype=np.uint8)
    m[64:128, 32:96, 1] = 1
    mt = D.mask_tensor(m, 1, 128)
    assert mt.dtype == torch.int64 and mt.shape == (128, 128) and int(mt.sum()) == 32 * 32
    assert torch.equal(D.mask_tensor(m[:, :, 1]), torch.from_numpy(m[:, :, 1].astype(np.int64)))

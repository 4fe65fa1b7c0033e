"""Scans as researchers have them: non-finite voxels, colour NIfTI, formats, intensity ranges, tiny masks."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from crapnet_core.cli import main
from crapnet_core.data import datasets as D

AFFINE = np.diag([-1.25, 1.25, 7.7, 1.0])


def _pair(folder, sid, image, label, affine=AFFINE, ext=".nii.gz"):
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), str(folder / f"image_{sid}{ext}"))
    nib.save(nib.Nifti1Image(label, affine), str(folder / f"label_{sid}{ext}"))


def _labels(folder, **extra):
    labels = {"liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}  # CHAOS's (the phantom's)
    (folder / "labels.json").write_text(json.dumps({"modality": "MR", "labels": labels, **extra}))


def _phantom_scan(sid="1"):
    spec = D.resolve_dataset("phantom")
    img = nib.load(str(D.image_path(spec, sid)))
    lab = nib.load(str(D.label_path(spec, sid)))
    return np.asarray(img.dataobj).astype(np.float32), np.asarray(lab.dataobj).astype(np.uint8), img.affine


# --------------------------------------------------------------------------- non-finite voxels (item 4)
def test_nonfinite_image_voxels_are_counted_and_named(tmp_path):
    img = np.full((256, 256, 3), 100.0, np.float32)
    img[5, 5, 0], img[6, 6, 1], img[7, 7, 2] = np.nan, np.inf, -np.inf
    lab = np.zeros((256, 256, 3), np.uint8)
    lab[100:120, 100:120] = 1
    _pair(tmp_path, "1", img, lab)
    _labels(tmp_path)
    with pytest.raises(D.DatasetError, match=r"image_1\.nii\.gz: 3 NaN/infinite voxel\(s\) in the image"):
        D.load_volume(D.resolve_dataset(tmp_path), "1")
    with pytest.warns(UserWarning, match="replaced 3 NaN/infinite"):
        fixed = D.check_finite(img, "x.nii.gz", replace=True)
    assert np.isfinite(fixed).all() and fixed[5, 5, 0] == 100.0 and np.isnan(img[5, 5, 0])  # input untouched


# --------------------------------------------------------------------------- RGB NIfTI (item 10)
def _rgb_nifti(path):
    rgb = np.zeros((16, 16, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, AFFINE), str(path))


def test_rgb_nifti_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "rgb.nii.gz"
    _rgb_nifti(path)
    with pytest.raises(D.DatasetError, match=r"rgb\.nii\.gz: colour \(RGB\) NIfTI"):
        D.read_scan(path)
    assert main(["data", "summary", "--scan", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rgb.nii.gz" in err[0] and "RGB" in err[0] and "Traceback" not in err[0]
    vec = tmp_path / "vec.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 4, 3), np.uint8), AFFINE), str(vec))
    with pytest.raises(D.DatasetError, match="colour"):
        D.read_scan(vec)
    folder = tmp_path / "ds"
    folder.mkdir()
    _labels(folder)
    _rgb_nifti(folder / "image_1.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 4), np.uint8), AFFINE), str(folder / "label_1.nii.gz"))
    with pytest.raises(D.DatasetError, match=r"image_1\.nii\.gz: colour \(RGB\)"):
        D.load_volume(D.resolve_dataset(folder), "1")


# --------------------------------------------------------------------------- formats (item 11)
def test_dataset_folder_reads_uncompressed_nii(tmp_path):
    img, lab, aff = _phantom_scan("1")
    _pair(tmp_path / "gz", "1", img, lab, aff)
    _pair(tmp_path / "plain", "1", img, lab, aff, ext=".nii")
    for f in ("gz", "plain"):
        _labels(tmp_path / f)
    a = D.load_volume(D.resolve_dataset(tmp_path / "gz"), "1")
    b = D.load_volume(D.resolve_dataset(tmp_path / "plain"), "1")
    assert D.scan_ids(D.resolve_dataset(tmp_path / "plain")) == ["1"] and b.image_path.name == "image_1.nii"
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    _pair(tmp_path / "plain", "1", img, lab, aff)  # now both forms of id 1
    with pytest.raises(D.DatasetError, match="both as .nii and as .nii.gz"):
        D.scan_ids(D.resolve_dataset(tmp_path / "plain"))


def _to_sitk(arr, affine):
    """A SimpleITK image with nibabel ``arr`` (i, j, k) and RAS ``affine`` (the inverse of read_scan)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    return img


def _write_dicom_series(arr, affine, folder):
    import SimpleITK as sitk

    folder.mkdir()
    vol = _to_sitk(arr.astype(np.int16), affine)
    direction = vol.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(vol.GetDepth()):
        sl = vol[:, :, k]
        pos = vol.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (
            ("0008|0060", "MR"),
            ("0020|000d", "1.2.3.4"),
            ("0020|000e", "1.2.3.4.5"),
            ("0020|0013", str(k + 1)),
            ("0020|0032", "\\".join(f"{p:.6f}" for p in pos)),
            (
                "0020|0037",
                "\\".join(
                    f"{d:.6f}"
                    for d in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
                ),
            ),
            ("0018|0050", f"{vol.GetSpacing()[2]:.6f}"),
            ("0008|0018", f"1.2.3.4.5.{k + 1}"),
        ):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(sl)


def test_nrrd_mha_and_dicom_read_like_nifti(tmp_path):
    import SimpleITK as sitk

    img, _, aff = _phantom_scan("2")
    aff = aff.copy()
    aff[:3, :3] = aff[:3, :3] @ np.array([[1, 0.05, 0], [-0.05, 1, 0], [0, 0, 1]])  # slightly oblique
    arr = np.rint(img).astype(np.int16)
    for ext in (".mha", ".nrrd"):
        path = tmp_path / f"scan{ext}"
        sitk.WriteImage(_to_sitk(arr, aff), str(path))
        got, got_aff, zooms = D.read_scan(path)
        np.testing.assert_array_equal(got, arr)
        np.testing.assert_allclose(got_aff, aff, atol=1e-5)
    _write_dicom_series(arr, aff, tmp_path / "dicom")
    got, got_aff, _ = D.read_scan(tmp_path / "dicom")
    # a DICOM series stacks its slices along the slice normal (row x column cosines): this LAS
    # volume comes back with its slice axis reversed and the affine saying so -- the same world
    # geometry, hence the same model grid as from the NIfTI copy
    np.testing.assert_array_equal(got, arr[:, :, ::-1])
    np.testing.assert_allclose(got_aff[:, 2], -aff[:, 2] * [1, 1, 1, 0] + [0, 0, 0, 0], atol=1e-3)
    nib.save(nib.Nifti1Image(arr, aff), str(tmp_path / "scan.nii.gz"))
    ref = D.make_volume("q", *D.read_scan(tmp_path / "scan.nii.gz"), None, tmp_path / "scan.nii.gz", None)
    dcm = D.make_volume("q", *D.read_scan(tmp_path / "dicom"), None, tmp_path / "dicom", None)
    np.testing.assert_array_equal(dcm.image, ref.image)
    np.testing.assert_allclose(dcm.geometry.model_affine, ref.geometry.model_affine, atol=1e-3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DatasetError, match="no DICOM series"):
        D.read_scan(tmp_path / "empty")


def test_data_summary_of_one_scan(tmp_path, capsys):
    import SimpleITK as sitk

    img, _, aff = _phantom_scan("1")
    path = tmp_path / "q.mha"
    sitk.WriteImage(_to_sitk(img, aff), str(path))
    assert main(["data", "summary", "--scan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "orientation LAS -> model ALS" in out and "(identity)" in out and "non-finite voxels (NaN/Inf): 0" in out
    assert f"array {img.shape[0]}x{img.shape[1]}x{img.shape[2]}" in out


# --------------------------------------------------------------------------- intensities (item 3)
def test_body_mask_works_on_any_intensity_range(tmp_path):
    img, lab, aff = _phantom_scan("1")
    shares = {}
    for name, factor in (("raw", 1.0), ("unit", 1.0 / img.max()), ("ninety", 90.0 / img.max())):
        folder = tmp_path / name
        _pair(folder, "1", img * factor, lab, aff)
        _labels(folder)  # no body_threshold: data-driven (Otsu)
        spec = D.resolve_dataset(folder)
        assert spec.body_threshold is None
        vol = D.load_volume(spec, "1")
        rep = D.body_report(vol.image, vol.label, D.body_threshold_for(spec, vol.image))
        assert rep["organ_share"] > 0.98 and 0.2 < rep["image_share"] < 0.7, (name, rep)
        assert D.body_warning(rep, vol.image_path) is None
        shares[name] = rep["image_share"]
    assert max(shares.values()) - min(shares.values()) < 0.002  # the same body whatever the scale
    # the old rule (fixed threshold 50) on MR stored as 0-90 drops most organs: a warning names the file
    folder = tmp_path / "fixed"
    _pair(folder, "1", img * 90.0 / img.max(), lab, aff)
    _labels(folder, body_threshold=50)
    spec = D.resolve_dataset(folder)
    vol = D.load_volume(spec, "1")
    rep = D.body_report(vol.image, vol.label, D.body_threshold_for(spec, vol.image))
    assert rep["organ_share"] < 0.5
    assert "image_1.nii.gz" in D.body_warning(rep, vol.image_path)
    with pytest.warns(UserWarning, match="keeps only"):
        rows = D.summarize(spec)
    assert rows[0]["organs_in_body_%"] == pytest.approx(100 * rep["organ_share"], abs=0.1)


def test_superpixels_do_not_depend_on_the_intensity_scale(tmp_path, monkeypatch):
    from crapnet_core.data.superpixels import load_superpixels

    img, lab, aff = _phantom_scan("1")
    monkeypatch.setenv("CRAPNET_CACHE", str(tmp_path / "cache"))
    sps = {}
    for name, factor in (("unit", 1.0 / img.max()), ("big", 1300.0 / img.max())):
        folder = tmp_path / name
        _pair(folder, "1", img * factor, lab, aff)
        _labels(folder)
        sps[name] = load_superpixels(D.resolve_dataset(folder), "1")
    assert sps["unit"].max() > 5  # not all-empty
    agree = np.mean(sps["unit"] == sps["big"])
    assert agree > 0.99, agree


def test_ct_query_intensity_convention_is_checked():
    from crapnet_core.engine.segment import match_intensities

    profile = {
        "min": 0.0,
        "max": 255.0,
        "p0.5": 0.0,
        "p50": 60.0,
        "p99.5": 230.0,
        "convention": "0-255",
        "modality": "CT",
    }
    hu = np.array([-1024.0, -125.0, 75.0, 275.0, 1500.0], np.float32).reshape(1, 1, 5)
    vol = D.make_volume("q", np.broadcast_to(hu, (256, 256, 5)).copy(), np.eye(4), None, None, "q.nii.gz", None)
    note = match_intensities(vol, profile, True, "--query-image")
    assert "mapped" in note
    np.testing.assert_allclose(vol.image[0, 0], [0, 0, 127.5, 255, 255], atol=1e-4)
    same = D.make_volume("q", np.full((256, 256, 2), 80.0, np.float32), np.eye(4), None, None, "s.nii.gz", None)
    assert "as the training data" in match_intensities(same, profile, True, "--query-image")
    hu_profile = dict(profile, min=-1024.0, max=2000.0, convention="hu")
    with pytest.raises(ValueError, match=r"--query-image: s\.nii\.gz has CT intensities 80\.\.80 \(0-255\)"):
        match_intensities(same, hu_profile, True, "--query-image")
    assert "MR" in match_intensities(same, None, False, "--query-image")


# --------------------------------------------------------------------------- tiny masks (item 5)
def test_small_support_structures_survive_downsampling():
    import torch
    import torch.nn.functional as F

    m = np.zeros((256, 256), bool)
    m[100:102, 50] = True  # 2 voxels: nearest neighbour to 64 x 64 loses them
    nearest = F.interpolate(torch.from_numpy(m)[None, None].float(), size=(64, 64), mode="nearest")[0, 0]
    assert not nearest.any()
    out, below = D.downsample_mask(m, (64, 64))
    assert below and int(out.sum()) == 1 and out[25, 12] == 1  # the cell holding them
    big = np.zeros((256, 256), bool)
    big[64:128, 32:96] = True
    out, below = D.downsample_mask(big, (128, 128))
    assert not below and int(out.sum()) == 32 * 32
    assert torch.equal(D.mask_tensor(m[:, :, None], 0, 64), D.downsample_mask(m, (64, 64))[0])


def test_support_tensors_warn_below_resolution_and_refuse_empty():
    from crapnet_core.engine.prediction import support_tensors

    vol = np.zeros((256, 256, 2), np.float32)
    mask = np.zeros((256, 256, 2), bool)
    mask[10, 10, 0] = True
    with pytest.warns(UserWarning, match="below the model's resolution"):
        _, masks = support_tensors(vol, mask, [0], 64, source="sup.nii.gz")
    assert int(masks.sum()) == 1
    with pytest.raises(D.DatasetError, match="support mask of slice 1 is empty"):
        support_tensors(vol, mask, [1], 64, source="sup.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask[0:128, 0:128, 0] = True
        support_tensors(vol, mask, [0], 64)

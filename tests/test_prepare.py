"""Issue 9, item 12: ``crapnet data prepare`` on small raw downloads built here.

Synapse: HU NIfTI volumes in ``img/`` + ``label/``; CHAOS: a DICOM series written slice by
slice with SimpleITK plus ground-truth PNGs (file names in the opposite order of the slice
positions, so pairing by name and stacking by position are both exercised). Each test
checks the prepared files against the raw geometry (world coordinates of every organ),
labels (ids of the preset) and intensities (CT window, MR percentile clip).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from crapnet_core.cli import main  # noqa: E402
from crapnet_core.data import datasets as ds  # noqa: E402
from crapnet_core.data.prepare import PrepareError, keep_locale, prepare_dataset  # noqa: E402


def _centroid_mm(label: np.ndarray, affine: np.ndarray, value: int) -> np.ndarray:
    idx = np.argwhere(label == value).mean(axis=0)
    return affine[:3, :3] @ idx + affine[:3, 3]


def _volume_ml(label: np.ndarray, affine: np.ndarray, value: int) -> float:
    return float((label == value).sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0)


# ---------------------------------------------------------------------- Synapse
def write_synapse(raw: Path, n: int = 2, shape=(320, 300, 4)) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``raw/img/imgNNNN.nii.gz`` (HU) + ``raw/label/labelNNNN.nii.gz``; returns id -> (hu, label, affine)."""
    (raw / "img").mkdir(parents=True)
    (raw / "label").mkdir()
    out = {}
    for k in range(1, n + 1):
        hu = np.full(shape, -1000.0, dtype=np.float32)  # air
        hu[20:300, 20:280, :] = -100.0  # fat
        lab = np.zeros(shape, dtype=np.uint8)
        hu[40:120, 60:140, 1:3] = 100.0
        lab[40:120, 60:140, 1:3] = 1  # spleen
        hu[180:290, 150:270, 0:4] = 60.0
        lab[180:290, 150:270, 0:4] = 6  # liver
        hu[200, 30, 0] = 2000.0  # bone-bright voxel: clipped to 275 HU -> 255
        affine = np.array([[-0.78, 0, 0, 120.0 + k], [0, -0.74, 0, 110.0], [0, 0, 5.0, -300.0], [0, 0, 0, 1]])
        nib.save(nib.Nifti1Image(hu, affine), str(raw / "img" / f"img{k:04d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(raw / "label" / f"label{k:04d}.nii.gz"))
        out[str(k)] = (hu, lab, affine)
    return out


def test_prepare_synapse_round_trips_geometry_labels_and_window(tmp_path):
    raw = tmp_path / "RawData" / "Training"
    truth = write_synapse(raw)

    def listing():
        return sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in (tmp_path / "RawData").rglob("*"))

    before = listing()
    out = tmp_path / "sabs_prepared"
    summary = prepare_dataset("synapse", tmp_path / "RawData", out, progress=False)
    assert [r["scan"] for r in summary["scans"]] == ["1", "2"]
    assert listing() == before  # the download is only read
    assert json.loads((out / "labels.json").read_text())["labels"] == ds.SABS_LABELS

    spec = ds.resolve_dataset(str(out))
    assert spec.modality == "CT" and spec.labels == ds.SABS_LABELS
    assert ds.scan_ids(spec) == ["1", "2"]
    for sid, (hu, lab, affine) in truth.items():
        img = nib.load(str(out / f"image_{sid}.nii.gz"))
        new_lab = np.asanyarray(nib.load(str(out / f"label_{sid}.nii.gz")).dataobj)
        new_img = np.asanyarray(img.dataobj)
        assert new_img.shape == (256, 256, 4) and new_img.dtype == np.float32
        # the field of view is kept: spacing x size is the same in mm
        np.testing.assert_allclose(
            np.abs(np.diag(img.affine)[:3]) * [256, 256, 4], np.abs(np.diag(affine)[:3]) * np.array(hu.shape), rtol=1e-5
        )
        for value in (1, 6):  # spleen, liver: same place and size in the world
            np.testing.assert_allclose(
                _centroid_mm(new_lab, img.affine, value), _centroid_mm(lab, affine, value), atol=0.6
            )
            assert _volume_ml(new_lab, img.affine, value) == pytest.approx(_volume_ml(lab, affine, value), rel=0.03)
        # HU window [-125, 275] -> 0..255: air 0, fat (-100) 15.9375, spleen (100) 143.4375, 2000 HU clipped
        assert new_img.min() == 0.0
        assert new_img[5, 5, 0] == 0.0
        i, j = np.argwhere(new_lab[:, :, 1] == 1).mean(axis=0).round().astype(int)
        assert new_img[i, j, 1] == pytest.approx((100 + 125) * 255 / 400, abs=1e-3)
        assert new_img.max() <= 255.0 and (hu > 275).any()
        # the loader takes the prepared folder as it is
        vol = ds.load_volume(spec, sid)
        counts = np.bincount(vol.label.ravel(), minlength=7)
        assert counts[1] == (new_lab == 1).sum() and counts[6] == (new_lab == 6).sum()


def test_cli_prepare_prints_a_summary(tmp_path, capsys):
    write_synapse(tmp_path / "raw", n=1, shape=(300, 300, 2))
    assert (
        main(
            [
                "data",
                "prepare",
                "--source",
                "synapse",
                "--raw",
                str(tmp_path / "raw"),
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "prepared 1 CT scans" in text and "256x256x2" in text and "300x300x2" in text and "spleen" in text
    # a second run refuses to overwrite without --force, then does with it
    assert (
        main(
            [
                "data",
                "prepare",
                "--source",
                "synapse",
                "--raw",
                str(tmp_path / "raw"),
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "--force" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "prepare",
                "--source",
                "synapse",
                "--raw",
                str(tmp_path / "raw"),
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
                "--force",
            ]
        )
        == 0
    )


def test_prepare_refuses_bad_layouts_and_places(tmp_path, capsys):
    write_synapse(tmp_path / "raw", n=1, shape=(300, 300, 2))
    with pytest.raises(PrepareError, match=r"not a CHAOS MR download.*<id>/T2SPIR/DICOM_anon"):
        prepare_dataset("chaos", tmp_path / "raw", tmp_path / "o1", progress=False)
    with pytest.raises(PrepareError, match="inside the raw folder"):
        prepare_dataset("synapse", tmp_path / "raw", tmp_path / "raw" / "prepared", progress=False)
    assert not (tmp_path / "raw" / "prepared").exists() and not (tmp_path / "o1").exists()
    (tmp_path / "raw" / "label" / "label0001.nii.gz").unlink()
    with pytest.raises(PrepareError, match="img0001.nii.gz: no label file label0001.nii.gz"):
        prepare_dataset("synapse", tmp_path / "raw", tmp_path / "o2", progress=False)
    # an unknown label id is named with its file
    _, lab, affine = write_synapse(tmp_path / "raw2", n=1, shape=(300, 300, 2))["1"]
    lab[0, 0, 0] = 14
    nib.save(nib.Nifti1Image(lab, affine), str(tmp_path / "raw2" / "label" / "label0001.nii.gz"))
    with pytest.raises(PrepareError, match=r"label0001.nii.gz: label value\(s\) \[14\] are not BTCV organ ids"):
        prepare_dataset("synapse", tmp_path / "raw2", tmp_path / "o3", progress=False)
    nib.save(nib.Nifti1Image(lab * 0, np.eye(4)), str(tmp_path / "raw2" / "label" / "label0001.nii.gz"))
    with pytest.raises(PrepareError, match=r"label0001.nii.gz: geometry .* does not match the image img0001"):
        prepare_dataset("synapse", tmp_path / "raw2", tmp_path / "o3", progress=False)


def test_a_folder_with_other_names_shows_the_expected_names(tmp_path, capsys):
    """Today a folder of img*/label* NIfTI files was called "empty"."""
    write_synapse(tmp_path / "raw", n=2, shape=(300, 300, 2))
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (tmp_path / "raw").rglob("*.nii.gz"):
        (flat / p.name).symlink_to(p)
    assert main(["data", "summary", "--data-dir", str(flat), "--preset", "sabs"]) == 2
    err = capsys.readouterr().err
    assert "img0001.nii.gz" in err and "expected image_<id>.nii.gz with label_<id>.nii.gz" in err
    assert "crapnet data prepare" in err and "empty" not in err
    (tmp_path / "empty").mkdir()
    assert main(["data", "summary", "--data-dir", str(tmp_path / "empty"), "--preset", "sabs"]) == 2
    assert "empty dataset folder" in capsys.readouterr().err


# ---------------------------------------------------------------------- CHAOS
def write_chaos_case(
    root: Path,
    case_id: str,
    shape=(5, 280, 288),
    spacing=(1.4, 1.45, 7.0),
    origin=(-190.0, -200.0, 30.0),
    grey_extra: int | None = None,
):
    """A T2-SPIR case: DICOM slices (names in reverse position order) + PNG ground truth.

    Returns ``(array (z, rows, cols), grey (z, rows, cols))`` in position order.
    """
    nz, ny, nx = shape
    vol = np.full(shape, 300, dtype=np.int16)
    grey = np.zeros(shape, np.uint8)
    grey[1:4, 40:120, 50:150] = 63  # liver
    grey[2:4, 150:200, 60:100] = 126  # right kidney
    grey[2:5, 150:200, 180:220] = 189  # left kidney
    grey[0:2, 60:110, 200:260] = 252  # spleen
    if grey_extra is not None:
        grey[0, 0, 0] = grey_extra
    vol[grey > 0] = 700
    vol[4, 270, 5] = 5000  # an outlier: clipped at the 99.5th percentile (700)
    dcm_dir = root / case_id / "T2SPIR" / "DICOM_anon"
    gt_dir = root / case_id / "T2SPIR" / "Ground"
    dcm_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    with keep_locale():  # GDCM sets the locale to "C" when it writes DICOM
        _write_slices(vol, grey, dcm_dir, gt_dir, case_id, spacing, origin)
    return vol, grey


def _write_slices(vol, grey, dcm_dir, gt_dir, case_id, spacing, origin):
    nz = vol.shape[0]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = f"1.2.826.0.1.3680043.2.1125.9.{case_id}"
    for z in range(nz):
        sl = sitk.GetImageFromArray(vol[z])
        sl.SetSpacing(spacing[:2])
        pos = (origin[0], origin[1], origin[2] + z * spacing[2])
        name = f"IMG-0002-{nz - z:05d}"  # file names run against the slice positions
        for tag, value in [
            ("0008|0060", "MR"),
            ("0020|000e", series),
            ("0020|000d", series + ".0"),
            ("0020|0032", "\\".join(f"{p:.4f}" for p in pos)),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0013", str(nz - z)),
            ("0018|0050", str(spacing[2])),
            ("0028|0030", f"{spacing[1]}\\{spacing[0]}"),
            ("0008|0018", f"{series}.{z + 1}"),
            ("0008|0016", "1.2.840.10008.5.1.4.1.1.4"),
        ]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(dcm_dir / f"{name}.dcm"))
        writer.Execute(sl)
        sitk.WriteImage(sitk.GetImageFromArray(grey[z]), str(gt_dir / f"{name}.png"))


def test_prepare_chaos_dicom_png_round_trip(tmp_path):
    raw = tmp_path / "CHAOS_Train_Sets" / "Train_Sets" / "MR"
    vol, grey = write_chaos_case(raw, "2")
    write_chaos_case(raw, "10")
    out = tmp_path / "chaos_prepared"
    summary = prepare_dataset("chaos", tmp_path / "CHAOS_Train_Sets", out, progress=False)
    assert [r["scan"] for r in summary["scans"]] == ["2", "10"]
    assert summary["scans"][0]["pairing"] == "file-name stem"
    spec = ds.resolve_dataset(str(out))
    assert spec.modality == "MR" and spec.labels == ds.CHAOS_LABELS

    # world geometry of the raw DICOM series: x = origin + spacing * col, y = ... * row, z = 30 + 7 * k
    raw_affine = np.array([[1.4, 0, 0, -190.0], [0, 1.45, 0, -200.0], [0, 0, 7.0, 30.0], [0, 0, 0, 1]])
    raw_lab_xyz = np.transpose(grey, (2, 1, 0))  # (col, row, z): voxel index order of raw_affine
    img = sitk.ReadImage(str(out / "image_2.nii.gz"))
    lab_img = sitk.ReadImage(str(out / "label_2.nii.gz"))
    new_lab = np.transpose(sitk.GetArrayFromImage(lab_img), (2, 1, 0))
    assert img.GetSize() == (256, 256, 5)
    np.testing.assert_allclose(np.array(img.GetSpacing()) * [256, 256, 5], [1.4 * 288, 1.45 * 280, 35.0], rtol=1e-5)
    new_affine = np.eye(4)
    new_affine[:3, :3] = np.diag(img.GetSpacing())
    new_affine[:3, 3] = img.GetOrigin()
    for grey_value, organ in ((63, "liver"), (126, "right_kidney"), (189, "left_kidney"), (252, "spleen")):
        lid = ds.CHAOS_LABELS[organ]
        np.testing.assert_allclose(
            _centroid_mm(new_lab, new_affine, lid), _centroid_mm(raw_lab_xyz, raw_affine, grey_value), atol=0.8
        )
        assert _volume_ml(new_lab, new_affine, lid) == pytest.approx(
            _volume_ml(raw_lab_xyz, raw_affine, grey_value), rel=0.03
        )
    # the spleen sits on the two lowest slices (z = 30 and 37 mm), whatever the file names say
    assert sorted(np.flatnonzero((new_lab == 4).any(axis=(0, 1)))) == [0, 1]
    # 99.5th-percentile clip: the 5000 outlier becomes 700, organs keep 700, background 300
    arr = sitk.GetArrayFromImage(img)
    assert arr.max() == pytest.approx(700.0) and arr.min() == pytest.approx(300.0)
    # the loader reads what prepare wrote, with the same labels
    loaded = ds.load_volume(spec, "2")
    for organ, lid in ds.CHAOS_LABELS.items():
        assert (loaded.label == lid).sum() == (new_lab == lid).sum(), organ


def test_prepare_chaos_names_a_bad_png(tmp_path):
    write_chaos_case(tmp_path / "raw", "3", grey_extra=100)
    with pytest.raises(PrepareError, match=r"Ground/IMG-0002-00005.png: grey value\(s\) \[100\]"):
        prepare_dataset("chaos", tmp_path / "raw", tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "prepare.json").exists()


def test_prepare_help_describes_layouts(capsys):
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    text = capsys.readouterr().out
    for words in ("imgNNNN.nii.gz", "T2SPIR/DICOM_anon", "63/126/189/252", "[-125, 275]", "99.5th percentile"):
        assert words in text, words


def test_prepare_leaves_the_locale_and_text_files_are_utf8(tmp_path):
    import locale

    from crapnet_core.io import write_text

    before = locale.setlocale(locale.LC_ALL)
    write_chaos_case(tmp_path / "raw", "4")
    prepare_dataset("chaos", tmp_path / "raw", tmp_path / "out", progress=False)
    assert locale.setlocale(locale.LC_ALL) == before
    try:
        locale.setlocale(locale.LC_ALL, "C")  # what GDCM leaves behind: ASCII default encoding
        write_text(tmp_path / "t.md", "phantom \u2014 SYNTHETIC")
    finally:
        locale.setlocale(locale.LC_ALL, before)
    assert (tmp_path / "t.md").read_text(encoding="utf-8") == "phantom \u2014 SYNTHETIC"

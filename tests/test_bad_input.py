"""Every bad-input case gets a clear DatasetError (a ValueError) naming the file and the problem."""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from crapnet_core.cli import main
from crapnet_core.data import datasets as D

AFFINE = np.diag([-1.25, 1.25, 7.7, 1.0])


def write_pair(folder, sid, image=None, label=None, affine=AFFINE, label_affine=None, shape=(256, 256, 3)):
    """A small valid pair (liver=1 in every slice, spleen=4 in slice 1) unless told otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = np.full(shape, 100.0, dtype=np.float32)
        image[:20] = 0
    if label is None:
        label = np.zeros(shape, dtype=np.float32)
        label[100:140, 100:140, :] = 1
        label[30:50, 30:50, 1] = 4
    if image is not False:
        nib.save(nib.Nifti1Image(image, affine), str(folder / f"image_{sid}.nii.gz"))
    if label is not False:
        nib.save(
            nib.Nifti1Image(label, affine if label_affine is None else label_affine),
            str(folder / f"label_{sid}.nii.gz"),
        )


def spec_of(folder):
    return D.resolve_dataset(folder, labels="chaos")


def expect_error(folder, sid, *words):
    with pytest.raises(D.DatasetError) as info:
        D.load_volume(spec_of(folder), sid)
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    assert isinstance(info.value, ValueError)
    return msg


def test_valid_pair_loads(tmp_path):
    write_pair(tmp_path, "1")
    vol = D.load_volume(spec_of(tmp_path), "1")
    assert vol.image.shape == (256, 256, 3)


def test_empty_folder(tmp_path):
    with pytest.raises(D.DatasetError, match="empty"):
        D.scan_ids(spec_of(tmp_path))
    (tmp_path / "notes.txt").write_text("not a scan")
    with pytest.raises(D.DatasetError, match=str(tmp_path)):
        D.scan_ids(spec_of(tmp_path))


def test_missing_pair(tmp_path):
    write_pair(tmp_path, "1")
    write_pair(tmp_path, "2", label=False)
    with pytest.raises(D.DatasetError, match=r"image_2\.nii\.gz.*missing pair.*label_2"):
        D.scan_ids(spec_of(tmp_path))
    expect_error(tmp_path, "2", "label_2.nii.gz", "missing pair")
    other = tmp_path / "o"
    write_pair(other, "3", image=False)
    with pytest.raises(D.DatasetError, match=r"label_3\.nii\.gz.*missing pair"):
        D.scan_ids(spec_of(other))


def test_shape_mismatch(tmp_path):
    write_pair(tmp_path, "1", label=np.zeros((256, 256, 4), np.float32))
    expect_error(tmp_path, "1", "label_1.nii.gz", "shape", "(256, 256, 4)", "(256, 256, 3)")


def test_affine_mismatch(tmp_path):
    write_pair(tmp_path, "1", label_affine=np.diag([-1.25, 1.25, 5.0, 1.0]))
    expect_error(tmp_path, "1", "label_1.nii.gz", "affine")


def test_non_integer_labels(tmp_path):
    lab = np.zeros((256, 256, 3), np.float32)
    lab[5, 5, 0] = 1.5
    write_pair(tmp_path, "1", label=lab)
    expect_error(tmp_path, "1", "label_1.nii.gz", "non-integer", "1.5")


def test_unknown_labels(tmp_path):
    lab = np.zeros((256, 256, 3), np.int16)
    lab[5, 5, 0] = 7
    write_pair(tmp_path, "1", label=lab)
    expect_error(tmp_path, "1", "label_1.nii.gz", "unknown label", "7")


def test_nan_voxels(tmp_path):
    img = np.full((256, 256, 3), 100.0, np.float32)
    img[3, 4, 2] = np.nan
    write_pair(tmp_path, "1", image=img)
    expect_error(tmp_path, "1", "image_1.nii.gz", "NaN")
    lab = np.zeros((256, 256, 3), np.float32)
    lab[0, 0, 0] = np.nan
    write_pair(tmp_path / "b", "1", label=lab)
    expect_error(tmp_path / "b", "1", "label_1.nii.gz", "NaN")


def test_unreadable_and_truncated(tmp_path):
    write_pair(tmp_path, "1")
    (tmp_path / "image_1.nii.gz").write_bytes(b"this is not a nifti file at all")
    expect_error(tmp_path, "1", "image_1.nii.gz", "unreadable")
    write_pair(tmp_path / "t", "2")
    full = (tmp_path / "t" / "label_2.nii.gz").read_bytes()
    (tmp_path / "t" / "label_2.nii.gz").write_bytes(full[: len(full) // 2])
    expect_error(tmp_path / "t", "2", "label_2.nii.gz", "truncated")
    # a valid gzip holding a truncated NIfTI payload
    write_pair(tmp_path / "u", "3")
    raw = gzip.decompress((tmp_path / "u" / "image_3.nii.gz").read_bytes())
    (tmp_path / "u" / "image_3.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 3]))
    expect_error(tmp_path / "u", "3", "image_3.nii.gz", "unreadable or truncated")


def test_small_in_plane_is_resampled_not_refused(tmp_path):
    lab = np.zeros((128, 256, 3), np.float32)
    lab[32:64, 100:140, 1] = 1  # file voxels i 32..63, j 100..139
    write_pair(tmp_path, "1", label=lab, shape=(128, 256, 3))
    vol = D.load_volume(spec_of(tmp_path), "1")
    assert vol.image.shape == (256, 256, 3) and vol.geometry.inplane == "resample"
    # model grid = transposed (rows j, columns i) with i stretched x2 (pixel-area geometry)
    expected = np.zeros((256, 256), bool)
    expected[100:140, 64:128] = True
    np.testing.assert_array_equal(vol.label[:, :, 1] == 1, expected)
    np.testing.assert_array_equal(D.restore_shape(vol.label, vol), lab.astype(np.int16))


def test_absent_organ_warns_and_is_handled(tmp_path):
    lab = np.zeros((256, 256, 3), np.float32)
    lab[100:140, 100:140, :] = 1  # liver only
    write_pair(tmp_path, "1", label=lab)
    spec = spec_of(tmp_path)
    vol = D.load_volume(spec, "1")
    with pytest.warns(UserWarning, match=r"label_1\.nii\.gz.*spleen.*absent"):
        zs = D.organ_slices(vol, "spleen", spec)
    assert zs.size == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = D.organ_index(spec)
    assert index["spleen"] == {"1": []} and index["liver"] == {"1": [0, 1, 2]}


def test_label_map_errors(tmp_path):
    write_pair(tmp_path, "1")
    with pytest.raises(D.DatasetError, match="no label map"):
        D.resolve_dataset(tmp_path)
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps({"modality": "PET", "labels": {"liver": 1}}))
    with pytest.raises(D.DatasetError, match=r"labels\.json.*modality"):
        D.resolve_dataset(tmp_path)
    bad.write_text(json.dumps({"modality": "MR", "labels": {"liver": 1.5}}))
    with pytest.raises(D.DatasetError, match=r"labels\.json.*liver"):
        D.resolve_dataset(tmp_path)
    bad.write_text("{not json")
    with pytest.raises(D.DatasetError, match=r"labels\.json.*parse"):
        D.resolve_dataset(tmp_path)
    with pytest.raises(D.DatasetError, match="not found"):
        D.resolve_dataset(tmp_path / "nowhere")


def _digests(folder):
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
    }


def test_inputs_never_modified(tmp_path, monkeypatch):
    from crapnet_core.data.superpixels import compute_superpixels, load_superpixels

    monkeypatch.setenv("CRAPNET_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    write_pair(data, "1")
    write_pair(data, "2")
    before = _digests(data)
    spec = spec_of(data)
    D.summarize(spec)
    load_superpixels(spec, "1")
    compute_superpixels(spec, tmp_path / "out", progress=False)
    assert main(["data", "summary", "--data-dir", str(data), "--preset", "chaos"]) == 0
    assert _digests(data) == before


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    write_pair(tmp_path, "1", label_affine=np.diag([-1.0, 1.0, 7.7, 1.0]))
    rc = main(["data", "summary", "--data-dir", str(tmp_path), "--preset", "chaos"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "label_1.nii.gz" in err and "affine" in err and len(err.splitlines()) == 1
    rc = main(
        ["superpixels", "--data-dir", str(tmp_path / "missing"), "--preset", "chaos", "--out", str(tmp_path / "o")]
    )
    assert rc == 2 and "not found" in capsys.readouterr().err

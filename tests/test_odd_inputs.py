"""Odd inputs a demanding new user brings (issue 23, items 4-7): a label stored in another axis
order than its image, label maps with a key given twice, float labels with noise, a soft
support mask, superpixels overlaid on the scan they belong to, thin stacks, symbolic link
loops, organ names beyond ASCII, an organ of the label map that no file contains."""

from __future__ import annotations

import json
import unicodedata
import warnings

import nibabel as nib
import numpy as np
import pytest
from test_scans import _phantom_scan, _write_dicom_series  # tests/ is on sys.path (pytest's rootdir rule)

from crapnet_core.cli import main
from crapnet_core.data import datasets as D

LABELS = {"liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}  # the phantom's (CHAOS's)


def _save(path, arr, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def _folder(tmp_path, labels=None, **extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "labels.json").write_text(
        json.dumps({"modality": "MR", "labels": labels or LABELS, **extra}, ensure_ascii=False), encoding="utf-8"
    )
    return tmp_path


def _flip_j(arr, affine):
    """The same world grid with the second voxel axis reversed (e.g. LPS <-> LAS)."""
    out = affine.copy()
    out[:, 1] = -affine[:, 1]
    out[:3, 3] = affine[:3, 3] + affine[:3, 1] * (arr.shape[1] - 1)
    return arr[:, ::-1, :], out


def _permute(arr, affine):
    """The same world grid with the voxel axes stored in the order (k, i, j)."""
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), affine[:, [2, 0, 1, 3]]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained smoke run (1 step) for `crapnet segment`."""
    from crapnet_core.engine.experiment import make_config
    from crapnet_core.engine.training import train

    out = tmp_path_factory.mktemp("run") / "run"
    train(make_config("smoke", "phantom", 1, 0, "alpnet", ["train.steps=1", "train.device=cpu"]), out, progress=False)
    return out


def _segment(run, s_img, s_lab, q_img, out, *extra):
    return main(
        [
            "segment",
            "--run",
            str(run),
            "--support-image",
            str(s_img),
            "--support-label",
            str(s_lab),
            "--support-organ-label",
            "1",
            "--query-image",
            str(q_img),
            "--out",
            str(out),
            *extra,
        ]
    )


# ---------------------------------------------------------------------- 4. the image/label pair
def test_a_label_in_another_axis_order_is_reoriented_not_refused(tmp_path):
    img, lab, aff = _phantom_scan("1")
    data = _folder(tmp_path / "data")
    _save(data / "image_1.nii.gz", img, aff)
    _save(data / "label_1.nii.gz", lab, aff)
    _save(data / "image_2.nii.gz", img, aff)
    _save(data / "label_2.nii.gz", *_flip_j(lab, aff))  # LAS image, LPS label: one world grid
    _save(data / "image_3.nii.gz", img, aff)
    _save(data / "label_3.nii.gz", *_permute(lab, aff))  # axes stored (k, i, j)
    spec = D.resolve_dataset(data)
    ref = D.load_volume(spec, "1")
    for sid in ("2", "3"):
        vol = D.load_volume(spec, sid)
        np.testing.assert_array_equal(vol.label, ref.label)
        np.testing.assert_array_equal(vol.file_label(), ref.file_label())  # what evaluation scores against
    # another grid is refused, saying what differs
    _save(data / "image_4.nii.gz", img, aff)
    zoomed = aff.copy()
    zoomed[:3, :3] *= 1.1
    _save(data / "label_4.nii.gz", lab, zoomed)
    with pytest.raises(
        D.DatasetError, match=r"label_4\.nii\.gz: not on the world grid of the image image_4.*voxel size"
    ):
        D.load_volume(spec, "4")
    _save(data / "image_5.nii.gz", img, aff)
    flipped, faff = _flip_j(lab, aff)
    faff[:3, 3] += [0.0, 0.0, 5.0]
    _save(data / "label_5.nii.gz", flipped, faff)
    with pytest.raises(D.DatasetError, match=r"reoriented to the image's LAS.*5 mm apart"):
        D.load_volume(spec, "5")


def test_evaluation_supports_take_their_labels_through_the_pair_rule(tmp_path):
    """The support scans of the evaluations (the fold's support, the support-choice and k-shot
    supports: engine.evaluation.FoldEvaluator.support) read their label on the image's array, as the
    dataset loader: a label stored flipped or in another axis order gives the same support."""
    import torch

    from crapnet_core.engine.evaluation import FoldEvaluator

    img, lab, aff = _phantom_scan("1")
    data = _folder(tmp_path / "data")
    for sid, pair in (("1", (lab, aff)), ("2", _flip_j(lab, aff)), ("3", _permute(lab, aff))):
        _save(data / f"image_{sid}.nii.gz", img, aff)
        _save(data / f"label_{sid}.nii.gz", *pair)
    ev = object.__new__(FoldEvaluator)  # the support side only: no model, no fold
    ev.spec, ev.n_parts, ev.size = D.resolve_dataset(data), 3, 64
    ev.stats = D.normalization_stats(ev.spec, ["1"])
    ev._supports, ev._image_labels, ev._norm = {}, {}, {}
    ref = ev.support("1", "liver")
    assert ref is not None and ref.masks.sum() > 0
    for sid in ("2", "3"):
        sup = ev.support(sid, "liver")
        assert (sup.slices, sup.n_slices_with_organ) == (ref.slices, ref.n_slices_with_organ)
        assert torch.equal(sup.masks, ref.masks) and torch.equal(sup.images, ref.images)


def test_segment_takes_a_dicom_support_with_a_nifti_label(run, tmp_path, capsys):
    """The DICOM series reads with its slice axis reversed (LPS-style), its NIfTI label is stored
    as the original: one world grid, so the label is reoriented, and the prediction is the one
    of the all-NIfTI pair."""
    img, lab, aff = _phantom_scan("1")
    q_img, _, q_aff = _phantom_scan("3")
    arr = np.rint(img).astype(np.int16)
    _write_dicom_series(arr, aff, tmp_path / "dicom")
    s_lab = _save(tmp_path / "label.nii.gz", lab, aff)
    q = _save(tmp_path / "q.nii.gz", q_img, q_aff)
    assert _segment(run, _save(tmp_path / "s.nii.gz", arr, aff), s_lab, q, tmp_path / "ref.nii.gz") == 0
    capsys.readouterr()
    assert _segment(run, tmp_path / "dicom", s_lab, q, tmp_path / "dcm.nii.gz") == 0, capsys.readouterr().err
    ref = np.asarray(nib.load(str(tmp_path / "ref.nii.gz")).dataobj)
    assert ref.any()
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "dcm.nii.gz")).dataobj), ref)


# ---------------------------------------------------------------------- 5. label maps and label values
def test_a_key_given_twice_in_a_label_map_is_refused_naming_it(tmp_path):
    img, lab, aff = _phantom_scan("1")
    _save(tmp_path / "image_1.nii.gz", img, aff)
    _save(tmp_path / "label_1.nii.gz", lab, aff)
    (tmp_path / "labels.json").write_text('{"modality": "MR", "labels": {"liver": 1, "spleen": 4, "liver": 6}}')
    with pytest.raises(D.DatasetError, match=r"labels\.json: key 'liver' is given twice \(values 1 and 6\)"):
        D.resolve_dataset(tmp_path)
    (tmp_path / "labels.json").unlink()
    (tmp_path / "labels.yaml").write_text("modality: MR\nlabels:\n  liver: 1\n  spleen: 4\n  liver: 6\n")
    with pytest.raises(D.DatasetError, match=r"labels\.yaml: key 'liver' is given twice \(lines 3 and 5\)"):
        D.resolve_dataset(tmp_path)
    (tmp_path / "labels.yaml").write_text("modality: MR\nlabels:\n  liver: 1\n  spleen: 4\n")
    assert D.resolve_dataset(tmp_path).labels == {"liver": 1, "spleen": 4}


def test_float_labels_are_reported_with_their_true_values(tmp_path):
    img, lab, aff = _phantom_scan("1")
    noisy = lab.astype(np.float32)
    noisy[noisy > 0] += np.float32(1e-6)
    data = _folder(tmp_path)
    _save(data / "image_1.nii.gz", img, aff)
    _save(data / "label_1.nii.gz", noisy, aff)
    with pytest.raises(D.DatasetError) as info:
        D.load_volume(D.resolve_dataset(data), "1")
    msg = str(info.value)
    assert "non-integer values (1.000001, 2.000001" in msg and "within 1e-06 of an integer" in msg, msg


def test_segment_refuses_a_soft_support_label_as_the_dataset_loader_does(run, tmp_path, capsys):
    from scipy import ndimage

    img, lab, aff = _phantom_scan("1")
    soft = (lab == 1).astype(np.float32)
    soft[ndimage.binary_dilation(soft > 0) & (soft == 0)] = 0.5  # an interpolated mask: 0.5 borders
    s_img, s_lab = _save(tmp_path / "s.nii.gz", img, aff), _save(tmp_path / "s_lab.nii.gz", soft, aff)
    assert _segment(run, s_img, s_lab, s_img, tmp_path / "p.nii.gz") == 2
    err = capsys.readouterr().err
    assert "s_lab.nii.gz: label volume holds" in err and "non-integer values (0.5)" in err and "threshold" in err
    assert not (tmp_path / "p.nii.gz").exists()
    data = _folder(tmp_path / "data")  # the dataset loader: the same check, the same words
    _save(data / "image_1.nii.gz", img, aff)
    _save(data / "label_1.nii.gz", soft, aff)
    with pytest.raises(D.DatasetError, match=r"label volume holds \d+ voxel\(s\) with non-integer values \(0\.5\)"):
        D.load_volume(D.resolve_dataset(data), "1")


# ---------------------------------------------------------------------- 6. per-voxel outputs on the input's grid
def test_superpixels_out_lie_on_each_scan_s_own_grid(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRAPNET_CACHE", str(tmp_path / "cache"))
    img, lab, aff = _phantom_scan("2")
    data = _folder(tmp_path / "data")
    _save(data / "image_a.nii.gz", img, aff)
    _save(data / "label_a.nii.gz", lab, aff)
    _save(data / "image_b.nii.gz", *_permute(img, aff))  # the same scan, axes stored (k, i, j)
    _save(data / "label_b.nii.gz", *_permute(lab, aff))
    out = tmp_path / "sp"
    assert main(["superpixels", "--data-dir", str(data), "--out", str(out), "--no-progress"]) == 0
    sp = {}
    for sid in ("a", "b"):
        src, got = nib.load(str(data / f"image_{sid}.nii.gz")), nib.load(str(out / f"superpix_{sid}.nii.gz"))
        assert got.shape == src.shape and np.allclose(got.affine, src.affine), sid
        sp[sid] = np.asarray(got.dataobj)
    assert "each on its scan's own grid" in capsys.readouterr().out
    np.testing.assert_array_equal(sp["b"], sp["a"].transpose(2, 0, 1))  # voxel for voxel the same map
    assert len(np.unique(sp["a"])) > 5
    # the training cache keeps the model grid; mapped back, it is the file written for the user
    from crapnet_core.data.superpixels import load_superpixels

    vol = D.load_volume(D.resolve_dataset(data), "a")
    back = vol.geometry.from_canonical(
        vol.geometry.model_label_to_canonical(load_superpixels(D.resolve_dataset(data), "a"))
    )
    np.testing.assert_array_equal(back, sp["a"])


# ---------------------------------------------------------------------- 7. rough edges
def test_a_thin_stack_resliced_across_its_slices_is_warned_about():
    from crapnet_core.data.geometry import make_geometry

    short_axis = np.diag([8.0, 1.5, 1.5, 1.0])  # 15 slices of 8 mm along left-right, 256 x 256 of 1.5 mm
    with pytest.warns(UserWarning, match=r"sa\.nii\.gz: file axis 0 \(15 voxels of 8 mm\).*stretched 17\.1x"):
        make_geometry((15, 256, 256), short_axis, source="sa.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_geometry((256, 256, 15), np.diag([-1.5, 1.5, 8.0, 1.0]), source="axial.nii.gz")  # a normal stack
        make_geometry((512, 512, 90), np.diag([-0.7, -0.7, 3.0, 1.0]), source="ct.nii.gz")


def test_query_range_help_says_both_ends_are_included(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    assert "both ends included" in " ".join(capsys.readouterr().out.split())


def test_a_symlink_loop_is_reported_as_one(tmp_path, run, capsys):
    img, lab, aff = _phantom_scan("1")
    data = _folder(tmp_path / "data")
    (data / "image_1.nii.gz").symlink_to(data / "image_1.nii.gz")
    _save(data / "label_1.nii.gz", lab, aff)
    with pytest.raises(D.DatasetError, match=r"image_1\.nii\.gz: symbolic link loop"):
        D.load_volume(D.resolve_dataset(data), "1")
    s_img = _save(tmp_path / "s.nii.gz", img, aff)
    assert _segment(run, s_img, data / "label_1.nii.gz", data / "image_1.nii.gz", tmp_path / "p.nii.gz") == 2
    assert "image_1.nii.gz: symbolic link loop" in capsys.readouterr().err


def test_organ_names_keep_their_letters_in_any_script(tmp_path):
    from crapnet_core.engine.evaluation import prediction_file_name
    from crapnet_core.engine.experiment import make_config
    from crapnet_core.paths import safe_name

    nfc, nfd = "fígado", unicodedata.normalize("NFD", "fígado")
    assert nfc != nfd and safe_name(nfc) == safe_name(nfd) == "fígado"
    assert safe_name("肝臓") != safe_name("脾臓") and safe_name("left kidney") == "left_kidney"
    assert prediction_file_name("7", "腎臓 (左)") == "7_腎臓_左_.nii.gz"
    img, lab, aff = _phantom_scan("1")
    data = _folder(tmp_path / "data", {nfd: 1, "肝臓": 2, "脾臓": 4, "腎臓": 3})  # the label map spelled NFD
    _save(data / "image_1.nii.gz", img, aff)
    _save(data / "label_1.nii.gz", lab, aff)
    spec = D.resolve_dataset(data)
    assert set(spec.labels) == {nfc, "肝臓", "脾臓", "腎臓"}
    cfg = make_config("smoke", str(data), 1, 0, "crapnet", [], test_group=f"{nfc},脾臓")  # typed NFC
    assert [spec.label_id(o) for o in cfg.data.test_group] == [1, 4]
    cfg_nfd = make_config("smoke", str(data), 1, 0, "crapnet", [], test_group=f"{nfd},脾臓")
    assert cfg_nfd.config_hash() == cfg.config_hash()  # one organ, one run
    _folder(data, {nfc: 1, nfd: 2})
    with pytest.raises(D.DatasetError, match="same name in two Unicode spellings"):
        D.resolve_dataset(data)


def test_data_summary_names_an_organ_no_file_contains(tmp_path, capsys):
    img, lab, aff = _phantom_scan("1")
    data = _folder(tmp_path, {**LABELS, "gallbladder": 9})
    _save(data / "image_1.nii.gz", img, aff)
    _save(data / "label_1.nii.gz", lab, aff)
    assert main(["data", "summary", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "not in any scan: gallbladder (label 9)" in out

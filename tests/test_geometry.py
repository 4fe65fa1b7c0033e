"""Orientation and in-plane grid (crapnet_core.data.geometry): the same scan in any layout gives the same answer."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff

from crapnet_core.cli import main
from crapnet_core.data import datasets as D
from crapnet_core.data.geometry import CANONICAL_AXCODES, make_geometry, resize_inplane

# file-order transforms with identical world geometry (nibabel orientation arrays)
AS_STORED = np.array([[0, 1], [1, 1], [2, 1]])
SLICE_AXIS_FIRST = np.array([[1, 1], [2, 1], [0, 1]])  # (i, j, k) -> (k, i, j)
FLIPPED = np.array([[0, -1], [1, -1], [2, -1]])  # every axis reversed
LAYOUTS = {"stored": AS_STORED, "slice_first": SLICE_AXIS_FIRST, "flipped": FLIPPED}


def resave(src, dest, ornt):
    """Write ``src`` to ``dest`` with its voxel axes reordered/flipped and the affine adjusted (same world)."""
    img = nib.load(str(src))
    arr = np.asanyarray(img.dataobj)
    out = apply_orientation(arr, ornt)
    affine = img.affine @ inv_ornt_aff(ornt, arr.shape)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(out), affine), str(dest))


def back_to_stored(arr, ornt):
    """Undo :func:`resave`'s reordering: the array in the original file's voxel order."""
    inverse = np.zeros_like(ornt)
    for axis, (dest, flip) in enumerate(ornt):
        inverse[int(dest)] = [axis, flip]
    return apply_orientation(arr, inverse)


def test_canonical_array_is_the_same_for_every_layout(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(256, 256, 5)).astype(np.float32)
    affine = np.diag([-1.25, 1.25, 7.7, 1.0])
    affine[:3, 3] = [10, -20, 5]
    ref = make_geometry(arr.shape, affine)
    model = ref.image_to_model(arr)
    # CHAOS-like LAS file: the model slice is the transposed file slice (SSL-ALPNet's SimpleITK view)
    np.testing.assert_array_equal(model[:, :, 2], arr[:, :, 2].T)
    for name, ornt in LAYOUTS.items():
        a2 = apply_orientation(arr, ornt)
        g = make_geometry(a2.shape, affine @ inv_ornt_aff(ornt, arr.shape))
        np.testing.assert_array_equal(g.image_to_model(a2), model, err_msg=name)
        np.testing.assert_allclose(g.model_affine, ref.model_affine, atol=1e-9, err_msg=name)
        np.testing.assert_array_equal(g.from_canonical(g.to_canonical(a2)), a2)
    assert nib.aff2axcodes(ref.model_affine) == CANONICAL_AXCODES


def test_resample_keeps_the_whole_field_of_view():
    # a 384 x 384 slice with an organ touching the edge: nothing is cropped away
    lab = np.zeros((384, 384, 2), np.int16)
    lab[:60, 300:384, 0] = 1
    g = make_geometry(lab.shape, np.diag([0.8, 0.8, 3.0, 1.0]))
    assert g.inplane == "resample" and g.model_spacing == pytest.approx((1.2, 1.2, 3.0))
    m = g.label_to_model(lab)
    # 60 x 84 voxels of 0.8 mm -> 40 x 56 voxels of 1.2 mm (same area in mm^2)
    assert int((m == 1).sum()) == 40 * 56
    back = g.model_label_to_canonical(m)
    np.testing.assert_array_equal(g.from_canonical(back), lab)
    # probabilities go back to the file grid (bilinear), 0.5 threshold recovers the organ
    import torch

    prob = torch.from_numpy((m[:, :, 0] == 1).astype(np.float32))[None, None]
    up = g.prob_to_canonical(prob)[0, 0].numpy() > 0.5
    np.testing.assert_array_equal(g.from_canonical(up[:, :, None].repeat(2, 2))[:, :, 0], lab[:, :, 0] == 1)
    x = resize_inplane(np.ones((512, 512, 1), np.float32) * 7, (256, 256))
    assert x.shape == (256, 256, 1) and np.allclose(x, 7)


def test_singular_affine_is_a_clear_error(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "labels.json").write_text(json.dumps({"modality": "MR", "labels": {"liver": 1}}))
    for name, arr in (("image_1", np.ones((256, 256, 2), np.float32)), ("label_1", np.zeros((256, 256, 2), np.uint8))):
        img = nib.Nifti1Image(arr, np.eye(4))
        img.set_qform(None, code=0)
        img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # a header whose third axis has no direction
        nib.save(img, str(folder / f"{name}.nii.gz"))
    with pytest.raises(D.DatasetError, match=r"image_1\.nii\.gz: .*singular"):
        D.load_volume(D.resolve_dataset(folder), "1")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("geom") / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "phantom",
                "--fold",
                "0",
                "--method",
                "alpnet",
                "--profile",
                "smoke",
                "--steps",
                "2",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    return run


def test_segment_same_world_mask_for_every_layout(smoke_run, tmp_path, capsys):
    """Query and support saved as stored, slice axis first, flipped: identical world-space predictions."""
    spec = D.resolve_dataset("phantom")
    ids = D.scan_ids(spec)
    sup, qry = ids[4], ids[0]
    lid = spec.labels["liver"]
    preds = {}
    for name, ornt in LAYOUTS.items():
        d = tmp_path / name
        d.mkdir()
        for kind, sid in (("image", sup), ("label", sup), ("image", qry)):
            resave(spec.root / f"{kind}_{sid}.nii.gz", d / f"{kind}_{sid}.nii.gz", ornt)
        out = d / "pred.nii.gz"
        assert (
            main(
                [
                    "segment",
                    "--run",
                    str(smoke_run),
                    "--support-image",
                    str(d / f"image_{sup}.nii.gz"),
                    "--support-label",
                    str(d / f"label_{sup}.nii.gz"),
                    "--support-organ-label",
                    str(lid),
                    "--query-image",
                    str(d / f"image_{qry}.nii.gz"),
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        capsys.readouterr()
        img = nib.load(str(out))
        src = nib.load(str(d / f"image_{qry}.nii.gz"))
        assert img.shape == src.shape and np.allclose(img.affine, src.affine)  # the input's own layout
        preds[name] = back_to_stored(np.asarray(img.dataobj), ornt)
    ref = preds["stored"]
    assert 0 < int(ref.sum()) < ref.size // 2  # a real, non-trivial mask
    for name in ("slice_first", "flipped"):
        np.testing.assert_array_equal(preds[name], ref, err_msg=name)


def test_dataset_folder_same_metrics_for_every_layout(smoke_run, tmp_path):
    """The same dataset with every scan re-saved in another layout: same Dice, same world-space predictions."""
    import torch

    from crapnet_core.engine.evaluation import evaluate_model
    from crapnet_core.engine.experiment import ExperimentConfig
    from crapnet_core.engine.training import load_model

    spec = D.resolve_dataset("phantom")
    cfg = ExperimentConfig.load(smoke_run / "config.json")
    model, _ = load_model(cfg, smoke_run / "checkpoints" / "last.pt", torch.device("cpu"))
    results = {}
    for name, ornt in LAYOUTS.items():
        d = tmp_path / name
        d.mkdir()
        shutil.copy(spec.root / "labels.json", d / "labels.json")
        for sid in D.scan_ids(spec):
            for kind in ("image", "label"):
                resave(spec.root / f"{kind}_{sid}.nii.gz", d / f"{kind}_{sid}.nii.gz", ornt)
        cfg.data.dataset = str(d)
        cfg.data.test_group = ("spleen", "liver")  # two organs keep the test fast
        out = tmp_path / f"eval_{name}"
        metrics = evaluate_model(model, cfg, "cpu", out_dir=out, progress=False, save_predictions=True)
        preds = {
            p.name: back_to_stored(np.asarray(nib.load(str(p)).dataobj), ornt)
            for p in sorted((out / "predictions").glob("*.nii.gz"))
        }
        results[name] = (metrics, preds)
    ref_m, ref_p = results["stored"]
    assert any(0 < r["dice"] < 1 for o in ref_m["per_scan"].values() for r in o.values() if "dice" in r)
    for name in ("slice_first", "flipped"):
        m, p = results[name]
        assert m["per_scan"] == ref_m["per_scan"], name
        assert p.keys() == ref_p.keys()
        for k in p:
            np.testing.assert_array_equal(p[k], ref_p[k], err_msg=f"{name} {k}")


def test_metrics_are_computed_on_the_file_grid(smoke_run, tmp_path):
    """A 384 x 384 copy of the phantom: predictions saved on the file grid, Dice recomputed there."""
    import torch

    from crapnet_core.engine.evaluation import evaluate_model
    from crapnet_core.engine.experiment import ExperimentConfig
    from crapnet_core.engine.metrics import dice
    from crapnet_core.engine.training import load_model

    spec = D.resolve_dataset("phantom")
    d = tmp_path / "big"
    d.mkdir()
    shutil.copy(spec.root / "labels.json", d / "labels.json")
    for sid in D.scan_ids(spec):
        for kind, order in (("image", 1), ("label", 0)):
            img = nib.load(str(spec.root / f"{kind}_{sid}.nii.gz"))
            arr = np.asanyarray(img.dataobj)
            big = resize_inplane(arr.astype(np.float32), (384, 384), order=order)
            big = np.rint(big).astype(np.int16) if kind == "label" else big
            aff = img.affine @ np.diag([256 / 384, 256 / 384, 1.0, 1.0])
            nib.save(nib.Nifti1Image(big, aff), str(d / f"{kind}_{sid}.nii.gz"))
    cfg = ExperimentConfig.load(smoke_run / "config.json")
    cfg.data.dataset = str(d)
    cfg.data.test_group = ("right_kidney", "liver")
    model, _ = load_model(cfg, smoke_run / "checkpoints" / "last.pt", torch.device("cpu"))
    m = evaluate_model(model, cfg, "cpu", out_dir=tmp_path / "ev", progress=False, save_predictions=True)
    checked = 0
    for organ, scans in m["per_scan"].items():
        for sid, row in scans.items():
            if row.get("absent"):
                continue
            pred = np.asarray(nib.load(str(tmp_path / "ev" / "predictions" / f"{sid}_{organ}.nii.gz")).dataobj)
            lab = np.asarray(nib.load(str(d / f"label_{sid}.nii.gz")).dataobj)
            assert pred.shape == lab.shape == (384, 384, lab.shape[2])
            z0, z1 = row["z_range"]
            gt = lab[:, :, z0 : z1 + 1] == spec.labels[organ]
            assert row["tp"] + row["fn"] == int(gt.sum())  # every labelled voxel of the file is scored
            assert row["dice"] == pytest.approx(dice(pred[:, :, z0 : z1 + 1], gt), abs=1e-6)
            checked += 1
    assert checked >= 3


def test_segment_nonfinite_formats_and_recorded_intensities(smoke_run, tmp_path, capsys):
    """NaN in the query: one clear line (or replaced on request); a .mha query = the NIfTI query."""
    import SimpleITK as sitk
    import torch

    from crapnet_core.data.datasets import intensity_profile
    from crapnet_core.data.protocol import make_fold
    from crapnet_core.engine.experiment import ExperimentConfig

    spec = D.resolve_dataset("phantom")
    ids = D.scan_ids(spec)
    sup, qry = ids[4], ids[0]
    img = nib.load(str(D.image_path(spec, qry)))
    arr = np.asarray(img.dataobj).astype(np.float32)
    base = [
        "segment",
        "--run",
        str(smoke_run),
        "--support-image",
        str(D.image_path(spec, sup)),
        "--support-label",
        str(D.label_path(spec, sup)),
        "--support-organ-label",
        "1",
    ]

    def seg(query, out, *extra):
        rc = main([*base, "--query-image", str(query), "--out", str(out), *extra])
        return rc, capsys.readouterr()

    ref_out = tmp_path / "ref.nii.gz"
    assert seg(D.image_path(spec, qry), ref_out)[0] == 0
    ref = np.asarray(nib.load(str(ref_out)).dataobj)
    # one NaN voxel: refused, naming the file and the count; nothing written
    bad = arr.copy()
    bad[3, 3, 2] = np.nan
    nib.save(nib.Nifti1Image(bad, img.affine), str(tmp_path / "nan.nii.gz"))
    rc, cap = seg(tmp_path / "nan.nii.gz", tmp_path / "o1.nii.gz")
    assert rc == 2 and "nan.nii.gz: 1 NaN/infinite voxel(s) in the image" in cap.err
    assert "--replace-nonfinite" in cap.err and not (tmp_path / "o1.nii.gz").exists()
    # with the option: the voxel becomes the scan's lowest value -> same as segmenting that scan
    low = arr.copy()
    low[3, 3, 2] = arr.min()
    nib.save(nib.Nifti1Image(low, img.affine), str(tmp_path / "low.nii.gz"))
    assert seg(tmp_path / "low.nii.gz", tmp_path / "o2.nii.gz")[0] == 0
    with pytest.warns(UserWarning, match="replaced 1 NaN/infinite"):
        rc, _ = seg(tmp_path / "nan.nii.gz", tmp_path / "o3.nii.gz", "--replace-nonfinite")
    assert rc == 0
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(tmp_path / "o3.nii.gz")).dataobj),
        np.asarray(nib.load(str(tmp_path / "o2.nii.gz")).dataobj),
    )
    # a MetaImage query with the same geometry gives the same mask (written as NIfTI with its affine)
    sitk_img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    sitk_img.SetSpacing(sp.tolist())
    sitk_img.SetDirection((lps[:3, :3] / sp).ravel().tolist())
    sitk_img.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(sitk_img, str(tmp_path / "q.mha"))
    assert seg(tmp_path / "q.mha", tmp_path / "o4.nii.gz")[0] == 0
    out4 = nib.load(str(tmp_path / "o4.nii.gz"))
    np.testing.assert_array_equal(np.asarray(out4.dataobj), ref)
    np.testing.assert_allclose(out4.affine, img.affine, atol=1e-4)
    # the run records its training data's intensity profile
    cfg = ExperimentConfig.load(smoke_run / "config.json")
    state = torch.load(smoke_run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    fold = make_fold(ids, cfg.data.fold, cfg.data.n_folds)
    assert state["intensity_profile"] == intensity_profile(spec, fold.train_ids)
    assert state["intensity_profile"]["max"] > 100 and state["intensity_profile"]["convention"] == "other"

"""The 1-shot protocol (support slices, chunks), metrics, and evaluation on hand-made volumes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from crapnet_core.engine.evaluation import evaluate_model
from crapnet_core.engine.experiment import make_config
from crapnet_core.engine.metrics import confusion_counts, dice, dice_from_counts, surface_distances
from crapnet_core.engine.prediction import chunk_assignment, chunk_index, support_positions, support_slices


# ---------------------------------------------------------------- protocol rules
def test_support_positions_follow_floor_fp_n():
    # f_p = 1/6, 1/2, 5/6: floor(f_p * n)
    assert support_positions(6) == [1, 3, 5]
    assert support_positions(12) == [2, 6, 10]
    assert support_positions(7) == [1, 3, 5]  # 7/6=1.17, 3.5, 5.83
    assert support_positions(1) == [0, 0, 0]
    assert support_positions(5, n_parts=1) == [2]
    for n in range(1, 60):
        assert support_positions(n) == [math.floor(f * n + 1e-12) for f in (1 / 6, 1 / 2, 5 / 6)]
    with pytest.raises(ValueError, match="no slice"):
        support_positions(0)


def test_support_slices_on_a_constructed_support_scan():
    # the support scan holds the organ on slices 10..21 (n = 12) -> positions 2, 6, 10
    assert support_slices(list(range(21, 9, -1))) == [12, 16, 20]
    # gaps in the list are kept: indices are into the sorted list, not the range
    assert support_slices([3, 4, 9, 10, 11, 30]) == [4, 10, 30]


def test_chunk_assignment_splits_the_range_in_three_equal_chunks():
    # organ range 10..19 (10 slices, span 9): chunk width 3 -> 10,11,12 | 13,14,15 | 16..19
    got = dict(chunk_assignment(10, 19))
    assert [got[z] for z in range(10, 20)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    # span 10 (11 slices): width 10/3 -> z-10 in [0, 3.33) chunk 0, [3.33, 6.67) chunk 1, rest 2
    got = dict(chunk_assignment(0, 10))
    assert [got[z] for z in range(11)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    # same as SSL-ALPNet's float formula int((z - z_min) // ((z_max - z_min) / 3)) clipped to 0..2
    for z_min, z_max in [(0, 1), (3, 7), (5, 22), (2, 40)]:
        for z in range(z_min, z_max + 1):
            ref = min(max(int((z - z_min) // ((z_max - z_min) / 3)), 0), 2)
            assert chunk_index(z, z_min, z_max) == ref
    assert chunk_assignment(4, 4) == [(4, 0)]  # one slice: chunk 0
    with pytest.raises(ValueError):
        chunk_index(3, 5, 4)


# ---------------------------------------------------------------- metrics
def test_dice_from_counts():
    assert dice_from_counts(10, 5, 5) == pytest.approx(20 / 30)
    assert dice_from_counts(0, 0, 0) == 1.0
    assert dice_from_counts(0, 3, 0) == 0.0
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[0, :] = True  # 4 px
    b[0, :2] = True
    b[1, :2] = True  # 4 px, 2 overlap
    c = confusion_counts(a, b)
    assert (c.tp, c.fp, c.fn) == (2, 2, 2)
    assert dice(a, b) == pytest.approx(0.5)


def test_hd95_and_asd_known_cases():
    # two single voxels 4 voxels apart along axis 0, spacing 2.5 mm: both distances = 10 mm
    a = np.zeros((12, 5, 5), bool)
    b = a.copy()
    a[2, 2, 2] = True
    b[6, 2, 2] = True
    d = surface_distances(a, b, spacing=(2.5, 1.0, 1.0))
    assert d["hd95"] == pytest.approx(10.0)
    assert d["asd"] == pytest.approx(10.0)
    # a 5x5 square and the same square shifted by 3 pixels along axis 0, spacing (2, 0.5):
    # every surface point is within 3 px (6 mm) and 5 of the 16 points of each contour are at exactly 3 px,
    # so the 95th percentile is 6 mm
    sq = np.zeros((20, 20), bool)
    sq[5:10, 5:10] = True
    shifted = np.roll(sq, 3, axis=0)
    assert surface_distances(sq, shifted, spacing=(2.0, 0.5))["hd95"] == pytest.approx(6.0)
    assert surface_distances(sq, sq, spacing=(2.0, 0.5)) == {"hd95": 0.0, "asd": 0.0}
    # empty prediction: undefined -> nan (the evaluation records null and counts it)
    empty = np.zeros_like(sq)
    d = surface_distances(empty, sq)
    assert math.isnan(d["hd95"]) and math.isnan(d["asd"])


# ---------------------------------------------------------------- evaluation on hand-made volumes
class ThresholdModel(torch.nn.Module):
    """Predicts 'foreground where the query intensity is above 0' and records the supports it saw."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.support_areas: list[int] = []

    def predict(self, support_image, support_mask, query_image):
        assert support_image.shape[0] == 1 and support_mask.shape[0] == 1
        self.support_areas.append(int(support_mask.sum()))
        return (query_image[:, 0] > 0).float()


def _write_dataset(root):
    """6 MR scans 256x256x8; liver (1) is a 40x40 square on slices 2..5; spleen (4) only in scan 1.

    The image is bright on a square shifted by 10 columns, on slices 1..6: a model predicting
    'bright' has per scored slice TP = 40*30, FP = FN = 40*10, so Dice = 2400 / 3200 = 0.75,
    and the bright slices 1 and 6 are outside the liver range (not scored).
    The support scan (id 2 for fold 0) holds the liver on slices 1..6 with area 100*z.
    """
    import nibabel as nib

    root.mkdir()
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    for sid in range(1, 7):
        img = np.zeros((256, 256, 8), np.float32)
        lab = np.zeros((256, 256, 8), np.float32)
        img[100:140, 110:150, 1:7] = 100.0
        lab[100:140, 100:140, 2:6] = 1
        if sid == 2:
            lab[:] = 0
            for z in range(1, 7):
                lab[10:20, 10 : 10 + 10 * z, z] = 1  # area 100 * z
        if sid == 1:
            lab[200:210, 200:210, 3] = 4
        nib.save(nib.Nifti1Image(img, affine), str(root / f"image_{sid}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(root / f"label_{sid}.nii.gz"))
    (root / "labels.json").write_text(json.dumps({"modality": "MR", "labels": {"liver": 1, "spleen": 4}}))


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand") / "handmade"
    _write_dataset(root)
    return root


def test_evaluation_gives_hand_computed_dice(handmade, tmp_path):
    import nibabel as nib

    cfg = make_config(
        "smoke", str(handmade), 1, 0, "panet", ["data.test_group=liver", "data.input_size=128", "eval.batch_size=3"]
    )
    model = ThresholdModel()
    m = evaluate_model(model, cfg, device="cpu", out_dir=tmp_path, progress=False)
    assert m["test_scans"] == ["1"]
    assert m["support"]["scan_id"] == "2"
    # support slices 1..6 (n = 6): positions 1, 3, 5 -> z = 2, 4, 6
    assert m["support"]["slices"]["liver"] == [2, 4, 6]
    row = m["per_scan"]["liver"]["1"]
    assert (row["tp"], row["fp"], row["fn"]) == (4 * 1200, 4 * 400, 4 * 400)
    assert row["dice"] == pytest.approx(0.75)
    assert row["z_range"] == [2, 5]
    # range 2..5 (span 3): chunks z=2 -> 0, 3 -> 1, 4 -> 2, 5 -> 2 ; support areas (1/4 at 128 px) 100*z/4
    assert row["chunks"] == [1, 1, 2]
    assert sorted(set(model.support_areas)) == [50, 100, 150]
    assert m["per_organ"]["liver"]["dice_mean"] == pytest.approx(0.75)
    assert m["mean"]["dice"] == pytest.approx(0.75)
    assert row["hd95"] > 0 and row["asd"] > 0
    # the saved prediction: file shape + affine, organ only on the scored slices, Dice recomputable
    pred_img = nib.load(str(tmp_path / "predictions" / "1_liver.nii.gz"))
    assert pred_img.shape == (256, 256, 8)
    assert np.allclose(pred_img.affine, np.diag([2.0, 2.0, 5.0, 1.0]))
    pred = np.asarray(pred_img.dataobj)
    assert pred[:, :, [0, 1, 6, 7]].sum() == 0
    gt = np.asarray(nib.load(str(handmade / "label_1.nii.gz")).dataobj) == 1
    assert dice(pred > 0, gt) == pytest.approx(0.75)


def test_empty_prediction_and_absent_organ(handmade, tmp_path):
    class Empty(ThresholdModel):
        def predict(self, support_image, support_mask, query_image):
            return torch.zeros(query_image.shape[0], *query_image.shape[-2:])

    cfg = make_config("smoke", str(handmade), 1, 1, "panet", ["data.test_group=liver", "eval.save_predictions=false"])
    m = evaluate_model(Empty(), cfg, device="cpu", out_dir=tmp_path, progress=False)
    assert m["test_scans"] == ["2"]
    row = m["per_scan"]["liver"]["2"]
    assert row["dice"] == 0.0 and row["hd95"] is None and row["empty_prediction"]
    assert m["per_organ"]["liver"]["n_empty_pred"] == 1 and m["per_organ"]["liver"]["hd95_mean"] is None
    assert not (tmp_path / "predictions").exists()
    json.dumps(m)  # JSON-safe (no nan)
    # fold 4: test scans 5, 6, support scan 1 (holds the spleen); the spleen is absent from 5 and 6
    cfg = make_config("smoke", str(handmade), 1, 4, "panet", ["data.test_group=liver,spleen", "data.input_size=128"])
    with pytest.warns(UserWarning, match="absent"):
        m = evaluate_model(ThresholdModel(), cfg, device="cpu", out_dir=tmp_path, progress=False)
    assert m["per_scan"]["spleen"] == {"5": {"absent": True}, "6": {"absent": True}}
    assert m["per_organ"]["spleen"]["n_absent"] == 2 and m["per_organ"]["spleen"]["dice_mean"] is None
    assert m["mean"]["dice"] == pytest.approx(0.75)  # the liver only


def test_evaluation_errors(handmade, tmp_path):
    from crapnet_core.data.datasets import DatasetError

    # the dataset does not label the kidneys
    cfg = make_config("smoke", str(handmade), 1, 0, "panet", ["data.test_group=left_kidney"])
    with pytest.raises(DatasetError, match="left_kidney"):
        evaluate_model(ThresholdModel(), cfg, device="cpu", progress=False)
    # spleen is labelled but absent from the support scan of fold 0 (scan 2)
    cfg = make_config("smoke", str(handmade), 1, 0, "panet", ["data.test_group=spleen"])
    with pytest.raises(DatasetError, match="absent from the support scan"):
        evaluate_model(ThresholdModel(), cfg, device="cpu", progress=False)

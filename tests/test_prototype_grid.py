"""Prototype geometry rule (crapnet_core.models.prototype_grid), its config check, the test-time argmax of
upsampled logits and the largest-connected-component row (issue 8 sections 1 and 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crapnet_core.engine.experiment import apply_overrides, make_config
from crapnet_core.engine.metrics import largest_component
from crapnet_core.models.config import ModelConfig
from crapnet_core.models.prototype_grid import (
    PAPER_CELL_PX,
    TOLERANCE,
    cell_px,
    cell_ratio,
    check_geometry,
    geometry_markdown,
    geometry_rows,
    prototype_geometry,
)


# ---------------------------------------------------------------- the rule
def test_rule_gives_paper_values_at_256_and_keeps_cells_at_reduced_sizes():
    g = prototype_geometry(256)
    assert (g.carafe_factor, g.alpnet_pool_train, g.alpnet_pool_test) == (4, 4, 2)  # Sec. 4.3 / SSL-ALPNet
    g = prototype_geometry(128)
    assert (g.carafe_factor, g.alpnet_pool_train, g.alpnet_pool_test) == (2, 2, 1)  # exact paper cells
    g = prototype_geometry(96)
    assert (g.carafe_factor, g.alpnet_pool_train, g.alpnet_pool_test) == (2, 2, 1)
    # 96 px, sigma 2: 16 input px = 42.7 px of the 256 slice = 53.3 mm on CHAOS, 1.33 x the paper's 40 mm
    assert cell_px(2, 96) == pytest.approx(256 / 6)
    assert cell_ratio("carafe", 2, 96) == pytest.approx(4 / 3)
    for size in (96, 112, 128, 160, 192, 256, 320):
        g = prototype_geometry(size)
        for kind, cells in (
            ("carafe", g.carafe_factor),
            ("avgpool_train", g.alpnet_pool_train),
            ("avgpool_test", g.alpnet_pool_test),
        ):
            assert 1 / TOLERANCE <= cell_ratio(kind, cells, size) <= TOLERANCE, (size, kind, cells)
    with pytest.raises(ValueError, match="multiple of the encoder stride"):
        prototype_geometry(100)


def test_rows_report_grid_px_and_mm():
    rows = {(r["field"]): r for r in geometry_rows(96)}
    r = rows["carafe_factor"]
    assert r["grid"] == 6 and r["cell_px_input"] == 16 and r["features"] == 12
    assert r["mm"]["CHAOS"][0] == pytest.approx(256 / 6 * 1.25)  # 53.3 mm
    assert rows["alpnet_pool_test"]["grid"] == 12 and rows["alpnet_pool_test"]["within"]
    # the old lite geometry (sigma 4 at 96 px): a 3 x 3 grid of 107-mm cells, outside the factor
    from crapnet_core.models.prototype_grid import PrototypeGeometry

    old = {r["field"]: r for r in geometry_rows(96, PrototypeGeometry(4, 4, 2))}
    assert old["carafe_factor"]["grid"] == 3 and not old["carafe_factor"]["within"]
    assert old["carafe_factor"]["mm"]["CHAOS"][0] == pytest.approx(106.67, abs=0.01)
    table = geometry_markdown([96])
    assert table.count("\n") == 4 and "6 x 6" in table and "12 x 12" in table
    assert PAPER_CELL_PX == {"carafe": 32, "avgpool_train": 32, "avgpool_test": 16}


# ---------------------------------------------------------------- applied to the profiles
def test_profiles_follow_the_rule_and_input_size_overrides_move_the_grid():
    lite = make_config("lite", "chaos", 1, 0, "crapnet")
    assert (lite.model.carafe_factor, lite.model.alpnet_pool_train, lite.model.alpnet_pool_test) == (2, 2, 1)
    paper = make_config("paper", "chaos", 1, 0, "alpnet")
    assert (paper.model.carafe_factor, paper.model.alpnet_pool_train, paper.model.alpnet_pool_test) == (4, 4, 2)
    c128 = make_config("lite", "chaos", 1, 0, "alpnet", ["data.input_size=128"])
    assert (c128.model.alpnet_pool_train, c128.model.alpnet_pool_test) == (2, 1)
    c256 = make_config("lite", "chaos", 1, 0, "crapnet", ["data.input_size=256"])
    assert c256.model.carafe_factor == 4
    smoke = make_config("smoke", "phantom", 1, 0, "alpnet")
    assert smoke.model.free_geometry and smoke.model.alpnet_pool_test == 1


def test_explicit_values_outside_the_factor_are_refused_unless_free_geometry():
    # at 96 px (the version-1 lite input), where sigma 4 gives the old 3 x 3 grid
    with pytest.raises(ValueError, match=r"model.carafe_factor=4 at data.input_size=96.*2.67 x.*free_geometry"):
        make_config("lite", "chaos", 1, 0, "crapnet", ["data.input_size=96", "model.carafe_factor=4"])
    with pytest.raises(ValueError, match="model.alpnet_pool_test=2"):
        make_config("lite", "chaos", 1, 0, "alpnet", ["data.input_size=96", "model.alpnet_pool_test=2"])
    # an explicit value wins over the rule when it is within the factor (1 at 96 px: x0.67)
    assert (
        make_config(
            "lite", "chaos", 1, 0, "crapnet", ["data.input_size=96", "model.carafe_factor=1"]
        ).model.carafe_factor
        == 1
    )
    # only the grids the method uses are checked: panet has none, alpnet ignores sigma
    assert (
        make_config("lite", "chaos", 1, 0, "panet", ["data.input_size=96", "model.carafe_factor=4"]).model.carafe_factor
        == 4
    )
    assert (
        make_config(
            "lite", "chaos", 1, 0, "alpnet", ["data.input_size=96", "model.carafe_factor=4"]
        ).model.carafe_factor
        == 4
    )
    # the variant with CARAFE++ prototypes is checked on sigma
    with pytest.raises(ValueError, match="carafe_factor"):
        make_config(
            "lite", "chaos", 1, 0, "alpnet", ["data.input_size=96", "model.prototypes=carafe", "model.carafe_factor=4"]
        )
    free = make_config(
        "lite", "chaos", 1, 0, "crapnet", ["data.input_size=96", "model.carafe_factor=4", "model.free_geometry=true"]
    )
    assert free.model.carafe_factor == 4
    # free_geometry does not change what is computed: not in the hash
    a = make_config("lite", "chaos", 1, 0, "crapnet")
    assert apply_overrides(a, ["model.free_geometry=true"]).config_hash() == a.config_hash()
    # the smoke profile at 64 px without the flag: ALPNet's test cell is 2x the paper's
    with pytest.raises(ValueError, match=r"alpnet_pool_test=1 .* 2.00 x"):
        make_config("smoke", "phantom", 1, 0, "alpnet", ["model.free_geometry=false"])


def test_check_geometry_on_a_bare_config():
    cfg = make_config("paper", "chaos", 1, 0, "crapnet")
    check_geometry(cfg)
    cfg.data.input_size = 96  # edited by hand, bypassing make_config
    with pytest.raises(ValueError, match="carafe_factor=4"):
        check_geometry(cfg)


# ---------------------------------------------------------------- test-time rule: argmax of upsampled logits
def _fixed_score_model(scores: torch.Tensor):
    from crapnet_core.models.base import SegmenterOutput
    from crapnet_core.models.segmenter import FewShotSegmenter

    model = FewShotSegmenter(ModelConfig(method="panet", encoder="resnet18_l2", feature_dim=16))

    def forward(support_image, support_mask, query_image):
        b = query_image.shape[0]
        s = scores.expand(b, *scores.shape[1:])
        logits = F.interpolate(s, size=query_image.shape[-2:], mode="bilinear", align_corners=False)
        return SegmenterOutput(logits, s, s, s, support_mask)

    model.forward = forward
    return model


def test_predict_chunks_takes_the_argmax_of_logits_upsampled_to_the_label_grid():
    from crapnet_core.engine.prediction import predict_chunks

    # feature grid 1 x 2: foreground-minus-background logit +20 (left) and -1 (right), input
    # 8 px, label grid 32 px. One bilinear step of the logits to 32 columns gives 23 foreground
    # columns; the former rule (logits to 8 px, softmax, probabilities to 32 px, > 0.5) gave 24.
    scores = torch.tensor([[[[0.0, 0.0]], [[20.0, -1.0]]]])
    model = _fixed_score_model(scores)
    img = torch.zeros(3, 3, 8, 8)
    masks = torch.zeros(3, 8, 8)
    volume = np.zeros((32, 32, 2), np.float32)
    out = predict_chunks(model, img, masks, volume, [(0, 0), (1, 0)], size=8, batch_size=2)
    expected = (F.interpolate(scores, size=(32, 32), mode="bilinear", align_corners=False).argmax(1) == 1)[0].numpy()
    assert np.array_equal(out[0], expected) and np.array_equal(out[1], expected)
    assert expected[0].tolist() == [True] * 23 + [False] * 9
    prob = torch.softmax(F.interpolate(scores, size=(8, 8), mode="bilinear", align_corners=False), 1)[:, 1:]
    old = F.interpolate(prob, size=(32, 32), mode="bilinear", align_corners=False)[0, 0] > 0.5
    assert int(old[0].sum()) == 24  # the two rules differ on this case
    # to a non-square label grid of another size: one bilinear step from the feature grid
    volume = np.zeros((5, 12, 1), np.float32)
    out = predict_chunks(model, img, masks, volume, [(0, 0)], size=8)
    assert out[0].shape == (5, 12)
    ref = F.interpolate(scores, size=(5, 12), mode="bilinear", align_corners=False).argmax(1)[0] == 1
    assert np.array_equal(out[0], ref.numpy())


def test_segmenter_predict_logits_matches_forward():
    from crapnet_core.models.segmenter import FewShotSegmenter

    torch.manual_seed(0)
    model = FewShotSegmenter(
        ModelConfig(
            method="crapnet", encoder="resnet18_l2", feature_dim=32, n_blocks=1, attention_dim=8, carafe_factor=1
        )
    )
    s = torch.randn(1, 3, 32, 32)
    m = (torch.rand(1, 32, 32) > 0.5).float()
    q = torch.randn(2, 3, 32, 32)
    model.train()
    logits = model.predict_logits(s, m, q, size=(40, 24))
    assert logits.shape == (2, 2, 40, 24) and model.training  # mode restored
    model.eval()
    with torch.no_grad():
        scores = model(s, m, q).scores
    assert torch.allclose(logits, F.interpolate(scores, size=(40, 24), mode="bilinear", align_corners=False))
    # at the input size the argmax equals the old probability rule (same single interpolation)
    p = model.predict(s, m, q)
    assert torch.equal(model.predict_logits(s, m, q).argmax(1) == 1, p > 0.5)


# ---------------------------------------------------------------- largest connected component
def test_largest_component_3d_full_connectivity():
    a = np.zeros((6, 6, 4), bool)
    a[0:2, 0:2, 0:2] = True  # 8 voxels
    a[4:6, 4:6, 3] = True  # 4 voxels, separate
    a[2, 2, 2] = True  # touches the first block only by a corner (26-connectivity joins it)
    out = largest_component(a)
    assert out.sum() == 9 and out[2, 2, 2] and not out[4:6, 4:6, 3].any()
    assert not largest_component(np.zeros((3, 3, 3), bool)).any()
    single = np.zeros((3, 3, 3), bool)
    single[1, 1, 1] = True
    assert np.array_equal(largest_component(single), single)


def test_evaluation_reports_dice_lcc_separately(tmp_path):
    import json

    import nibabel as nib

    from crapnet_core.engine.evaluation import evaluate_model
    from crapnet_core.engine.runs import summarize_runs, summary_markdown

    root = tmp_path / "ds"
    root.mkdir()
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    for sid in range(1, 7):
        img = np.zeros((256, 256, 6), np.float32)
        lab = np.zeros((256, 256, 6), np.float32)
        lab[96:128, 96:128, 1:5] = 1  # organ: 32 x 32 x 4 = 4096 voxels
        img[96:128, 96:128, 1:5] = 100.0  # the model finds the organ ...
        img[200:210, 200:210, 2] = 100.0  # ... and a separate 100-voxel false positive
        nib.save(nib.Nifti1Image(img, affine), str(root / f"image_{sid}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(root / f"label_{sid}.nii.gz"))
    (root / "labels.json").write_text(json.dumps({"modality": "MR", "labels": {"liver": 1}}))

    class Bright(torch.nn.Module):
        def predict(self, support_image, support_mask, query_image):
            return (query_image[:, 0] > 0).float()

    cfg = make_config(
        "smoke",
        str(root),
        1,
        0,
        "panet",
        ["data.test_group=liver", "data.input_size=256", "eval.save_predictions=false"],
    )
    m = evaluate_model(Bright(), cfg, device="cpu", out_dir=tmp_path, progress=False)
    row = m["per_scan"]["liver"]["1"]
    assert row["dice"] == pytest.approx(2 * 4096 / (2 * 4096 + 100))
    assert row["dice_lcc"] == pytest.approx(1.0)
    assert m["per_organ"]["liver"]["dice_lcc_mean"] == pytest.approx(1.0)
    assert m["mean"]["dice_lcc"] == pytest.approx(1.0) and m["mean"]["dice"] < 1.0
    run = tmp_path / "run"
    run.mkdir()
    m["seconds"] = 1.0
    (run / "metrics.json").write_text(json.dumps(m))
    summary = summarize_runs([run], dataset="x", setting=1, method="panet", profile="smoke")
    assert summary["mean"]["dice_lcc"]["mean"] == pytest.approx(1.0)
    assert summary["mean"]["dice"]["mean"] == pytest.approx(m["mean"]["dice"])
    md = summary_markdown(summary)
    assert "largest connected component | 100.00" in md

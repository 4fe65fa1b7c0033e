"""k-shot segmentation and the support-choice sensitivity (issue 22), on constructed cases.

- pooled prototypes: the mean of the per-shot prototypes (PANet's rule, SSL-PANet and the global
  fallbacks), every shot's local prototypes (SSL-ALPNet's rule);
- k identical shots give the 1-shot answer (every method of the registry), one shot in the k-shot
  layout gives it bit for bit;
- a query never serves as its own support, and no training scan ever does;
- on the phantom (smoke profile): ``--supports all`` / ``--shots`` leave ``metrics.json`` alone, the
  fold-support column and k = 1 reproduce it exactly, and the result files reach the results layout.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crapnet_core.cli import main
from crapnet_core.data.protocol import make_fold
from crapnet_core.engine import support as sup
from crapnet_core.engine.experiment import make_config
from crapnet_core.facts import METHODS
from crapnet_core.models.methods import get_method, is_registered
from crapnet_core.models.prototypes import PrototypeClassifier, masked_average
from crapnet_core.models.segmenter import FewShotSegmenter, attend_shots

CHAOS_IDS = [1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39]


def _shots(b=2, k=3, c=8, h=8, w=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, k, c, h, w, generator=g)
    fg = torch.zeros(b, k, size, size)
    for i in range(b):
        for j in range(k):  # a different rectangle per shot, large enough for local prototypes
            y, x = 4 + 2 * j + i, 3 + 3 * j
            fg[i, j, y : y + 14, x : x + 16] = 1.0
    return feats, fg, 1.0 - fg


# ---------------------------------------------------------------------- pooled prototypes
def test_pooled_global_prototypes_are_the_mean_of_the_per_shot_prototypes():
    feats, fg, bg = _shots()
    clf = PrototypeClassifier(kind="global", channels=8)
    fg_p, fg_ok, bg_p, bg_ok = clf.prototypes_shots(feats, fg, bg)
    per_shot_fg = torch.stack([clf.prototypes(feats[:, j], fg[:, j], bg[:, j])[0][:, 0] for j in range(3)], dim=1)
    per_shot_bg = torch.stack([clf.prototypes(feats[:, j], fg[:, j], bg[:, j])[2][:, 0] for j in range(3)], dim=1)
    assert fg_p.shape == (2, 1, 8) and fg_ok.all() and bg_ok.all()
    torch.testing.assert_close(fg_p[:, 0], per_shot_fg.mean(dim=1))
    torch.testing.assert_close(bg_p[:, 0], per_shot_bg.mean(dim=1))
    # and by hand: Eq. 15 per shot, then the mean over shots (PANet's getPrototype)
    by_hand = sum(masked_average(feats[:, j], fg[:, j]) for j in range(3)) / 3
    torch.testing.assert_close(fg_p[:, 0], by_hand)


@pytest.mark.parametrize("kind", ["avgpool", "carafe"])
def test_local_prototypes_come_from_every_shot(kind):
    torch.manual_seed(0)
    feats, fg, bg = _shots()
    clf = PrototypeClassifier(kind=kind, channels=8, threshold=0.9, carafe_factor=2, pool_train=2, pool_test=2).eval()
    fg_p, fg_ok, bg_p, bg_ok = clf.prototypes_shots(feats, fg, bg)
    g = (8 // 2) ** 2
    per = [clf.prototypes(feats[:, j], fg[:, j], bg[:, j]) for j in range(3)]
    for j, (pf, okf, _pb, okb) in enumerate(per):
        torch.testing.assert_close(fg_p[:, j * g : (j + 1) * g], pf[:, :g])  # shot j's local prototypes
        assert torch.equal(fg_ok[:, j * g : (j + 1) * g], okf[:, :g])
        assert torch.equal(bg_ok[:, j * g : (j + 1) * g], okb[:, :g])
        torch.testing.assert_close(fg_p[:, 3 * g + j], pf[:, g])  # shot j's global foreground prototype
    assert fg_ok[:, : 3 * g].any(dim=1).all(), "the constructed masks must give local foreground prototypes"
    assert fg_ok[:, 3 * g : 3 * g + 3].all() and not fg_ok[:, -1].any()  # every shot's global one, not the mean
    # no local foreground prototype anywhere: the mean of the shots' global prototypes (SSL-ALPNet's mask mode)
    thin = torch.zeros_like(fg)
    thin[:, :, 10, 5:20] = 1.0
    fg_p, fg_ok, bg_p, bg_ok = clf.prototypes_shots(feats, thin, 1.0 - thin)
    assert not fg_ok[:, :-1].any() and fg_ok[:, -1].all()
    mean = torch.stack([clf.prototypes(feats[:, j], thin[:, j], 1 - thin[:, j])[0][:, g] for j in range(3)], 1).mean(1)
    torch.testing.assert_close(fg_p[:, -1], mean)
    # background fallback (no local background prototype in any shot): the mean of the shots' global ones
    full = torch.ones_like(fg)
    full[:, :, :4, :4] = 0.0
    fg_p, fg_ok, bg_p, bg_ok = clf.prototypes_shots(feats, full, 1.0 - full)
    assert not bg_ok[:, :-1].any() and bg_ok[:, -1].all()
    mean_bg = torch.stack([masked_average(feats[:, j], 1.0 - full[:, j]) for j in range(3)], 1).mean(1)
    torch.testing.assert_close(bg_p[:, -1], mean_bg)


# ---------------------------------------------------------------------- identical shots = 1 shot
def _model(method: str):
    cfg = make_config(
        "smoke", "phantom", 1, 0, method, test_group=("liver", "spleen") if method == "alpnet_sup" else None
    )
    torch.manual_seed(1)
    model = get_method(method).build_model(cfg.model) if is_registered(method) else FewShotSegmenter(cfg.model)
    attention = getattr(model, "attention", None)
    if attention is not None:  # W_z starts at zero (identity blocks): make the attention act
        for block in [*attention.support_blocks, *attention.query_blocks]:
            torch.nn.init.normal_(block.out.weight, std=0.5)
    return model.eval(), cfg.data.input_size


@pytest.mark.parametrize("method", METHODS)
def test_identical_shots_give_the_one_shot_answer(method):
    model, s = _model(method)
    g = torch.Generator().manual_seed(2)
    image = torch.randn(1, 3, s, s, generator=g)
    mask = torch.zeros(1, s, s, dtype=torch.long)
    mask[:, s // 4 : 3 * s // 4, s // 5 : 3 * s // 5] = 1
    query = torch.randn(2, 3, s, s, generator=g)
    one = model.predict_logits(image, mask, query)
    assert torch.equal(model.predict_logits(image[:, None], mask[:, None], query), one)  # K = 1: bit for bit
    many = model.predict_logits(image[:, None].expand(1, 3, 3, s, s), mask[:, None].expand(1, 3, s, s), query)
    torch.testing.assert_close(many, one, rtol=1e-4, atol=1e-4)
    other = torch.randn(1, 1, 3, s, s, generator=g)
    mixed = model.predict_logits(
        torch.cat([image[:, None], other], 1), torch.cat([mask[:, None], mask[:, None]], 1), query
    )
    assert not torch.allclose(mixed, one, atol=1e-3), "a second, different shot must change the answer"


def test_attention_over_identical_shots_equals_one_shot():
    model, s = _model("crapnet")
    x_s = torch.randn(2, 1, 64, 8, 8)
    x_q = torch.randn(2, 64, 8, 8)
    model.attention = type(model.attention)(64, 16, 3, 2).eval()
    for block in [*model.attention.support_blocks, *model.attention.query_blocks]:
        torch.nn.init.normal_(block.out.weight, std=0.5)
    with torch.no_grad():
        z_s1, z_q1 = model.attention(x_s[:, 0], x_q)
        z_s3, z_q3 = attend_shots(model.attention, x_s.expand(2, 3, 64, 8, 8), x_q)
    assert not torch.allclose(z_q1, x_q)  # the blocks act
    torch.testing.assert_close(z_q3, z_q1, rtol=1e-4, atol=1e-4)
    for j in range(3):
        torch.testing.assert_close(z_s3[:, j], z_s1, rtol=1e-4, atol=1e-4)


def test_bad_shot_tensors_are_refused():
    model, s = _model("alpnet")
    img = torch.randn(1, 2, 3, s, s)
    with pytest.raises(ValueError, match="support_mask"):
        model(img, torch.zeros(1, s, s), torch.randn(1, 3, s, s))
    with pytest.raises(ValueError, match="no shot"):
        model(img[:, :0], torch.zeros(1, 0, s, s), torch.randn(1, 3, s, s))


# ---------------------------------------------------------------------- the supports of a query
@pytest.mark.parametrize("fold_index", range(5))
def test_a_query_never_serves_as_its_own_support(fold_index):
    fold = make_fold(CHAOS_IDS, fold_index)
    for q in fold.test_ids:
        cands = sup.admissible_supports(fold, q)
        assert q not in cands
        assert cands[0] == fold.support_id and cands[1:] == [t for t in fold.test_ids if t != q]
        assert not set(cands) & set(fold.train_ids)
        for k in range(1, len(cands) + 1):
            chosen = sup.kshot_supports(cands, k, q)
            assert chosen == cands[:k] and q not in chosen
        with pytest.raises(ValueError, match="needs 5"):
            sup.kshot_supports(cands, 5, q)
        with pytest.raises(ValueError, match="own support"):
            sup.kshot_supports([q, *cands], 1, q)
    with pytest.raises(ValueError, match="not a query scan"):
        sup.admissible_supports(fold, fold.train_ids[0])


def test_parse_shots_and_spread():
    assert sup.parse_shots("all", 4) == [1, 2, 3, 4]
    assert sup.parse_shots("3,1", 4) == [1, 3]
    for bad in ("0", "5", "two", ""):
        with pytest.raises(ValueError, match="--shots"):
            sup.parse_shots(bad, 4)
    r = sup.query_spread({"8": 0.5, "2": 0.3, "3": 0.1}, "8")
    assert r["n"] == 3 and r["standard"] == 0.5 and r["range"] == pytest.approx(0.4)
    assert r["sd"] == pytest.approx(np.std([0.5, 0.3, 0.1], ddof=1), abs=1e-6)


# ---------------------------------------------------------------------- the protocol on the phantom
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("kshot") / "run"
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
                "--evaluate",
            ]
        )
        == 0
    )
    return run


def test_supports_and_shots_keep_the_standard_result(smoke_run, tmp_path, capsys):
    metrics_bytes = (smoke_run / "metrics.json").read_bytes()
    m = json.loads(metrics_bytes)
    assert main(["evaluate", str(smoke_run), "--supports", "all", "--shots", "all", "--no-progress"]) == 0
    assert (smoke_run / "metrics.json").read_bytes() == metrics_bytes  # left alone
    sens = json.loads((smoke_run / sup.SENSITIVITY_FILE).read_text())
    ks = json.loads((smoke_run / sup.KSHOT_FILE).read_text())
    std = m["support"]["scan_id"]
    assert sens["standard_support"] == std and sens["supports"][0] == std
    for organ in m["organs"]:
        for q in m["test_scans"]:
            row = sens["dice"][organ][q]
            assert q not in row, "a query served as its own support"
            assert set(row) == set(sens["supports"]) - {q}
            assert row[std] == m["per_scan"][organ][q]["dice"]  # the fold-support column = metrics.json
    k1 = ks["points"][0]
    assert k1["k"] == 1 and k1["per_scan"] == m["per_scan"] and k1["per_organ"] == m["per_organ"]
    assert k1["mean"] == m["mean"]  # k = 1 reproduces the standard protocol exactly
    top = ks["max_shots"]
    assert top == len(m["test_scans"]) and [p["k"] for p in ks["points"]] == list(range(1, top + 1))
    for p in ks["points"]:
        for rows in p["supports"].values():
            for q, ids in rows.items():
                assert q not in ids and ids[0] == std and len(ids) == p["k"]
    # a second call for one k keeps the other points
    assert main(["evaluate", str(smoke_run), "--shots", "1", "--no-progress"]) == 0
    again = json.loads((smoke_run / sup.KSHOT_FILE).read_text())
    assert [p["k"] for p in again["points"]] == [p["k"] for p in ks["points"]]
    capsys.readouterr()
    assert main(["evaluate", str(smoke_run), "--shots", str(top + 1), "--no-progress"]) == 2
    assert "--shots" in capsys.readouterr().err
    assert main(["evaluate", str(smoke_run), "--supports", "some", "--no-progress"]) == 2
    assert "--supports" in capsys.readouterr().err

    # the library function: the result files into the per-run results layout, and the page's reading of them
    from crapnet_core.engine.experiment import ExperimentConfig
    from crapnet_core.report import support as rs

    results = tmp_path / "results"
    assert main(["support-results", str(smoke_run), "--results-dir", str(results), "--no-progress"]) == 0
    cfg = ExperimentConfig.load(smoke_run / "config.json")
    folder = rs.result_folder(results, cfg)
    assert folder.parent.parent.name == "phantom_setting1_alpnet_smoke" and folder.name == cfg.run_name()
    assert folder.parent.parent.parent == results / rs.SUPPORT_DIR  # apart from the table's own run folders
    for name in ("config.json", "metrics.json", sup.SENSITIVITY_FILE, sup.KSHOT_FILE):
        assert (folder / name).is_file(), name
    copied = json.loads((folder / sup.SENSITIVITY_FILE).read_text())
    assert copied["dice"] == sens["dice"] and copied["provenance"]["machine"]
    loaded = rs.load_support_results(results, profile="smoke", datasets=["phantom"], methods=["alpnet"])
    assert list(loaded) == [("phantom", "alpnet")] and list(loaded[("phantom", "alpnet")]) == [0]
    frame = rs.kshot_frame(loaded)
    assert sorted(frame[frame.organ == "mean"].k) == list(range(1, top + 1))
    assert "not run yet" in rs.missing_md(loaded, datasets=["phantom"], methods=["alpnet"])
    # the same run paired with itself: no method difference, nothing to rank
    c = rs.support_vs_method(loaded, "phantom", "alpnet", "alpnet")
    assert c["all"]["standard"] == 0 and c["all"]["n_queries"] == len(m["test_scans"])


def test_segment_with_k_supports(smoke_run, tmp_path, capsys):
    import nibabel as nib

    from crapnet_core.data import datasets as ds

    spec = ds.resolve_dataset("phantom")
    m = json.loads((smoke_run / "metrics.json").read_text())
    s, q = m["support"]["scan_id"], m["test_scans"][0]
    pair = ["--support-image", str(ds.image_path(spec, s)), "--support-label", str(ds.label_path(spec, s))]
    base = [
        "segment",
        "--run",
        str(smoke_run),
        "--support-organ-label",
        str(spec.labels["liver"]),
        "--query-image",
        str(ds.image_path(spec, q)),
    ]
    assert main([*base, *pair, "--out", str(tmp_path / "one.nii.gz")]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main([*base, *pair, *pair, *pair, "--out", str(tmp_path / "three.nii.gz")]) == 0
    three = json.loads(capsys.readouterr().out)
    assert one["shots"] == 1 and three["shots"] == 3 and three["support_slices"] == [one["support_slices"]] * 3
    a = np.asarray(nib.load(str(tmp_path / "one.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "three.nii.gz")).dataobj)
    assert (a != b).mean() < 1e-4  # the same support three times: the 1-shot mask (up to float ties)
    other = m["test_scans"][1]
    two = [
        *pair,
        "--support-image",
        str(ds.image_path(spec, other)),
        "--support-label",
        str(ds.label_path(spec, other)),
    ]
    assert main([*base, *two, "--out", str(tmp_path / "two.nii.gz")]) == 0
    assert json.loads(capsys.readouterr().out)["shots"] == 2
    # one label map short; the query among the supports
    assert (
        main([*base, *pair, "--support-image", str(ds.image_path(spec, other)), "--out", str(tmp_path / "x.nii.gz")])
        == 2
    )
    assert "one label map per support image" in capsys.readouterr().err
    own = [*pair, "--support-image", str(ds.image_path(spec, q)), "--support-label", str(ds.label_path(spec, q))]
    assert main([*base, *own, "--out", str(tmp_path / "y.nii.gz")]) == 2
    assert "its own support" in capsys.readouterr().err


def _sens(dice_by_query: dict, fold: int = 0, standard: str = "8") -> dict:
    """A sensitivity dict for one organ from {query: {support: dice}} (what support_sensitivity writes)."""
    dice = {"liver": dice_by_query}
    per_query, per_fold = sup.sensitivity_stats(dice, ["liver"], standard)
    return {
        "dataset": "chaos",
        "setting": 1,
        "fold": fold,
        "organs": ["liver"],
        "query_scans": list(dice_by_query),
        "standard_support": standard,
        "dice": dice,
        "per_query": per_query,
        "per_fold": per_fold,
    }


def test_support_against_method_on_constructed_files(tmp_path):
    from crapnet_core.report import support as rs

    # method A beats B by 0.10 with the standard support of both queries; support "2" turns query 1 round
    a = _sens({"1": {"8": 0.60, "2": 0.40, "3": 0.50}, "2": {"8": 0.70, "1": 0.70, "3": 0.65}})
    b = _sens({"1": {"8": 0.50, "2": 0.55, "3": 0.45}, "2": {"8": 0.60, "1": 0.62, "3": 0.60}})
    assert a["per_query"]["liver"]["1"]["range"] == pytest.approx(0.2)
    assert a["per_fold"]["mean"]["worst"] == pytest.approx((0.40 + 0.65) / 2)
    c = rs.support_vs_method(
        {("chaos", "crapnet"): {0: {"sensitivity": a}}, ("chaos", "alpnet"): {0: {"sensitivity": b}}}, "chaos"
    )
    r = c["all"]
    assert r["n_queries"] == 2 and r["standard"] == pytest.approx(0.10)
    # worst: query 1 with support 2 (-0.15), query 2 with support 3 (+0.05); best: +0.10 and +0.10
    assert r["worst"] == pytest.approx((-0.15 + 0.05) / 2) and r["best"] == pytest.approx(0.10)
    assert r["survives"] is False  # one choice of supports reverses the ranking
    # 9 equally likely assignments; support 2 for query 1 (-0.15) makes the mean difference negative whatever
    # query 2 gets (+0.10, +0.08, +0.05): 6 of 9 keep the sign (random draws: within 0.01)
    assert r["share_same_sign"] == pytest.approx(6 / 9, abs=0.01)
    assert r["pairs_same_sign"] == pytest.approx(5 / 6)
    assert "| no |" in rs.support_vs_method_md({"chaos": c})
    assert c["all"]["fold_level"]["ci_low"] is None  # one fold: no fold-level interval (the study's statistics)
    three = {
        ("chaos", "crapnet"): {f: {"sensitivity": {**a, "fold": f}} for f in range(3)},
        ("chaos", "alpnet"): {f: {"sensitivity": {**b, "fold": f}} for f in range(3)},
    }
    fl = rs.support_vs_method(three, "chaos")["all"]["fold_level"]
    assert fl["n_folds"] == 3 and fl["n"] == 6 and fl["mean_diff"] == pytest.approx(0.10)
    assert fl["ci_low"] == pytest.approx(0.10) and fl["ci_high"] == pytest.approx(0.10)  # identical differences
    # queries or supports that differ between the two files: refused, one line naming the field
    other = _sens({"1": {"8": 0.6}, "3": {"8": 0.6}})
    with pytest.raises(ValueError, match="query_scans"):
        rs.support_vs_method(
            {("chaos", "crapnet"): {0: {"sensitivity": a}}, ("chaos", "alpnet"): {0: {"sensitivity": other}}}, "chaos"
        )


def test_the_page_says_not_run_yet_without_result_files(tmp_path):
    from crapnet_core.report import support as rs

    empty = rs.load_support_results(tmp_path)
    assert empty == {}
    text = rs.missing_md(empty)
    assert text.count("not run yet") == 4 and "CHAOS" in text and "SSL-ALPNet" in text
    assert rs.kshot_frame(empty).empty and rs.query_frame(empty).empty
    assert rs.support_vs_method(empty, "chaos") is None
    assert all(c.startswith("crapnet ") for c in rs.recipe_commands())


def test_an_interrupted_sensitivity_resumes(smoke_run, monkeypatch):
    from crapnet_core.engine.evaluation import FoldEvaluator

    full = (
        json.loads((smoke_run / sup.SENSITIVITY_FILE).read_text())
        if (smoke_run / sup.SENSITIVITY_FILE).is_file()
        else sup.evaluate_supports(smoke_run, progress=False)
    )
    first = full["supports"][0]
    partial = {k: full[k] for k in ("config_hash", "checkpoint", "step")}
    partial.update(
        supports_done=[first],
        support_slices={first: full["support_slices"][first]},
        dice={
            o: {q: {s: v for s, v in r.items() if s == first} for q, r in rows.items()}
            for o, rows in full["dice"].items()
        },
        hd95={
            o: {q: {s: v for s, v in r.items() if s == first} for q, r in rows.items()}
            for o, rows in full["hd95"].items()
        },
    )
    (smoke_run / "support_sensitivity.partial.json").write_text(json.dumps(partial))
    calls = []
    original = FoldEvaluator.score
    monkeypatch.setattr(FoldEvaluator, "score", lambda self, *a: calls.append(a[2][0].scan_id) or original(self, *a))
    again = sup.evaluate_supports(smoke_run, progress=False)
    assert first not in calls and calls, "the support done before the interruption was evaluated again"
    assert again["dice"] == full["dice"] and again["per_fold"] == full["per_fold"]
    assert not (smoke_run / "support_sensitivity.partial.json").exists()

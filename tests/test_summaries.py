"""Committed summaries: the decomposition variants never enter the Tables 1-2 analogues or the findings."""

from __future__ import annotations

import json

import pytest

from crapnet_core.report import findings, plots, tables


def _write(root, name, method, overrides=(), variant=None, mean=0.5):
    folder = root / name
    folder.mkdir(parents=True)
    dice = {"left_kidney": mean, "right_kidney": mean, "spleen": mean, "liver": mean, "mean": mean}
    s = {
        "dataset": "chaos",
        "setting": 1,
        "method": method,
        "profile": "lite",
        "folds": [0, 1],
        "overrides": list(overrides),
        "mean": {"dice": dice, "dice_std_over_folds": {"mean": 0.1}},
        "per_fold": {"0": {"dice": dice}, "1": {"dice": dice}},
    }
    if variant:
        s["variant"] = variant
    (folder / "summary.json").write_text(json.dumps(s))


def test_variants_are_recognised_and_left_out_by_default(tmp_path):
    _write(tmp_path, "chaos_setting1_alpnet_lite", "alpnet", mean=0.45)
    _write(
        tmp_path, "chaos_setting1_alpnet-attention_lite", "alpnet", ["train.threads=1", "model.attention=on"], mean=0.39
    )
    _write(tmp_path, "chaos_setting1_alpnet-carafe_lite", "alpnet", ["model.prototypes=carafe"], mean=0.49)
    _write(tmp_path, "chaos_setting1_crapnet-aligned_lite", "crapnet", variant="crapnet-aligned", mean=0.43)
    _write(tmp_path, "chaos_setting1_crapnet_lite", "crapnet", mean=0.44)
    # Tables 3-4 points: one written by code that stored the bare method as its variant
    _write(
        tmp_path, "chaos_setting1_crapnet-blocks7_lite", "crapnet", ["model.n_blocks=7"], variant="crapnet", mean=0.37
    )
    _write(
        tmp_path, "chaos_setting1_crapnet-onebranch_lite", "crapnet", ["train.threads=1", "model.branches=1"], mean=0.41
    )
    main = tables.load_summaries(tmp_path, profile="lite")
    assert sorted(s["variant"] for s in main) == ["alpnet", "crapnet"]
    every = tables.load_summaries(tmp_path, profile="lite", variants=True)
    assert sorted(s["variant"] for s in every) == [
        "alpnet",
        "alpnet-att",
        "alpnet-carafe",
        "crapnet",
        "crapnet-aligned",
        "crapnet-blocks7",
        "crapnet-onebranch",
    ]
    text = findings.findings_md(tmp_path, "results.md")
    # one number per method, std over the (equal) folds (the variants' 39.0 / 49.0 / 43.0 / 37.0 / 41.0 never
    # appear: an ablation point averaged into the CRAPNet row would be a wrong number), best first
    assert "33.8–35.8 Dice points below the paper's" in text  # 79.79 - 44.0, 78.84 - 45.0: the methods' rows only
    for value in ("39.0", "49.0", "43.0", "37.0", "41.0"):
        assert value not in text


def test_variant_names_mark_every_ablation_axis():
    from crapnet_core.models.config import ModelConfig

    assert ModelConfig(method="crapnet").variant_name() == "crapnet"
    assert ModelConfig(method="crapnet", n_blocks=7).variant_name() == "crapnet-blocks7"
    assert ModelConfig(method="crapnet", branches=1).variant_name() == "crapnet-onebranch"
    assert ModelConfig(method="alpnet", attention="on", n_blocks=1).variant_name() == "alpnet-att-blocks1"
    # without attention the block count changes nothing: not a variant
    assert ModelConfig(method="alpnet", n_blocks=7).variant_name() == "alpnet"
    assert tables.summary_variant({"method": "crapnet", "overrides": ["model.n_blocks=12"]}) == "crapnet-blocks12"
    assert tables.summary_variant({"method": "crapnet", "overrides": ["model.n_blocks=5"]}) == "crapnet"
    assert (
        tables.summary_variant({"method": "crapnet", "variant": "crapnet-aligned", "overrides": []})
        == "crapnet-aligned"
    )
    # values read back as `--set` parsed them (7.0 and 1e1 are integers there), never a crash
    assert tables.summary_variant({"method": "crapnet", "overrides": ["model.n_blocks=7.0"]}) == "crapnet-blocks7"
    assert tables.summary_variant({"method": "crapnet", "overrides": ["model.n_blocks=1e1"]}) == "crapnet-blocks10"
    assert (
        tables.summary_variant({"method": "crapnet", "variant": "crapnet", "overrides": ["model.n_blocks=x"]})
        == "crapnet"
    )
    # an axis the run's code did not name yet extends the stored variant
    old = {
        "method": "crapnet",
        "variant": "crapnet-aligned",
        "overrides": ["model.carafe_window=aligned", "model.n_blocks=7"],
    }
    assert tables.summary_variant(old) == "crapnet-aligned-blocks7"


def test_every_registry_method_sits_under_its_published_row_and_in_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    for method, mean in (
        ("crapnet", 0.40),
        ("alpnet_sup", 0.30),
        ("alpnet_init", 0.10),
        ("rpnet", 0.33),
        ("adnet", 0.35),
    ):
        _write(tmp_path, f"chaos_setting1_{method}_lite", method, mean=mean)
    ours = tables.summary_frame(tables.load_summaries(tmp_path, profile="lite")).assign(source="ours")
    table = tables.comparison_table(ours, 1, "chaos")
    rows = list(table.index)
    # the supervised ALPNet (ours) right under the paper's ALPNet row, SSL-RPNet likewise; ADNet (no paper row) last
    assert rows.index(("ALPNet", "ours")) == rows.index(("ALPNet", "published")) + 1
    assert rows.index(("SSL-RPNet", "ours")) == rows.index(("SSL-RPNet", "published")) + 1
    assert rows[-1] == ("ADNet", "ours") and table.loc[("ALPNet", "ours"), "Mean"] == 30.0
    fig = plots.comparison_figure(ours, fig=Figure())
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["ALPNet-init", "ALPNet", "SSL-PANet", "SSL-ALPNet", "SSL-RPNet", "CRAPNet", "ADNet"]


def test_one_seed_of_each_table_and_the_decomposition_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    _write(tmp_path, "chaos_setting1_alpnet_lite", "alpnet", mean=0.45)  # aggregate over seeds 0, 1
    _write(tmp_path / "chaos_setting1_alpnet_lite", "seed0", "alpnet", mean=0.47)
    _write(tmp_path / "chaos_setting1_alpnet_lite", "seed1", "alpnet", mean=0.43)
    _write(tmp_path, "chaos_setting1_alpnet-attention_lite", "alpnet", ["model.attention=on"], mean=0.39)  # one seed
    _write(tmp_path, "chaos_setting1_panet_lite", "panet", mean=0.41)
    _write(tmp_path / "chaos_setting1_panet_lite", "seed2", "panet", mean=0.40)  # no seed 0: left out
    seed0 = {s["variant"]: s for s in tables.load_summaries(tmp_path, "lite", variants=True, seed=0)}
    assert sorted(seed0) == ["alpnet", "alpnet-att"]
    assert seed0["alpnet"]["mean"]["dice"]["mean"] == 0.47
    fig = plots.decomposition_figure(list(seed0.values()), fig=Figure())
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["SSL-ALPNet", "SSL-ALPNet\n+ attention"]
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches if p.get_height() > 0)
    assert heights == [39.0, 47.0]  # bars: the mean over folds, 0-100
    with pytest.raises(ValueError, match="no decomposition summary"):
        plots.decomposition_figure(list(seed0.values()), setting=2)
    # the notebook draws the figure only when a component row exists for that dataset / setting
    assert plots.has_decomposition(list(seed0.values()))
    assert not plots.has_decomposition([seed0["alpnet"]])  # an end point alone: nothing to decompose
    assert not plots.has_decomposition(list(seed0.values()), setting=2)
    assert not plots.has_decomposition(list(seed0.values()), dataset="sabs")

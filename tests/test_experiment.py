"""ExperimentConfig: profiles, overrides, JSON round trip, stable hash."""

from __future__ import annotations

import json

import pytest

from crapnet_core.engine.experiment import (
    CPU_ENCODER,
    SETTING2_GROUPS,
    ExperimentConfig,
    apply_overrides,
    make_config,
    parse_group,
)


def test_paper_profile_matches_sec_4_3():
    cfg = make_config("paper", "chaos", 1, 0, "crapnet")
    assert cfg.model.encoder == "deeplabv3_resnet101"
    assert cfg.data.input_size == 256
    assert cfg.model.n_blocks == 5
    t = cfg.train
    assert (t.steps, t.lr, t.momentum, t.weight_decay, t.lr_step, t.lr_gamma, t.batch_size) == (
        100_000,
        1e-3,
        0.9,
        5e-4,
        1000,
        0.95,
        1,
    )


def test_cpu_encoder_exists():
    from crapnet_core.models.encoders import ENCODERS

    assert CPU_ENCODER in ENCODERS
    for profile in ("smoke", "lite"):
        assert make_config(profile).model.encoder in ENCODERS


def test_overrides_are_typed_and_validated():
    cfg = make_config(
        "smoke",
        overrides=["model.n_blocks=7", "train.steps=1e3", "data.augment=false", "train.lr=0.01", "model.branches=1"],
    )
    assert cfg.model.n_blocks == 7 and cfg.train.steps == 1000 and cfg.data.augment is False
    assert cfg.train.lr == 0.01 and cfg.model.branches == 1
    with pytest.raises(ValueError, match="n_blocks"):
        make_config("smoke", overrides=["model.n_blocks=16"])
    with pytest.raises(ValueError, match="no field 'nblocks'"):
        make_config("smoke", overrides=["model.nblocks=3"])
    with pytest.raises(ValueError, match="unknown section"):
        make_config("smoke", overrides=["optim.lr=3"])
    with pytest.raises(ValueError, match="not an integer"):
        make_config("smoke", overrides=["train.steps=many"])
    with pytest.raises(ValueError, match="section.field=value"):
        make_config("smoke", overrides=["steps"])
    with pytest.raises(ValueError, match="profile"):
        make_config("huge")


def test_fold_out_of_range_is_refused():
    with pytest.raises(ValueError, match="fold"):
        make_config("smoke", fold=5)


def test_setting2_groups():
    assert parse_group("kidneys", 2) == SETTING2_GROUPS[0]
    assert parse_group("spleen,liver", 2) == ("liver", "spleen")
    assert parse_group(1, 2) == SETTING2_GROUPS[1]
    cfg = make_config("smoke", setting=2, test_group="liver_spleen")
    assert cfg.data.exclude_organs == ("liver", "spleen")
    assert make_config("smoke", setting=1).data.exclude_organs == ()
    # any group of organs is a setting-2 group now (issue 9, item 7); the dataset's label map
    # is checked when the run starts (crapnet_core.engine.inputs)
    single = make_config("smoke", setting=2, test_group="liver")
    assert single.data.test_group == ("liver",) and single.data.exclude_organs == ("liver",)
    assert single.group_name() == "liver"
    with pytest.raises(ValueError, match="named twice"):
        make_config("smoke", setting=2, test_group="liver,liver")
    # changing the setting by override picks that setting's default group
    assert apply_overrides(make_config("smoke"), ["data.setting=2"]).data.test_group == SETTING2_GROUPS[0]


def test_json_round_trip_and_hash(tmp_path):
    cfg = make_config("lite", "chaos", 2, 3, "alpnet", ["model.n_blocks=3"], test_group="liver_spleen")
    path = cfg.save(tmp_path / "config.json")
    assert json.loads(path.read_text())["config_hash"] == cfg.config_hash()
    back = ExperimentConfig.load(path)
    assert back == cfg and back.config_hash() == cfg.config_hash()
    # runtime-only fields do not change the hash; result-changing fields do
    assert (
        apply_overrides(cfg, ["train.device=cuda", "train.num_workers=4", "eval.batch_size=2"]).config_hash()
        == cfg.config_hash()
    )
    assert apply_overrides(cfg, ["train.seed=1"]).config_hash() != cfg.config_hash()
    assert apply_overrides(cfg, ["model.n_blocks=4"]).config_hash() != cfg.config_hash()
    assert cfg.run_name().startswith("chaos_s2_liver_spleen_f3_alpnet_lite_")


def test_hash_is_stable_across_processes():
    # the hash is a function of the values only (sha256 of canonical JSON), not of Python's hash seed
    cfg = make_config("smoke", "phantom", 1, 0, "crapnet")
    assert cfg.config_hash() == make_config("smoke", "phantom", 1, 0, "crapnet").config_hash()
    assert len(cfg.config_hash()) == 12 and int(cfg.config_hash(), 16) >= 0


def test_load_rejects_unknown_fields(tmp_path):
    data = make_config("smoke").to_dict()
    data["model"]["bogus"] = 1
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="bogus"):
        ExperimentConfig.load(tmp_path / "c.json")


def test_hash_does_not_depend_on_the_process(tmp_path):
    import os
    import subprocess
    import sys

    code = (
        "from crapnet_core.engine.experiment import make_config; "
        "print(make_config('lite', 'chaos', 2, 1, 'alpnet', test_group='liver_spleen').config_hash())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == make_config("lite", "chaos", 2, 1, "alpnet", test_group="liver_spleen").config_hash()

"""train.compile: values, where `auto` compiles, the persistent compiler cache (runtime only)."""

from __future__ import annotations

import json

import pytest
import torch

from crapnet_core.engine.experiment import ExperimentConfig, TrainConfig, make_config
from crapnet_core.engine.training import AUTO_COMPILE_MIN_STEPS, compile_cache_dir, compile_wanted


def test_compile_values_and_old_configs(tmp_path):
    assert TrainConfig().compile == "auto"
    assert TrainConfig(compile=True).compile == "on" and TrainConfig(compile=False).compile == "off"
    assert make_config("lite", "phantom", 1, 0, "crapnet", ["train.compile=true"]).train.compile == "on"
    assert make_config("lite", "phantom", 1, 0, "crapnet", ["train.compile=OFF"]).train.compile == "off"
    with pytest.raises(ValueError, match="train.compile"):
        TrainConfig(compile="sometimes")
    cfg = make_config("lite", "chaos", 1, 0, "crapnet", ["train.threads=1"])
    data = cfg.to_dict()
    data["train"]["compile"] = False  # a config.json written before `auto` existed
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    old = ExperimentConfig.load(path)
    assert old.train.compile == "off" and old.config_hash() == cfg.config_hash() == "7804db2a7044"


def test_auto_compiles_only_long_runs():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    lite = make_config("lite", "phantom", 1, 0, "crapnet")
    paper = make_config("paper", "phantom", 1, 0, "crapnet")
    assert paper.train.steps >= AUTO_COMPILE_MIN_STEPS > lite.train.steps
    assert compile_wanted(paper, cuda) and compile_wanted(paper, cpu)
    assert not compile_wanted(lite, cuda) and not compile_wanted(lite, cpu)
    on = make_config("lite", "phantom", 1, 0, "crapnet", ["train.compile=on"])
    assert compile_wanted(on, cpu)
    off = make_config("paper", "phantom", 1, 0, "crapnet", ["train.compile=off"])
    assert not compile_wanted(off, cuda)


def test_compiler_cache_lives_in_crapnets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAPNET_CACHE", str(tmp_path))
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.setenv(name, "unset")  # recorded, so that teardown restores the variable's absence
        monkeypatch.delenv(name)
    root = compile_cache_dir()
    assert root == tmp_path / "torch_compile" and root.is_dir()
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(root / "triton")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's own setting wins
    compile_cache_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what importing torchvision leaves there
    compile_cache_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")


def test_auto_falls_back_to_eager_when_the_compiled_step_fails(tmp_path, monkeypatch, caplog):
    """Under ``auto`` a compiled first step that raises is redone eagerly and the run completes."""
    import logging

    from crapnet_core.engine import training

    def failing_compile(model, device=None, fallback=False):
        def broken(*args, **kwargs):
            raise RuntimeError("generated code failed")

        model._compiled_call_impl = broken
        return model

    monkeypatch.setattr(training, "AUTO_COMPILE_MIN_STEPS", 1)
    monkeypatch.setattr(training, "compile_model", failing_compile)
    cfg = make_config("smoke", "phantom", 1, 0, "crapnet", ["train.steps=2"])
    with caplog.at_level(logging.WARNING, logger="crapnet_core.engine.training"):
        training.train(cfg, tmp_path / "run", progress=False)
    assert training.is_trained(tmp_path / "run")
    assert "the compiled step failed (RuntimeError: generated code failed); training eagerly" in caplog.text
    on = make_config("smoke", "phantom", 1, 0, "crapnet", ["train.steps=2", "train.compile=on"])
    with pytest.raises(RuntimeError, match="generated code failed"):  # `on` asked for it: no silent fallback
        training.train(on, tmp_path / "run_on", progress=False)

"""Training loop: overfitting a fixed episode, exact resume, divergence, checkpoints, run folders."""

from __future__ import annotations

import csv

import pytest
import torch

from crapnet_core.engine.experiment import make_config
from crapnet_core.engine.training import (
    CheckpointMismatch,
    RunFolderError,
    TrainingDiverged,
    build_episodes,
    build_model,
    load_model,
    make_optimizer,
    read_checkpoint,
    train,
)


def _smoke(**over):
    extra = [f"{k.replace('__', '.')}={v}" for k, v in over.items()]
    return make_config("smoke", "phantom", 1, 0, "crapnet", ["train.device=cpu", *extra])


def test_overfit_a_fixed_episode():
    """A few SGD steps on one episode lower its loss (model + loss + optimiser are wired right)."""
    from crapnet_core.models.losses import episode_loss

    cfg = _smoke(train__lr=0.01)
    dataset, *_ = build_episodes(cfg)
    batch = torch.utils.data.default_collate([dataset[0]])
    model = build_model(cfg)
    model.train()
    opt, _ = make_optimizer(cfg, model)
    losses = []
    from crapnet_core.engine.training import cpu_threads

    with cpu_threads(cfg, torch.device("cpu")):
        losses = _overfit(model, batch, cfg, opt, episode_loss)
    assert losses[-1] < 0.7 * losses[0], losses


def _overfit(model, batch, cfg, opt, episode_loss):
    losses = []
    for _ in range(12):
        loss = episode_loss(model, batch, cfg.loss)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _params(path):
    return read_checkpoint(path)["model"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    cfg = _smoke(train__steps=5, train__checkpoint_every=2, train__keep_checkpoints=5)
    full = train(cfg, tmp_path / "full", progress=False)

    class Killed(Exception):
        pass

    def kill_at_3(step, _losses):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, tmp_path / "cut", progress=False, on_step=kill_at_3)
    assert read_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["step"] == 2
    assert not (tmp_path / "cut" / "TRAINED").exists()
    with pytest.raises(RunFolderError, match="--resume"):
        train(cfg, tmp_path / "cut", progress=False)
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows_a = list(csv.DictReader((tmp_path / "full" / "metrics.csv").open()))
    rows_b = list(csv.DictReader((tmp_path / "cut" / "metrics.csv").open()))
    assert [r["step"] for r in rows_b] == ["1", "2", "3", "4", "5"]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert float(rows_a[0]["lr"]) == cfg.train.lr
    # checkpoints: step files every 2 steps + the end, last.pt = the final one
    names = sorted(p.name for p in (tmp_path / "full" / "checkpoints").glob("*.pt"))
    assert names == ["last.pt", "step_2.pt", "step_4.pt", "step_5.pt"]
    state = read_checkpoint(full)
    assert state["step"] == 5 and state["config_hash"] == cfg.config_hash()
    assert {"optimizer", "scheduler", "rng"} <= set(state)


def test_nan_loss_stops_with_a_clear_message(tmp_path, monkeypatch, capsys):
    import crapnet_core.models.losses as losses

    real = losses.episode_loss
    calls = {"n": 0}

    def flaky(model, batch, cfg):
        out = real(model, batch, cfg)
        calls["n"] += 1
        if calls["n"] == 2:
            out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(losses, "episode_loss", flaky)
    cfg = _smoke(train__steps=4, train__checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 2 .*last good checkpoint"):
        train(cfg, tmp_path / "run", progress=False)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 1
    assert not (tmp_path / "run" / "TRAINED").exists()
    # the command exits non-zero with the message
    from crapnet_core.cli import main

    calls["n"] = 0
    rc = main(["train", "--profile", "smoke", "--steps", "3", "--out", str(tmp_path / "cli"), "--no-progress"])
    assert rc == 3
    assert "loss is nan at step 2" in capsys.readouterr().err


def test_checkpoint_must_match_the_model_config(tmp_path):
    cfg = _smoke(train__steps=1)
    ckpt = train(cfg, tmp_path / "run", progress=False)
    model, state = load_model(cfg, ckpt)
    assert state["step"] == 1
    other = _smoke(train__steps=1, model__n_blocks=2)
    with pytest.raises(CheckpointMismatch, match="n_blocks: checkpoint 1 vs config 2"):
        load_model(other, ckpt)
    # a checkpoint without a config (e.g. written by hand) is checked tensor by tensor
    raw = tmp_path / "raw.pt"
    torch.save({"model": build_model(other).state_dict()}, raw)
    with pytest.raises(CheckpointMismatch, match="does not match"):
        load_model(cfg, raw)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatch, match="unreadable"):
        load_model(cfg, tmp_path / "junk.pt")


def test_a_checkpoint_older_than_a_model_field_loads_with_its_default(tmp_path):
    """A checkpoint written before a model field existed (here ``attention_temperature``, added after
    the converged runs started) carries no value for it; it was trained with the field's default,
    so it loads under a config at that default and is refused under any other value."""
    cfg = _smoke(train__steps=1)
    train(cfg, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    state = read_checkpoint(ckpt)
    del state["config"]["model"]["attention_temperature"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    model, loaded = load_model(cfg, old)
    assert loaded["step"] == 1
    learned = _smoke(train__steps=1, model__attention_temperature="learned")
    with pytest.raises(CheckpointMismatch, match="attention_temperature: checkpoint 'fixed' vs config 'learned'"):
        load_model(learned, old)


def test_run_folder_rules(tmp_path):
    cfg = _smoke(train__steps=1)
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(RunFolderError, match="--force"):
        train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(RunFolderError, match="another config"):
        train(_smoke(train__steps=2), tmp_path / "run", progress=False)
    train(_smoke(train__steps=2), tmp_path / "run", progress=False, force=True)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a crapnet run folder"):
        train(cfg, tmp_path / "other", progress=False, force=True)
    assert (tmp_path / "other" / "notes.txt").exists()


def test_setting2_excludes_the_test_group_from_training():
    from crapnet_core.data import datasets as ds

    cfg = make_config("smoke", "phantom", 2, 0, "crapnet", test_group="liver_spleen")
    dataset, spec, fold, _ = build_episodes(cfg)
    for i in range(len(dataset)):
        ep = dataset[i]
        vol = ds.load_volume(spec, ep["scan_id"])
        assert ep["scan_id"] in fold.train_ids
        for organ in ("liver", "spleen"):
            assert ep["slice_index"] not in set(ds.organ_slices(vol, organ, spec, warn=False).tolist())

"""Issue 9, items 6-9: superpixel config, custom label maps and groups, validation before
writing, organ names in file names, file modes, relative paths, ``"background": 0``.

Datasets here are four phantom scans (symlinked, never copied) under a label map of the
test's choosing, so each test controls organ names and label ids.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from crapnet_core.cli import main
from crapnet_core.data import datasets as ds
from crapnet_core.engine.experiment import ExperimentConfig, SuperpixelConfig, make_config
from crapnet_core.io import write_json, write_text
from crapnet_core.paths import safe_name

#: 3 folds over 4 scans: fold 0 tests scan 1 with support scan 2 and trains on 3 and 4 (fast)
SMOKE = ["--profile", "smoke", "--steps", "1", "--no-progress", "--set", "data.n_folds=3"]


@pytest.fixture(scope="module")
def phantom_root() -> Path:
    return Path(ds.resolve_dataset("phantom").root)


def make_dataset(folder: Path, phantom_root: Path, labels: dict, n: int = 4, modality: str = "MR") -> Path:
    """Four phantom scans (ids 1..n, symlinks) with ``labels`` as their label map."""
    folder.mkdir(parents=True)
    for sid in range(1, n + 1):
        for kind in ("image", "label"):
            (folder / f"{kind}_{sid}.nii.gz").symlink_to(phantom_root / f"{kind}_{sid}.nii.gz")
    (folder / "labels.json").write_text(json.dumps({"modality": modality, "labels": labels}))
    return folder


#: the phantom's ids (CHAOS's) under names with spaces and a slash
ODD_NAMES = {"background": 0, "liver/bile": 1, "right kidney": 2, "left kidney": 3, "spleen": 4}


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory, phantom_root) -> Path:
    """One dataset for the tests that train (its superpixel cache is computed once)."""
    return make_dataset(tmp_path_factory.mktemp("shared") / "proj" / "odd", phantom_root, ODD_NAMES)


# ---------------------------------------------------------------------- item 9: names, modes, paths, background
def test_safe_name_never_makes_folders():
    assert safe_name("left kidney") == "left_kidney"
    assert safe_name("liver/bile") == "liver_bile"
    assert safe_name("../etc") == "_etc"
    assert safe_name("a\\b:c") == "a_b_c"
    assert safe_name("left_kidney") == "left_kidney"
    assert "/" not in safe_name("///") and safe_name("///") != ""


def test_background_zero_is_accepted_and_other_zero_is_not(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"modality": "MR", "labels": {"Background": 0, "liver": 1}}))
    labels, modality, _, _ = ds.read_label_map(good)
    assert labels == {"liver": 1} and modality == "MR"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"modality": "MR", "labels": {"liver": 0, "spleen": 1}}))
    with pytest.raises(ds.DatasetError, match=r"'liver' must be a positive integer.*background"):
        ds.read_label_map(bad)
    only_bg = tmp_path / "bg.json"
    only_bg.write_text(json.dumps({"modality": "MR", "labels": {"background": 0}}))
    with pytest.raises(ds.DatasetError, match="names no organ"):
        ds.read_label_map(only_bg)


def test_organ_names_that_collide_as_file_names_are_refused(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"modality": "MR", "labels": {"left kidney": 1, "left_kidney": 2}}))
    with pytest.raises(ds.DatasetError, match="same file name 'left_kidney'"):
        ds.read_label_map(path)


def test_atomic_writes_follow_the_umask_and_keep_an_existing_mode(tmp_path):
    old = os.umask(0o027)
    try:
        p = write_json(tmp_path / "a.json", {"x": 1})
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
        os.umask(0o022)
        q = write_text(tmp_path / "b.txt", "hi")
        assert stat.S_IMODE(q.stat().st_mode) == 0o644
        os.chmod(q, 0o600)  # the user's choice for an existing file is kept
        write_text(q, "again")
        assert stat.S_IMODE(q.stat().st_mode) == 0o600 and q.read_text() == "again"
    finally:
        os.umask(old)


def test_relative_paths_are_stored_absolute(tmp_path, monkeypatch, phantom_root):
    make_dataset(tmp_path / "data" / "mine", phantom_root, ODD_NAMES)
    (tmp_path / "labels2.json").write_text(json.dumps({"modality": "MR", "labels": {"liver": 1}}))
    monkeypatch.chdir(tmp_path)
    cfg = make_config("smoke", "data/mine", 1, 0, "alpnet", ["data.labels=labels2.json"], test_group="liver")
    assert cfg.data.dataset == str(tmp_path / "data" / "mine")
    assert cfg.data.labels == str(tmp_path / "labels2.json")
    # names stay names
    assert make_config("smoke", "phantom").data.dataset == "phantom"
    assert make_config("smoke", "chaos").data.dataset == "chaos"


# ---------------------------------------------------------------------- item 6: superpixel parameters
def test_superpixel_section_defaults_keep_the_hash_and_changes_count():
    cfg = make_config("smoke", "phantom")
    assert "superpixels" not in cfg.hashed_dict()  # at defaults: runs made before the section keep their hash
    assert cfg.superpixels == SuperpixelConfig(min_size=400, sigma=1.0, scale=1.0, min_area=200)
    for override in (
        "superpixels.min_size=100",
        "superpixels.sigma=0.5",
        "superpixels.scale=2",
        "superpixels.min_area=50",
    ):
        changed = make_config("smoke", "phantom", overrides=[override])
        assert changed.config_hash() != cfg.config_hash(), override
        assert changed.hashed_dict()["superpixels"] == changed.to_dict()["superpixels"]
    with pytest.raises(ValueError, match="superpixels.min_size"):
        make_config("smoke", overrides=["superpixels.min_size=0"])
    back = ExperimentConfig.from_dict(make_config("smoke", overrides=["superpixels.min_area=77"]).to_dict())
    assert back.superpixels.min_area == 77


def test_superpixels_command_and_training_share_one_cache(odd_data, capsys):
    from crapnet_core.data.superpixels import SuperpixelParams, cache_folder, load_superpixels
    from crapnet_core.engine.training import build_episodes

    data = odd_data
    cfg = make_config(
        "smoke",
        str(data),
        1,
        0,
        "alpnet",
        ["superpixels.min_size=100", "superpixels.sigma=0.8", "superpixels.min_area=150", "data.n_folds=3"],
        test_group="spleen",
    )
    train_ids = ["3", "4"]  # fold 0 of 3 over 4 scans: test 1, support 2
    assert (
        main(
            [
                "superpixels",
                "--data-dir",
                str(data),
                "--min-size",
                "100",
                "--sigma",
                "0.8",
                "--scans",
                *train_ids,
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    spec = ds.resolve_dataset(str(data))
    folder = cache_folder(spec, SuperpixelParams(min_size=100, sigma=0.8))
    assert str(folder) in out and "--superpixel-min-size 100" in out
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("superpix_*.nii.gz")}
    assert sorted(stamps) == [f"superpix_{i}.nii.gz" for i in train_ids]
    siblings = sorted(p.name for p in folder.parent.glob(f"{data.name}-*"))

    dataset, _, fold, _ = build_episodes(cfg)
    assert list(fold.train_ids) == train_ids
    # training read the command's files: nothing recomputed, no second cache folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("superpix_*.nii.gz")} == stamps
    assert sorted(p.name for p in folder.parent.glob(f"{data.name}-*")) == siblings
    sp = load_superpixels(spec, "3", SuperpixelParams(min_size=100, sigma=0.8))
    np.testing.assert_array_equal(dataset._superpixels["3"], sp)
    # the minimum area of the config is the one episodes use
    assert dataset.min_superpixel_area == 150
    for sid, z, usable in dataset.entries:
        counts = np.bincount(dataset._superpixels[sid][:, :, z].ravel().astype(np.int64))
        assert (counts[usable] >= 150).all()
    # and the parameters change the superpixels: min_size 100 gives more of them than 400
    default = load_superpixels(spec, "3", SuperpixelParams())
    assert sp.max(axis=(0, 1)).sum() > default.max(axis=(0, 1)).sum()


# ---------------------------------------------------------------------- item 7: any organ group of any label map
def test_setting2_custom_group_with_odd_names_trains_and_evaluates(odd_data, tmp_path, monkeypatch):
    """Also: a relative dataset path, evaluation from another folder, output file modes."""
    monkeypatch.chdir(odd_data.parent)
    run = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert (
            main(
                [
                    "train",
                    "--dataset",
                    odd_data.name,
                    "--setting",
                    "2",
                    "--group",
                    "left kidney,liver/bile",
                    "--method",
                    "alpnet",
                    "--out",
                    str(run),
                    *SMOKE,
                ]
            )
            == 0
        )
        monkeypatch.chdir(tmp_path)
        assert main(["evaluate", str(run), "--no-progress"]) == 0
    finally:
        os.umask(old)
    for p in [
        run / "config.json",
        run / "metrics.json",
        run / "checkpoints" / "last.pt",
        run / "predictions" / "1_left_kidney.nii.gz",
    ]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    cfg = ExperimentConfig.load(run / "config.json")
    assert cfg.data.dataset == str(odd_data)
    assert cfg.data.test_group == ("left kidney", "liver/bile")
    assert cfg.data.exclude_organs == ("left kidney", "liver/bile")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["organs"] == ["left kidney", "liver/bile"]
    preds = sorted(p.relative_to(run / "predictions").as_posix() for p in (run / "predictions").rglob("*"))
    assert preds == ["1_left_kidney.nii.gz", "1_liver_bile.nii.gz"]  # no sub-folder from "/"
    # the episodes never show a slice with an organ of the group (setting 2)
    from crapnet_core.engine.training import build_episodes

    dataset, spec, _, _ = build_episodes(cfg)
    for sid, z in dataset.slices:
        lab = ds.load_volume(spec, sid).label[:, :, z]
        assert not np.isin(lab, [1, 3]).any()


def test_cross_validate_takes_group_and_names_runs_safely(tmp_path, odd_data, capsys):
    data = odd_data
    out = tmp_path / "cv"
    assert (
        main(
            [
                "cross-validate",
                "--dataset",
                str(data),
                "--setting",
                "2",
                "--group",
                "liver/bile",
                "--group",
                "spleen",
                "--method",
                "panet",
                "--folds",
                "0",
                "--out",
                str(out),
                *SMOKE,
            ]
        )
        == 0
    )
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert [r.split("_f0_")[0] for r in runs] == ["odd_s2_liver_bile", "odd_s2_spleen"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["organs"] == ["spleen", "liver/bile"] or sorted(summary["organs"]) == ["liver/bile", "spleen"]
    assert "liver/bile" in (out / "summary.md").read_text()


def test_missing_default_organs_suggest_group_and_write_nothing(tmp_path, phantom_root, capsys):
    data = make_dataset(tmp_path / "cardiac", phantom_root, {"heart": 1, "lung": 2, "aorta": 3, "vein": 4})
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--out", str(run), *SMOKE]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("crapnet train: error: ")
    assert "--group" in err and "heart, lung, aorta, vein" in err and "left_kidney" in err
    assert not run.exists()
    out = tmp_path / "cv"
    assert main(["cross-validate", "--dataset", str(data), "--setting", "2", "--out", str(out), *SMOKE]) == 2
    assert "--group" in capsys.readouterr().err and not out.exists()
    assert main(["cross-validate", "--dataset", str(data), "--group", "heart,brain", "--out", str(out), *SMOKE]) == 2
    err = capsys.readouterr().err
    assert "'brain' is not labelled" in err and "heart, lung, aorta, vein" in err and not out.exists()


# ---------------------------------------------------------------------- item 8: validate before writing
def _break(path: Path) -> None:
    """Replace a symlinked scan by a truncated copy of it."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("broken", ["image_1.nii.gz", "label_2.nii.gz"])  # a test scan, the support scan
def test_broken_test_or_support_scan_stops_before_anything_is_written(tmp_path, phantom_root, capsys, broken):
    data = make_dataset(tmp_path / "d", phantom_root, ODD_NAMES)
    _break(data / broken)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--group", "spleen", "--out", str(run), *SMOKE]) == 2
    err = capsys.readouterr().err
    assert broken in err and "truncated" in err
    assert not run.exists()
    run.mkdir()  # an existing empty folder stays empty
    assert main(["train", "--dataset", str(data), "--group", "spleen", "--out", str(run), *SMOKE]) == 2
    assert list(run.iterdir()) == []


def test_organ_absent_from_support_scan_is_found_before_training(tmp_path, phantom_root, capsys):
    data = make_dataset(tmp_path / "d", phantom_root, ODD_NAMES)
    lab = ds.load_volume(ds.resolve_dataset(str(data)), "2")
    import nibabel as nib

    img = nib.load(str(phantom_root / "label_2.nii.gz"))
    arr = np.asanyarray(img.dataobj).copy()
    arr[arr == 4] = 0  # no spleen in the support scan of fold 0
    (data / "label_2.nii.gz").unlink()
    nib.save(nib.Nifti1Image(arr, img.affine), str(data / "label_2.nii.gz"))
    assert lab.scan_id == "2"
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--group", "spleen", "--out", str(run), *SMOKE]) == 2
    assert "absent from the support scan 2" in capsys.readouterr().err and not run.exists()


def test_a_failed_start_does_not_ask_for_force(tmp_path, odd_data):
    data = odd_data
    run = tmp_path / "run"
    run.mkdir()
    # what an older crapnet left after a bad start: a config.json of another config, no checkpoint
    make_config("smoke", str(data), 1, 0, "panet", test_group="liver/bile").save(run / "config.json")
    assert (
        main(["train", "--dataset", str(data), "--group", "spleen", "--method", "alpnet", "--out", str(run), *SMOKE])
        == 0
    )
    assert ExperimentConfig.load(run / "config.json").model.method == "alpnet"
    assert (run / "checkpoints" / "last.pt").is_file()
    # a real run (with a checkpoint) of another config is still protected
    assert main(["train", "--dataset", str(data), "--group", "liver/bile", "--out", str(run), *SMOKE]) == 2


def test_help_describes_label_maps_groups_and_superpixels(capsys):
    for command in (["train", "--help"], ["cross-validate", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
        text = " ".join(capsys.readouterr().out.split())
        for words in (
            '"background": 0',
            "--group",
            "heart,lung",
            "--superpixel-min-size",
            "--min-superpixel-area",
            "written as _ in file names",
        ):
            assert words in text, (command, words)
    with pytest.raises(SystemExit):
        main(["cross-validate", "--help"])
    assert "repeatable: one model per group and fold" in " ".join(capsys.readouterr().out.split())

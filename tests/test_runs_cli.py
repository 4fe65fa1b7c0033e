"""Run folders keyed by config hash, cross-validation and the train/evaluate/segment commands."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from crapnet_core.cli import main
from crapnet_core.engine.experiment import make_config
from crapnet_core.engine.runs import ensure_run, summary_markdown


def test_cross_validate_smoke_end_to_end(tmp_path, capsys):
    """`crapnet cross-validate --profile smoke` on the phantom: 5 folds, summary in Table 1/2 layout."""
    out = tmp_path / "cv"
    rc = main(
        [
            "cross-validate",
            "--dataset",
            "phantom",
            "--setting",
            "1",
            "--method",
            "crapnet",
            "--profile",
            "smoke",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == [0, 1, 2, 3, 4]
    assert summary["organs"] == ["left_kidney", "right_kidney", "spleen", "liver"]
    for fold in summary["per_fold"].values():
        assert set(fold["dice"]) == {"left_kidney", "right_kidney", "spleen", "liver", "mean"}
        assert all(0 <= v <= 1 for v in fold["dice"].values())
    dice = summary["mean"]["dice"]
    assert dice["mean"] == pytest.approx(np.mean([dice[o] for o in summary["organs"]]), abs=1e-6)
    md = (out / "summary.md").read_text()
    assert "| Method | LK | RK | Spleen | Liver | Mean |" in md
    assert md == summary_markdown(summary)
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(runs) == 5
    run = runs[0]
    for name in ("config.json", "metrics.csv", "metrics.json", "TRAINED", "checkpoints/last.pt"):
        assert (run / name).exists(), name
    m = json.loads((run / "metrics.json").read_text())
    assert m["support"]["scan_id"] and set(m["support"]["slices"]) == set(summary["organs"])
    # predictions: one per test scan and organ, aligned with the input volume file
    from crapnet_core.data import datasets as ds

    spec = ds.resolve_dataset("phantom")
    sid = m["test_scans"][0]
    pred = nib.load(str(run / "predictions" / f"{sid}_liver.nii.gz"))
    src = nib.load(str(ds.image_path(spec, sid)))
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine)
    # a second call skips the finished folds (no checkpoint is rewritten)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    capsys.readouterr()
    assert (
        main(["cross-validate", "--dataset", "phantom", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 0
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == stamps
    assert "LK" in capsys.readouterr().out


def test_setting2_fold_trains_one_model_per_group(tmp_path):
    out = tmp_path / "cv2"
    rc = main(
        [
            "cross-validate",
            "--dataset",
            "phantom",
            "--setting",
            "2",
            "--method",
            "panet",
            "--profile",
            "smoke",
            "--out",
            str(out),
            "--folds",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [r.name.split("_f1_")[0] for r in runs] == ["phantom_s2_kidneys", "phantom_s2_liver_spleen"]
    groups = [json.loads((r / "metrics.json").read_text())["organs"] for r in runs]
    assert groups == [["left_kidney", "right_kidney"], ["liver", "spleen"]]
    cfgs = [json.loads((r / "config.json").read_text())["data"]["test_group"] for r in runs]
    assert cfgs == groups
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == [1] and set(summary["per_fold"]["1"]["dice"]) == {
        "left_kidney",
        "right_kidney",
        "spleen",
        "liver",
        "mean",
    }


def test_ensure_run_shares_and_skips(tmp_path):
    cfg = make_config("smoke", "phantom", 1, 2, "alpnet", ["train.steps=2"])
    run = ensure_run(cfg, tmp_path, progress=False)
    assert run.name == cfg.run_name() and (run / "metrics.json").is_file()
    stamp = (run / "metrics.json").stat().st_mtime_ns
    # same config (a runtime-only field differs): same folder, nothing redone
    same = make_config("smoke", "phantom", 1, 2, "alpnet", ["train.steps=2", "eval.batch_size=3"])
    assert ensure_run(same, tmp_path, progress=False) == run
    assert (run / "metrics.json").stat().st_mtime_ns == stamp
    # an evaluation without metrics (e.g. killed) is redone, training is not
    (run / "metrics.json").unlink()
    ckpt = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    ensure_run(cfg, tmp_path, progress=False)
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "last.pt").stat().st_mtime_ns == ckpt


def test_train_evaluate_segment_commands(tmp_path, capsys):
    run = tmp_path / "run"
    args = [
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
        "--set",
        "model.proto_threshold=0.9",
        "--out",
        str(run),
        "--no-progress",
    ]
    assert main(args) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["steps"] == 2 and cfg["model"]["proto_threshold"] == 0.9
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert "Dice:" in capsys.readouterr().out
    m = json.loads((run / "metrics.json").read_text())
    assert m["step"] == 2

    from crapnet_core.data import datasets as ds

    spec = ds.resolve_dataset("phantom")
    sup, qry = m["support"]["scan_id"], m["test_scans"][0]
    out = tmp_path / "pred.nii.gz"
    seg = [
        "segment",
        "--run",
        str(run),
        "--support-image",
        str(ds.image_path(spec, sup)),
        "--support-label",
        str(ds.label_path(spec, sup)),
        "--support-organ-label",
        str(spec.labels["liver"]),
        "--query-image",
        str(ds.image_path(spec, qry)),
        "--out",
        str(out),
    ]
    assert main(seg) == 0
    report = json.loads(capsys.readouterr().out)
    src = nib.load(str(ds.image_path(spec, qry)))
    pred = nib.load(str(out))
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine)
    assert report["support_slices"] == m["support"]["slices"]["liver"]
    # the same code path as the evaluation: with the organ's range, the scored slices match the saved prediction
    vol = ds.load_volume(spec, qry)
    z0, z1 = m["per_scan"]["liver"][qry]["z_range"]
    assert main([*seg[:-1], str(tmp_path / "p2.nii.gz"), "--query-range", f"{z0}:{z1}"]) == 0
    capsys.readouterr()
    evaluated = np.asarray(nib.load(str(run / "predictions" / f"{qry}_liver.nii.gz")).dataobj)
    segmented = np.asarray(nib.load(str(tmp_path / "p2.nii.gz")).dataobj)
    assert np.array_equal(evaluated, segmented), vol.scan_id
    # bad inputs for segment: existing --out, organ label absent from the support
    assert main(seg) == 2
    assert "exists" in capsys.readouterr().err
    bad = [*seg[:-2], "--out", str(tmp_path / "p3.nii.gz")]
    bad[bad.index("--support-organ-label") + 1] = "9"
    assert main(bad) == 2
    assert "no voxel with label 9" in capsys.readouterr().err


def test_bad_inputs_give_one_clear_line(tmp_path, capsys):
    base = ["train", "--dataset", "phantom", "--profile", "smoke", "--steps", "1", "--no-progress"]
    # fold out of range
    assert main([*base, "--fold", "5", "--out", str(tmp_path / "a")]) == 2
    assert "fold" in capsys.readouterr().err
    # overwrite a finished run without --force / with another config
    run = tmp_path / "run"
    assert main([*base, "--out", str(run)]) == 0
    assert main([*base, "--out", str(run)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*base, "--blocks", "2", "--out", str(run)]) == 2
    assert "another config" in capsys.readouterr().err
    assert main([*base, "--blocks", "2", "--out", str(run), "--force"]) == 0
    # checkpoint not matching the run's model config
    other = tmp_path / "other"
    assert main([*base, "--out", str(other)]) == 0
    assert main(["evaluate", str(other), "--checkpoint", str(run / "checkpoints" / "last.pt"), "--no-progress"]) == 2
    assert "does not match the model config" in capsys.readouterr().err
    # a dataset folder without the organ asked for
    folder = tmp_path / "noliver"
    folder.mkdir()
    aff = np.eye(4)
    for sid in range(1, 7):
        lab = np.zeros((256, 256, 4), np.int16)
        lab[10:20, 10:20, 1] = 1
        nib.save(
            nib.Nifti1Image(np.random.default_rng(sid).random((256, 256, 4)).astype(np.float32) * 100, aff),
            str(folder / f"image_{sid}.nii.gz"),
        )
        nib.save(nib.Nifti1Image(lab, aff), str(folder / f"label_{sid}.nii.gz"))
    (folder / "labels.json").write_text(json.dumps({"modality": "MR", "labels": {"spleen": 1}}))
    assert (
        main(
            [
                "train",
                "--dataset",
                str(folder),
                "--set",
                "data.test_group=liver",
                "--profile",
                "smoke",
                "--out",
                str(tmp_path / "b"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "'liver' is not labelled" in err and str(folder) in err
    # evaluate something that is not a run folder
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err

"""Validation split (issue 8 section 2): one training scan held out per fold, scored only by
``crapnet evaluate RUN --split validation`` (metrics_validation.json)."""

from __future__ import annotations

import json

import pytest

from crapnet_core.cli import main
from crapnet_core.data.protocol import make_fold
from crapnet_core.engine.experiment import make_config

CHAOS_IDS = [1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39]


def test_validation_scan_is_the_last_training_scan_and_leaves_training():
    plain = make_fold(CHAOS_IDS, 0)
    f0 = make_fold(CHAOS_IDS, 0, validation=True)
    assert plain.validation_ids == ()
    assert f0.validation_ids == ("39",) and "39" not in f0.train_ids
    assert f0.train_ids == plain.train_ids[:-1] and len(f0.train_ids) == 14
    assert (f0.test_ids, f0.support_id) == (plain.test_ids, plain.support_id)  # test scans untouched
    f4 = make_fold(CHAOS_IDS, 4, validation=True)
    assert f4.validation_ids == ("34",) and f4.test_ids == ("36", "37", "38", "39")
    with pytest.raises(ValueError, match=r"1 validation scan\(s\) need 2"):
        make_fold([1, 2, 3], 0, n_folds=2, validation=True)  # 1 test, 1 support, 1 training scan
    # the config field changes what is trained: part of the hash
    a = make_config("lite", "chaos", 1, 0, "crapnet")
    b = make_config("lite", "chaos", 1, 0, "crapnet", ["data.validation=true"])
    assert a.config_hash() != b.config_hash()


def test_training_never_sees_the_validation_scan():
    from crapnet_core.data import datasets as ds
    from crapnet_core.data.protocol import training_slices

    spec = ds.resolve_dataset("phantom")
    fold = make_fold(ds.scan_ids(spec), 0, validation=True)
    (val,) = fold.validation_ids
    assert {sid for sid, _ in training_slices(spec, fold)} == set(fold.train_ids)
    assert val not in fold.train_ids and val not in fold.test_ids and val != fold.support_id


def test_cli_train_evaluate_on_validation(tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "phantom",
        "--fold",
        "1",
        "--method",
        "panet",
        "--profile",
        "smoke",
        "--steps",
        "2",
        "--set",
        "data.validation=true",
        "--out",
        str(run),
        "--no-progress",
        "--evaluate",
        "--on",
        "validation",
    ]
    assert main(args) == 0
    assert (run / "metrics_validation.json").is_file() and not (run / "metrics.json").exists()
    m = json.loads((run / "metrics_validation.json").read_text())
    from crapnet_core.data import datasets as ds

    fold = make_fold(ds.scan_ids(ds.resolve_dataset("phantom")), 1, validation=True)
    assert m["split"] == "validation" and m["test_scans"] == list(fold.validation_ids)
    assert m["support"]["scan_id"] == fold.support_id
    assert "validation scans" in capsys.readouterr().out
    # the test split of the same run still works and writes metrics.json
    assert main(["evaluate", str(run), "--no-progress", "--no-predictions"]) == 0
    t = json.loads((run / "metrics.json").read_text())
    assert t["split"] == "test" and t["test_scans"] == list(fold.test_ids)
    # a run trained without the hold-out cannot be scored on a validation scan: one clear line
    run2 = tmp_path / "run2"
    assert (
        main(
            [
                "train",
                "--dataset",
                "phantom",
                "--fold",
                "1",
                "--method",
                "panet",
                "--profile",
                "smoke",
                "--steps",
                "1",
                "--out",
                str(run2),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", str(run2), "--split", "validation", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data.validation=false" in err and not (run2 / "metrics_validation.json").exists()

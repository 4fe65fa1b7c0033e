"""Folds, support scans, settings and setting-2 exclusion (SSL-ALPNet protocol, paper Sec. 4.1-4.2)."""

from __future__ import annotations

import numpy as np
import pytest

from crapnet_core.data.datasets import ORGANS, DatasetError, load_volume, resolve_dataset, scan_ids
from crapnet_core.data.protocol import (
    SETTING2_GROUPS,
    Fold,
    excluded_organs,
    make_fold,
    training_slices,
)
from crapnet_core.data.protocol import (
    test_groups as groups_for_setting,
)

CHAOS_IDS = [1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39]


def test_chaos_folds_from_readme_rule():
    f0 = make_fold([str(i) for i in reversed(CHAOS_IDS)], 0)  # order of the input does not matter
    assert f0.test_ids == ("1", "2", "3", "5") and f0.support_id == "8"
    assert set(f0.train_ids) == {str(i) for i in CHAOS_IDS} - {"1", "2", "3", "5", "8"}
    f4 = make_fold(CHAOS_IDS, 4)
    assert f4.test_ids == ("36", "37", "38", "39") and f4.support_id == "1"
    assert "1" not in f4.train_ids and len(f4.train_ids) == 15


def test_sabs_folds_from_rule():
    ids = list(range(30))
    f0, f4 = make_fold(ids, 0), make_fold(ids, 4)
    assert f0.test_ids == tuple(str(i) for i in range(6)) and f0.support_id == "6"
    assert f4.test_ids == tuple(str(i) for i in range(24, 30)) and f4.support_id == "0"
    assert len(f0.train_ids) == 23


@pytest.mark.parametrize("n", [10, 20, 30])
def test_folds_partition_the_scans(n):
    ids = [str(i) for i in range(n)]
    tests = [t for k in range(5) for t in make_fold(ids, k).test_ids]
    assert sorted(tests, key=int) == ids  # every scan is tested exactly once
    for k in range(5):
        f = make_fold(ids, k)
        assert f.support_id not in f.test_ids
        assert not set(f.train_ids) & (set(f.test_ids) | {f.support_id})
        assert len(f.train_ids) + len(f.test_ids) + 1 == n


def test_fold_out_of_range_names_fold():
    with pytest.raises(ValueError, match="fold"):
        make_fold(CHAOS_IDS, 5)
    with pytest.raises(ValueError, match="fold"):
        make_fold(CHAOS_IDS, -1)
    with pytest.raises(ValueError, match="duplicates"):
        make_fold(["1", "1", "2", "3", "4", "5", "6"], 0)
    with pytest.raises(ValueError, match="too few"):
        make_fold(["1", "2", "3"], 0)


def test_settings_groups():
    assert groups_for_setting(1) == [ORGANS]
    assert groups_for_setting(2) == [("left_kidney", "right_kidney"), ("liver", "spleen")]
    assert excluded_organs(1, ORGANS) == ()
    assert excluded_organs(2, SETTING2_GROUPS[0]) == SETTING2_GROUPS[0]
    with pytest.raises(ValueError, match="setting"):
        groups_for_setting(3)
    with pytest.raises(ValueError):
        excluded_organs(2, ("liver",))


@pytest.mark.realdata
def test_real_fold_ids(chaos_dir, sabs_dir):
    chaos = resolve_dataset(chaos_dir, labels="chaos")
    sabs = resolve_dataset(sabs_dir, labels="sabs")
    assert scan_ids(chaos) == [str(i) for i in CHAOS_IDS]
    assert scan_ids(sabs) == [str(i) for i in range(30)]
    f = make_fold(scan_ids(chaos), 0)
    assert f.test_ids == ("1", "2", "3", "5") and f.support_id == "8"
    f = make_fold(scan_ids(chaos), 4)
    assert f.test_ids == ("36", "37", "38", "39") and f.support_id == "1"


@pytest.mark.realdata
def test_setting2_drops_every_slice_with_a_test_organ(chaos_dir):
    spec = resolve_dataset(chaos_dir, labels="chaos")
    fold = Fold(index=0, test_ids=("1",), support_id="2", train_ids=("3",))  # one volume: cheap
    lab = load_volume(spec, "3").label
    all_slices = training_slices(spec, fold)
    assert all_slices == [("3", z) for z in range(lab.shape[2])]
    for group in SETTING2_GROUPS:
        kept = training_slices(spec, fold, excluded_organs(2, group))
        ids = [spec.labels[o] for o in group]
        kept_z = {z for _, z in kept}
        for z in range(lab.shape[2]):
            has_organ = bool(np.isin(lab[:, :, z], ids).any())
            assert (z in kept_z) == (not has_organ), (group, z)
        assert 0 < len(kept) < len(all_slices)


def test_training_slices_unknown_organ(tmp_path):
    from crapnet_core.data.datasets import DatasetSpec

    spec = DatasetSpec("x", tmp_path, {"liver": 1}, "MR", 50.0)
    with pytest.raises(DatasetError, match="spleen"):
        training_slices(spec, Fold(0, ("1",), "2", ("3",)), ("spleen",))

"""The evaluation protocol of SSL-ALPNet, used by the CRAPNet paper (Sec. 4.1-4.2).

Folds: 5-fold cross-validation over the scan ids sorted as integers. Fold ``k`` of ``n``
scans tests the scans at positions ``[n*k/5, n*(k+1)/5)`` (4 for CHAOS, 6 for SABS); the
support scan is the next id in the sorted list, wrapping round at the end; training
(self-supervised, on superpixels) uses every other scan. CHAOS fold 0: test 1 2 3 5,
support 8; fold 4: test 36 37 38 39, support 1.

Validation (beyond the paper, for choosing settings without the test scans; issue 8 §2):
with ``validation=True`` (``DataConfig.validation``) the *last* training scan in sorted order
is held out as the fold's validation scan: it is removed from the training scans (no
self-supervised episode, no CT normalisation statistic comes from it) and its labels are
used only by ``crapnet evaluate RUN --split validation`` (``metrics_validation.json``), with
the fold's support scan, to compare candidate settings. Reported numbers come from runs with
``validation=False`` (the paper's protocol, training on every non-test, non-support scan;
the self-supervised training never reads labels except to drop setting-2 slices) evaluated
on the test scans. CHAOS fold 0: validation scan 39; fold 4: 34.

Settings (Sec. 4.2): setting 1 tests the four organs together and training slices may
show them (as background); setting 2 tests the groups {left kidney, right kidney} and
{liver, spleen} separately and drops every training slice that contains an organ of the
tested group (as SSL-ALPNet's ``exclude_list``: a slice is dropped when it holds at least
one voxel of an excluded organ).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..facts import (
    ORGANS,  # study facts: the benchmark organs
    SETTING2_GROUPS,  # setting 2 test groups (Sec. 4.2)
)
from .errors import DatasetError
from .scans import id_sort_key
from .spec import DatasetSpec
from .volumes import load_volume

#: The protocol's number of cross-validation folds (Ouyang et al. 2020; the paper's Sec. 4.1: 5-fold).
N_FOLDS = 5


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: test scans, the support scan, the training scans and the
    validation scans held out of training (empty unless ``make_fold(..., validation=True)``)."""

    index: int
    test_ids: tuple[str, ...]
    support_id: str
    train_ids: tuple[str, ...]
    validation_ids: tuple[str, ...] = ()


def make_fold(ids: Iterable[str | int], fold: int, n_folds: int = N_FOLDS, validation: bool | int = False) -> Fold:
    """Fold ``fold`` (0-based) of ``n_folds`` over ``ids`` (sorted as integers here).

    ``test = sorted_ids[n*fold//n_folds : n*(fold+1)//n_folds]``, ``support`` = the id after
    the last test id (wrapping), ``train`` = the rest. ``validation=True`` moves the last
    training scan (sorted order) to ``validation_ids`` (module docstring); an integer ``k`` moves
    the last ``k`` training scans (CHAOS fold 0 with ``k = 4``: 36 37 38 39, the test scans of fold 4).
    """
    ids_l = [str(i) for i in ids]
    ids_s = sorted(set(ids_l), key=id_sort_key)
    if len(ids_s) != len(ids_l):
        raise ValueError("make_fold: ids contain duplicates")
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ValueError(f"make_fold: n_folds must be an integer >= 2, got {n_folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n_folds:
        raise ValueError(f"make_fold: fold must be an integer in 0..{n_folds - 1}, got {fold!r}")
    n = len(ids_s)
    if n < n_folds + 1:
        raise ValueError(f"make_fold: {n} scans are too few for {n_folds} folds plus a support scan")
    lo, hi = n * fold // n_folds, n * (fold + 1) // n_folds
    test = tuple(ids_s[lo:hi])
    support = ids_s[hi % n]
    train = tuple(i for i in ids_s if i not in test and i != support)
    if not train:
        raise ValueError(f"make_fold: fold {fold} leaves no training scans")
    val: tuple[str, ...] = ()
    n_val = int(validation)
    if n_val < 0:
        raise ValueError(f"make_fold: validation must be a bool or a count >= 0, got {validation!r}")
    if n_val:
        if len(train) < n_val + 1:
            raise ValueError(
                f"make_fold: fold {fold} has {len(train)} training scan(s); {n_val} validation scan(s) need {n_val + 1}"
            )
        train, val = train[:-n_val], train[-n_val:]
    return Fold(index=fold, test_ids=test, support_id=support, train_ids=train, validation_ids=val)


def test_groups(setting: int) -> list[tuple[str, ...]]:
    """Organ groups evaluated together: setting 1 -> ``[ORGANS]``; setting 2 -> the two groups."""
    if setting == 1:
        return [tuple(ORGANS)]
    if setting == 2:
        return [tuple(g) for g in SETTING2_GROUPS]
    raise ValueError(f"setting must be 1 or 2, got {setting!r}")


def excluded_organs(setting: int, group: Sequence[str]) -> tuple[str, ...]:
    """Organs whose slices are removed from training: setting 1 -> (); setting 2 -> ``group``."""
    if setting == 1:
        return ()
    if setting == 2:
        group = tuple(group)
        if group not in test_groups(2):
            raise ValueError(f"setting 2 groups are {test_groups(2)}, got {group!r}")
        return group
    raise ValueError(f"setting must be 1 or 2, got {setting!r}")


def training_slices(spec: DatasetSpec, fold: Fold, exclude_organs: Iterable[str] = ()) -> list[tuple[str, int]]:
    """``(scan_id, z)`` of every training slice of ``fold`` that holds none of ``exclude_organs``.

    Setting 1 passes no organs (every slice of every training scan); setting 2 passes the
    tested group. Test, support and validation scans are never included.
    """
    exclude = tuple(exclude_organs)
    label_ids = [spec.label_id(o) for o in exclude]  # DatasetError for an organ the dataset lacks
    bad = set(fold.test_ids) | {fold.support_id} | set(fold.validation_ids)
    if bad & set(fold.train_ids):
        raise DatasetError(
            f"fold {fold.index}: training scans overlap test/support scans: {sorted(bad & set(fold.train_ids))}"
        )
    out: list[tuple[str, int]] = []
    for sid in fold.train_ids:
        vol = load_volume(spec, sid)
        drop: set[int] = set()
        for lid in label_ids:
            drop.update(vol.slices_with_label(lid).tolist())
        out.extend((sid, z) for z in range(vol.n_slices) if z not in drop)
    return out


# ``test_groups`` starts with "test": tell pytest it is not a test when a test module imports it.
test_groups.__test__ = False  # type: ignore[attr-defined]

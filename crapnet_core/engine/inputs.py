"""Check everything a run will read before anything is written (``train``, ``cross-validate``).

A run reads the dataset's label map, the training scans of its fold (episodes), the fold's
test scans, its validation scan (when ``data.validation``) and its support scan (evaluation). :func:`check_experiment_inputs` loads and
validates every one of them with the dataset loader (:func:`crapnet_core.data.volumes.load_volume`:
pairs, shapes, affines, NaN, label values...), checks that the label map names every test
organ and that the support scan shows each of them, and that setting 2 leaves training
slices; it writes nothing (volumes stay in the in-process cache, so training and
evaluation do not read them twice). Without it, a broken test scan was found only after
training (100,000 steps in the paper profile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..data.errors import DatasetError
from ..data.spec import DatasetSpec


@dataclass(frozen=True)
class CheckedInputs:
    """What :func:`check_experiment_inputs` validated: the dataset, the fold, the scan ids read."""

    spec: DatasetSpec
    fold: object  # protocol.Fold
    scan_ids: tuple[str, ...]


def check_group(spec: DatasetSpec, group: Sequence[str], setting: int) -> None:
    """Every organ of ``group`` must be named by ``spec``'s label map.

    Raises :class:`DatasetError` naming the missing organs and listing the organs of the
    label map; when ``group`` is the default of ``setting`` (the abdominal benchmark organs),
    the message tells the user to pick organs with ``--group``.
    """
    from .experiment import parse_group

    missing = [o for o in group if o not in spec.labels]
    if not missing:
        return
    present = ", ".join(sorted(spec.labels, key=lambda o: spec.labels[o]))
    if tuple(group) == tuple(parse_group(None, setting)):
        raise DatasetError(
            f"dataset {spec.name!r} ({spec.root}) does not label the default test organs of setting {setting} "
            f"({', '.join(missing)} missing); choose the organs to test with --group ORGAN[,ORGAN...] "
            f"(organs in its label map: {present})"
        )
    raise DatasetError(
        f"--group: organ {', '.join(repr(o) for o in missing)} {'is' if len(missing) == 1 else 'are'} not labelled "
        f"in dataset {spec.name!r} ({spec.root}); organs in its label map: {present}"
    )


def check_experiment_inputs(cfg) -> CheckedInputs:
    """Validate the config's dataset and every scan the run needs; write nothing.

    Checks, in order: the dataset resolves (folder, label map); the fold exists; every test
    organ is in the label map (:func:`check_group`); every training, test and support scan
    loads and passes the loader's validation; the support scan contains every test organ
    (it is the 1-shot support of the evaluation); in setting 2, some training slice is left
    once the test organs' slices are dropped. Raises :class:`DatasetError` / ``ValueError``
    with one line naming the file or argument.
    """
    from ..data import datasets as ds
    from ..data.protocol import make_fold, training_slices

    spec = ds.resolve_dataset(cfg.data.dataset, cfg.data.labels, cfg.data.data_root)
    ids = ds.scan_ids(spec)
    try:
        fold = make_fold(ids, cfg.data.fold, cfg.data.n_folds, validation=cfg.data.n_validation)
    except ValueError as err:
        raise DatasetError(f"{spec.root}: {err}") from None
    group = tuple(cfg.data.test_group)
    check_group(spec, group, cfg.data.setting)
    needed = (*fold.train_ids, *fold.validation_ids, *fold.test_ids, fold.support_id)
    for sid in needed:
        ds.load_volume(spec, sid)
    support = ds.load_volume(spec, fold.support_id)
    for organ in group:
        lid = spec.label_id(organ)
        if support.slices_with_label(lid).size == 0:
            raise DatasetError(
                f"{support.label_path}: organ {organ!r} (label {lid}) is absent from the support scan "
                f"{fold.support_id}; it cannot serve as the 1-shot support for fold {cfg.data.fold}"
            )
    if cfg.data.setting == 2 and not training_slices(spec, fold, cfg.data.exclude_organs):
        raise DatasetError(
            f"{spec.root}: setting 2 with test group {','.join(group)} leaves no training slice in fold "
            f"{cfg.data.fold} (every training slice shows one of these organs)"
        )
    return CheckedInputs(spec=spec, fold=fold, scan_ids=tuple(needed))


__all__ = ["CheckedInputs", "check_group", "check_experiment_inputs"]

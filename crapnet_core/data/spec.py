"""What a dataset folder is: :class:`DatasetSpec`, the presets and label-map files, :func:`resolve_dataset`.

Presets: ``chaos`` -> ``$CRAPNET_DATA_ROOT/CHAOST2`` (CHAOS T2-SPIR MRI), ``sabs`` ->
``$CRAPNET_DATA_ROOT/SABS`` (Synapse/BTCV CT), ``phantom`` -> the synthetic stand-in
(:mod:`crapnet_core.data.phantom`); any other folder in the same layout with a label-map file
(JSON or YAML)::

    {"modality": "MR", "labels": {"liver": 1, "spleen": 2}, "body_threshold": 50}

passed with ``labels=`` or found as ``labels.json`` / ``labels.yaml`` in the folder. Errors:
:class:`~crapnet_core.data.errors.DatasetError` naming the file or folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..facts import CHAOS_LABELS, SABS_LABELS  # study facts: label maps of the presets
from .errors import DatasetError
from .labels import load_label_map_text, organ_names

#: Body-mask thresholds of SSL-ALPNet's pseudo-label generation (on un-normalised intensities),
#: used by the presets (and by folders read with ``--preset``). Other folders default to a
#: data-driven threshold (Otsu per volume, :func:`~crapnet_core.data.body.body_threshold_for`), which works on any
#: intensity range (MR scaled 0-1 or 0-90, CT in HU or 0-255).
BODY_THRESHOLD = {"MR": 50.0, "CT": 1e-4}

#: name -> (sub-folder of the data root, labels, modality)
PRESETS: dict[str, tuple[str, dict[str, int], str]] = {
    "chaos": ("CHAOST2", CHAOS_LABELS, "MR"),
    "sabs": ("SABS", SABS_LABELS, "CT"),
}

LABEL_FILE_NAMES = ("labels.json", "labels.yaml", "labels.yml")


@dataclass(frozen=True)
class DatasetSpec:
    """What crapnet needs to know about a dataset folder.

    ``labels`` maps organ names (lower_snake, e.g. ``"left_kidney"``) to the integer ids
    used in the label volumes; ``body_threshold`` is the intensity above which a voxel
    belongs to the body (superpixel body mask, on un-normalised intensities); ``None`` means
    data-driven: Otsu's threshold of each volume (:func:`~crapnet_core.data.body.body_threshold_for`).
    """

    name: str
    root: Path
    labels: dict[str, int]
    modality: str
    body_threshold: float | None
    is_phantom: bool = False
    preset: str | None = None  # "chaos"/"sabs" when a preset's rules apply (in-plane crop of SABS)

    def __hash__(self) -> int:  # dict field: hash a canonical tuple instead
        return hash(self.key)

    @property
    def key(self) -> tuple:
        """A hashable identity of the spec (used for in-process caches)."""
        return (
            self.name,
            str(self.root),
            tuple(sorted(self.labels.items())),
            self.modality,
            None if self.body_threshold is None else float(self.body_threshold),
            self.is_phantom,
            self.preset,
        )

    def label_id(self, organ: str) -> int:
        """The integer id of ``organ``; a clear error when the dataset does not label it."""
        try:
            return int(self.labels[organ])
        except KeyError:
            raise DatasetError(
                f"organ {organ!r} is not labelled in dataset {self.name!r} ({self.root}); "
                f"known organs: {', '.join(sorted(self.labels))}"
            ) from None


# --------------------------------------------------------------------------- resolving


def _check_organ_names(labels: dict[str, int], source: str) -> None:
    """Organ names become parts of file names (``<scan>_<organ>.nii.gz``): two names that
    give the same file name, or a name with nothing usable in it, are refused here."""
    from ..paths import safe_name

    seen: dict[str, str] = {}
    for organ in labels:
        if not organ.strip():
            raise DatasetError(f"{source}: an organ name is empty")
        key = safe_name(organ)
        if key in seen:
            raise DatasetError(
                f"{source}: organ names {seen[key]!r} and {organ!r} give the same file name {key!r}; rename one"
            )
        seen[key] = organ


def _parse_label_map(obj: Any, source: str) -> tuple[dict[str, int], str, float | None, dict]:
    if not isinstance(obj, dict):
        raise DatasetError(f"{source}: expected a mapping with 'modality' and 'labels'")
    modality = str(obj.get("modality", "")).upper()
    if modality not in ("MR", "CT"):
        raise DatasetError(f"{source}: 'modality' must be MR or CT, got {obj.get('modality')!r}")
    raw = obj.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{source}: 'labels' must be a non-empty mapping organ name -> integer id")
    labels: dict[str, int] = {}
    names = organ_names(raw, source)  # NFC: the NFC and NFD spellings of a name are one organ
    for organ, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise DatasetError(f"{source}: label id of {organ!r} must be an integer, got {value!r}")
        if value == 0 and str(organ).strip().lower() == "background":
            continue  # 0 is always background; saying so in the map (nnU-Net's dataset.json style) is fine
        if value <= 0:
            raise DatasetError(
                f"{source}: label id of {organ!r} must be a positive integer, got {value!r} "
                f"(0 is the background; only an entry named 'background' may map to it)"
            )
        labels[names[organ]] = int(value)
    if not labels:
        raise DatasetError(f"{source}: 'labels' names no organ (only the background)")
    _check_organ_names(labels, source)
    if len(set(labels.values())) != len(labels):
        raise DatasetError(f"{source}: two organs share one label id: {labels}")
    threshold = obj.get("body_threshold")
    if isinstance(threshold, str) and threshold.strip().lower() == "otsu":
        threshold = None
    elif threshold is not None:
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise DatasetError(f"{source}: 'body_threshold' must be a number or \"otsu\", got {threshold!r}") from None
    return labels, modality, threshold, obj


def read_label_map(path: str | os.PathLike) -> tuple[dict[str, int], str, float | None, dict]:
    """Read a label-map file (JSON or YAML): ``(labels, modality, body_threshold|None, raw)``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: label-map file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read label-map file ({err})") from None
    obj = load_label_map_text(text, path)  # a key given twice is refused, naming it
    return _parse_label_map(obj, str(path))


def resolve_dataset(
    name_or_path: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
) -> DatasetSpec:
    """Turn a dataset name or folder into a :class:`DatasetSpec`.

    ``"chaos"`` / ``"sabs"`` -> the presets under the data root (``data_root`` or
    ``$CRAPNET_DATA_ROOT``); ``"phantom"`` -> the synthetic phantom (generated into the
    cache on first use); anything else is a folder. For a folder, ``labels`` is a label-map
    file (JSON/YAML) or a preset name (``"chaos"``/``"sabs"``) whose labels and modality
    apply; without it the folder must hold ``labels.json``/``labels.yaml``.
    """
    from ..paths import DataRootNotSet
    from ..paths import data_root as _data_root

    key = str(name_or_path)
    if key.lower() in PRESETS and labels is None and not Path(key).is_dir():
        sub, lab, modality = PRESETS[key.lower()]
        try:
            root = _data_root(data_root) / sub
        except DataRootNotSet as err:
            raise DatasetError(str(err)) from None
        if not root.is_dir():
            raise DatasetError(f"{root}: preset dataset {key!r} not found (is the data root right?)")
        return DatasetSpec(key.lower(), root, dict(lab), modality, BODY_THRESHOLD[modality], preset=key.lower())
    if key.lower() == "phantom" and not Path(key).is_dir():
        from .phantom import phantom_root

        return resolve_dataset(phantom_root())

    root = Path(key).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder not found (use a folder, or one of chaos, sabs, phantom)")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    root = root.resolve()
    raw: dict = {}
    threshold = None
    preset = None
    if labels is not None and str(labels).lower() in PRESETS and not Path(str(labels)).is_file():
        _, lab, modality = PRESETS[str(labels).lower()]
        lab = dict(lab)
        name = root.name
        preset = str(labels).lower()
    else:
        label_file = Path(labels) if labels is not None else None
        if label_file is None:
            for cand in LABEL_FILE_NAMES:
                if (root / cand).is_file():
                    label_file = root / cand
                    break
        if label_file is None:
            raise DatasetError(
                f"{root}: no label map: pass a labels file (JSON/YAML with 'modality' and 'labels') "
                f"or a preset (chaos, sabs), or put labels.json in the folder"
            )
        lab, modality, threshold, raw = read_label_map(label_file)
        name = str(raw.get("name") or root.name)
    is_phantom = bool(raw.get("synthetic", False))
    if threshold is None and preset is not None:
        threshold = BODY_THRESHOLD[modality]  # the preset's fixed value
    return DatasetSpec(
        name, root, lab, modality, None if threshold is None else float(threshold), is_phantom=is_phantom, preset=preset
    )

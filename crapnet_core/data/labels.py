"""Label maps and label volumes: the checks every reader of labels goes through.

One place for the rules, used by the dataset loader (:mod:`crapnet_core.data.volumes`) and
by ``crapnet segment`` (:mod:`crapnet_core.engine.segment`) alike:

- **label-map files** (``labels.json`` / ``labels.yaml``): a key given twice in one mapping
  is refused naming the key and its line or values (JSON and YAML parsers keep the last one
  silently; :func:`load_label_map_text`); organ names are Unicode, normalised to NFC, so the
  NFC and NFD spellings of a name (``"fígado"`` typed on different systems) are one organ
  (:func:`organ_name`);
- **label values** (:func:`check_label_values`): a label volume holds finite integer ids; a
  non-integer value is reported with its exact value (``1.000001``, not ``1``), and ids
  the label map does not know are refused;
- **the image/label pair** (:func:`pair_label`): the label must cover its image's world grid;
  another axis order or flips are reoriented without resampling
  (:func:`crapnet_core.data.geometry.match_grid`), another grid is refused saying what differs.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError
from .geometry import match_grid

log = logging.getLogger(__name__)


def organ_name(name: Any) -> str:
    """An organ name as crapnet keeps it: the text, Unicode-normalised to NFC.

    NFC and NFD spellings of one name (a precomposed ``í`` or ``i`` + combining accent) are
    then the same organ; letters of every script are kept (file names: ``paths.safe_name``).
    """
    return unicodedata.normalize("NFC", str(name))


# --------------------------------------------------------------------------- label-map files
class _DuplicateKey(Exception):
    def __init__(self, key: Any, where: str) -> None:
        super().__init__(key, where)
        self.key, self.where = key, where


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key, f"values {out[key]!r} and {value!r}")
        out[key] = value
    return out


def _yaml_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` that refuses a key given twice in one mapping (merge keys aside)."""

        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _DuplicateKey(key, f"lines {seen[key]} and {line}")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_label_map_text(text: str, path: str | os.PathLike) -> Any:
    """Parse a label-map file's text (YAML for ``.yaml``/``.yml``, else JSON).

    A key given twice in one mapping raises :class:`DatasetError` naming the file, the key
    and where (JSON: both values; YAML: both lines); other parse errors name the file too.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
        return json.loads(text, object_pairs_hook=_json_pairs)
    except _DuplicateKey as dup:
        raise DatasetError(
            f"{path}: key {dup.key!r} is given twice ({dup.where}); a label map names each organ once: "
            f"remove or rename one"
        ) from None
    except Exception as err:  # noqa: BLE001 - any parse error becomes one clear message
        raise DatasetError(f"{path}: cannot parse label-map file ({err})") from None


def organ_names(raw: Iterable[Any], source: str) -> dict[Any, str]:
    """``{key as written: NFC name}``; two keys that are one name in NFC are refused."""
    out: dict[Any, str] = {}
    seen: dict[str, Any] = {}
    for key in raw:
        name = organ_name(key)
        if name in seen:
            raise DatasetError(
                f"{source}: organ names {seen[name]!r} and {key!r} are the same name in two Unicode spellings "
                f"(NFC and NFD); keep one"
            )
        seen[name] = key
        out[key] = name
    return out


# --------------------------------------------------------------------------- label values
def exact_value(value) -> str:
    """The shortest text that reads back as ``value`` in its own dtype (``1.000001``, ``0.5``)."""
    v = np.asarray(value)[()]
    if isinstance(v, np.floating):
        return np.format_float_positional(v, unique=True, trim="-")
    return str(v)


def check_label_values(
    lab: np.ndarray, path: str | os.PathLike, known: Iterable[int] | None = None, map_name: str = ""
) -> list[int]:
    """Check a label volume's values; returns the ids present (sorted ints).

    Refused (:class:`DatasetError` naming ``path``): a non-numeric dtype, NaN/infinite voxels,
    non-integer values (listed with their exact values, with a hint when they are integers
    plus floating-point noise or a soft/interpolated mask), and, with ``known`` (the label
    map's ids and 0), values the label map does not know.
    """
    lab = np.asarray(lab)
    if np.issubdtype(lab.dtype, np.floating):
        n_bad = int(np.count_nonzero(~np.isfinite(lab)))
        if n_bad:
            raise DatasetError(f"{path}: {n_bad} NaN/infinite voxel(s) in the label volume")
        frac = lab != np.round(lab)
        if frac.any():
            bad = np.unique(lab[frac])
            shown = ", ".join(exact_value(v) for v in bad[:5])
            if bad.size > 5:
                shown += f", ... ({bad.size} distinct values)"
            off = float(np.abs(bad.astype(np.float64) - np.round(bad.astype(np.float64))).max())
            if off < 1e-3:
                hint = (
                    f"; all lie within {off:.1g} of an integer (floating-point noise from a conversion?): round "
                    f"the volume (e.g. numpy.rint) and save it with an integer data type"
                )
            else:
                hint = (
                    "; a probability or interpolated mask? threshold it and save integer ids (interpolate "
                    "labels with nearest neighbour)"
                )
            raise DatasetError(
                f"{path}: label volume holds {int(frac.sum())} voxel(s) with non-integer values ({shown}); labels "
                f"must be integer organ ids{hint}"
            )
    elif not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
        raise DatasetError(f"{path}: label data type {lab.dtype} is not numeric")
    lo, hi = (lab.min(), lab.max()) if lab.size else (0, 0)
    if lo >= 0 and hi <= 4096:  # bincount: much faster than np.unique on 10^7 voxels
        values = np.flatnonzero(np.bincount(lab.ravel().astype(np.int64, copy=False), minlength=1))
    else:
        values = np.unique(lab)
    present = [int(v) for v in values.tolist()]
    if known is not None:
        known = {0, *(int(k) for k in known)}
        unknown = [v for v in present if v not in known]
        if unknown:
            raise DatasetError(
                f"{path}: unknown label value(s) {', '.join(str(v) for v in unknown[:8])}; "
                f"the label map{f' of {map_name!r}' if map_name else ''} knows {sorted(known)}"
            )
    return present


# --------------------------------------------------------------------------- the pair
def pair_label(
    image_shape,
    image_affine,
    lab: np.ndarray,
    label_affine,
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
) -> np.ndarray:
    """The label volume on its image's array (file axis order), by the pair rule.

    Same world grid as the image up to axis order and flips: reoriented onto the image's axes
    (no resampling; a view when nothing moves). Another grid: :class:`DatasetError` naming
    the label file and what differs (shape, voxel size, axis directions, origin).
    """
    lab = np.asarray(lab)
    xform, why = match_grid(image_shape, image_affine, lab.shape, label_affine)
    if xform is None:
        raise DatasetError(
            f"{label_path}: not on the world grid of the image {Path(image_path).name} ({why}); a label may differ "
            f"from its image only in axis order and flips (it is then reoriented, without resampling)"
        )
    if np.array_equal(xform[:, 0], [0, 1, 2]) and (xform[:, 1] == 1).all():
        return lab
    from nibabel.orientations import apply_orientation

    log.info(
        "%s: stored in another axis order/flips than %s, on the same world grid: reoriented to it",
        label_path,
        Path(image_path).name,
    )
    return np.ascontiguousarray(apply_orientation(lab, xform))


__all__ = ["organ_name", "organ_names", "load_label_map_text", "check_label_values", "exact_value", "pair_label"]

"""Abdominal few-shot segmentation datasets: folders of ``image_<id>.nii.gz`` / ``label_<id>.nii.gz``.

The data layer's public dataset API in one import (``from crapnet_core.data import datasets as ds``,
as the notebooks and the report use it). The code lives in modules of one job each:

- :mod:`~crapnet_core.data.spec`: :class:`DatasetSpec`, presets, label-map files, :func:`resolve_dataset`;
- :mod:`~crapnet_core.data.scans`: the scan files of a folder and reading one scan (NIfTI, NRRD, MetaImage, DICOM);
- :mod:`~crapnet_core.data.validation`: finite voxels, image/label pairs;
- :mod:`~crapnet_core.data.volumes`: :class:`Volume`, loading and the in-process cache, :func:`restore_shape`;
- :mod:`~crapnet_core.data.intensities`: intensity profile and convention, the CT window, normalisation;
- :mod:`~crapnet_core.data.body`: the superpixel body mask and its check;
- :mod:`~crapnet_core.data.summary`: organ slices per scan, organs in no scan, the per-scan summary;
- :mod:`~crapnet_core.data.tensors`: a slice or mask as a model input tensor.

A dataset is described by a :class:`DatasetSpec` (folder, organ label map, modality, body
threshold for the superpixel body mask). Presets:

- ``chaos`` -> ``$CRAPNET_DATA_ROOT/CHAOST2``: CHAOS T2-SPIR MRI (liver 1, right kidney 2,
  left kidney 3, spleen 4);
- ``sabs``  -> ``$CRAPNET_DATA_ROOT/SABS``: Synapse/BTCV CT (spleen 1, right kidney 2,
  left kidney 3, ..., liver 6, ...; the 13 BTCV organs);
- ``phantom`` -> the synthetic stand-in generated once into crapnet's cache
  (:mod:`crapnet_core.data.phantom`); ``DatasetSpec.is_phantom`` is True for it;
- any other folder in the same layout, with a label-map file (JSON or YAML)::

      {"modality": "MR", "labels": {"liver": 1, "spleen": 2}, "body_threshold": 50}

  passed with ``labels=`` or found as ``labels.json`` / ``labels.yaml`` in the folder.

Array convention (read this before indexing)
---------------------------------------------
Every volume is brought to ONE canonical orientation and one in-plane grid for the model
by :mod:`crapnet_core.data.geometry` (the single documented place of the rule): nibabel's
orientation tools reorient the file's array to axis codes ``("A", "L", "S")`` -- rows run
posterior -> anterior, columns patient right -> left, slices inferior -> superior -- so an
axial slice is ``image[:, :, z]`` of shape ``(256, 256)`` and is exactly the slice
SSL-ALPNet's SimpleITK loader feeds its encoder for the CHAOS files (see the geometry
module for SABS). The in-plane grid is 256 x 256: 256 x 256 files are kept, the SABS
preset's 257 x 257 copy is cropped as SSL-ALPNet crops it (``img[:256, :256]`` on the
distributed files), any other size is resampled (never centre-cropped, never refused).
:attr:`Volume.geometry` records the mapping; predictions are mapped back to the file's own
grid, axis order and affine (:func:`restore_shape`, :meth:`Geometry.prob_to_canonical`)
and metrics are computed there.

Normalisation (SSL-ALPNet): MR per volume (z-score), CT with the mean and standard
deviation over the voxels of the fold's training scans (:func:`normalization_stats`).
"""

from __future__ import annotations

from ..facts import CHAOS_LABELS, ORGANS, SABS_LABELS  # study facts: organs, label maps
from . import intensities as _intensities
from . import volumes as _volumes
from .body import (
    BODY_MIN_IMAGE_SHARE,
    BODY_MIN_ORGAN_SHARE,
    body_mask,
    body_report,
    body_threshold_for,
    body_warning,
)
from .errors import DatasetError
from .geometry import (
    MODEL_SIZE,
    Geometry,
    GeometryError,
    downsample_mask,
    make_geometry,
)
from .intensities import (
    CT_WINDOW,
    apply_normalization,
    ct_window,
    intensity_convention,
    intensity_profile,
    normalization_params,
    normalization_stats,
    normalize,
)
from .scans import (
    SCAN_FORMATS,
    id_sort_key,
    image_path,
    label_path,
    read_nifti,
    read_scan,
    scan_ids,
)
from .spec import (
    BODY_THRESHOLD,
    LABEL_FILE_NAMES,
    PRESETS,
    DatasetSpec,
    read_label_map,
    resolve_dataset,
)
from .summary import organ_index, organ_slices, organs_in_no_scan, summarize
from .tensors import SLICE_SIZE, mask_tensor, slice_tensor
from .validation import check_finite, validate_pair
from .volumes import Volume, load_volume, make_volume, restore_shape


def clear_cache() -> None:
    """Forget every volume loaded and every intensity statistic computed in this process."""
    _volumes._VOLUMES.clear()
    _intensities._STATS.clear()
    _intensities._PROFILES.clear()


__all__ = [
    "CHAOS_LABELS",
    "ORGANS",
    "SABS_LABELS",
    "BODY_MIN_IMAGE_SHARE",
    "BODY_MIN_ORGAN_SHARE",
    "body_mask",
    "body_report",
    "body_threshold_for",
    "body_warning",
    "DatasetError",
    "MODEL_SIZE",
    "Geometry",
    "GeometryError",
    "downsample_mask",
    "make_geometry",
    "CT_WINDOW",
    "apply_normalization",
    "ct_window",
    "intensity_convention",
    "intensity_profile",
    "normalization_params",
    "normalization_stats",
    "normalize",
    "SCAN_FORMATS",
    "id_sort_key",
    "image_path",
    "label_path",
    "read_nifti",
    "read_scan",
    "scan_ids",
    "BODY_THRESHOLD",
    "LABEL_FILE_NAMES",
    "PRESETS",
    "DatasetSpec",
    "read_label_map",
    "resolve_dataset",
    "organ_index",
    "organ_slices",
    "organs_in_no_scan",
    "summarize",
    "SLICE_SIZE",
    "mask_tensor",
    "slice_tensor",
    "check_finite",
    "validate_pair",
    "Volume",
    "load_volume",
    "make_volume",
    "restore_shape",
    "clear_cache",
]

"""Scan geometry: one canonical orientation and one in-plane grid for the model.

This module is the ONE place that states how a scan file's voxel array becomes the
``(rows, columns, slices)`` array the model sees, and how a prediction goes back to the
file. Every loader (dataset folders, ``crapnet segment``, ``crapnet data summary``) goes
through :func:`make_geometry`; evaluation and ``segment`` write back through
:meth:`Geometry.from_canonical`.

Orientation (the rule)
----------------------
Files are read with nibabel (array axes ``(i, j, k)``, affine voxel -> RAS+ world mm).
Every volume is reoriented with nibabel's orientation tools (``io_orientation``,
``ornt_transform``, ``apply_orientation``) to :data:`CANONICAL_AXCODES` = ``("A", "L", "S")``:

- array axis 0 (**rows** of a slice) runs posterior -> anterior,
- array axis 1 (**columns**) runs patient right -> patient left,
- array axis 2 (**slices**) runs inferior -> superior, so an axial slice is ``image[:, :, z]``.

Why this one: SSL-ALPNet (the reference code) reads NIfTI with SimpleITK
(``GetArrayFromImage`` -> ``(k, j, i)``) and transposes to ``(j, i, k)``, i.e. it feeds the
encoder the *transposed* nibabel slice ``arr[:, :, z].T``. The CHAOS T2-SPIR files are stored
LAS (affine ``diag(-1.25, 1.25, 7.7)``), so their transposed slices are exactly the
``("A", "L", "S")`` array: crapnet now feeds the encoder the CHAOS slices SSL-ALPNet feeds it
(on screen with ``imshow``: spine at the top, patient's left on the image's right).
The Synapse/SABS copy is stored with affine ``diag(-s, -s, 3)`` (LPS, origin 0, no sform):
under one canonical orientation its rows are flipped relative to SSL-ALPNet's view (its
columns and slices agree). The two files cannot both match SSL-ALPNet under one canonical
orientation; CHAOS, whose affine is real DICOM geometry and whose anatomy agrees with it,
decides. (The SABS header's j direction contradicts its own anatomy: SSL-ALPNet's view of
SABS shows the spine at the top, as CHAOS, only because the header's y sign is off.)

Oblique affines are reoriented to the closest canonical axes (no interpolation); the
affine of the canonical array is ``affine @ inv_ornt_aff(...)``, so world coordinates of
every voxel are unchanged. Hence the same scan saved in any axis order or with any flips
gives the same canonical array, the same prediction in world space and the same Dice.

Image and label: the same rule for the pair
-------------------------------------------
A label volume need not be stored like its image: a label in another axis order or with
other flips is accepted when it covers the same world grid (the same voxel centres, up to
header round-off of :data:`PAIR_ATOL_MM`): it is reoriented onto the image's array with the
same nibabel tools, without any resampling (:func:`match_grid`). A label on another grid
(other voxel size, origin, extent or rotation) is refused, saying which of those differs.

Thin stacks
-----------
The affine decides which file axis becomes the slice axis. For a stack of few thick slices
(cardiac short-axis: 13-19 slices) stored so that its slice axis is not the one closest to
the body's superior axis, the model then slices across it, and its few voxels are stretched
to 256 rows or columns; :func:`make_geometry` warns when an in-plane axis is stretched by
more than :data:`THIN_STACK_STRETCH` (naming the file, the axis and the factor).

In-plane grid
-------------
The model grid is :data:`MODEL_SIZE` x :data:`MODEL_SIZE` (256, paper Sec. 4.3) in-plane, the
slices are kept. From the canonical file-resolution grid ``(H, W, Z)``:

- ``identity``: ``H = W = 256`` (CHAOS, the phantom);
- ``crop``: the SABS preset's documented rule for its 257 x 257 copy, SSL-ALPNet's
  ``img[:256, :256]`` on the files *as distributed* (LPS): keep file voxels ``i, j < 256``,
  i.e. drop the most posterior row and the most left column (stated in canonical terms so
  it holds for any re-saved orientation);
- ``resample``: any other size, larger or smaller (512 x 512 Synapse, 384 x 384, 200 x 200,
  non-square), is resampled to 256 x 256 as SSL-ALPNet's preprocessing does: images
  bilinearly (with anti-aliasing when shrinking, ``torch.nn.functional.interpolate``),
  labels by nearest neighbour. Nothing is centre-cropped.

Predictions are mapped back to the file's own grid (:meth:`Geometry.prob_to_canonical`:
class probabilities bilinearly to ``(H, W)``, zero outside a preset crop) and metrics are
computed there, against the file's own labels, with the file's voxel spacing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Canonical orientation of the model's arrays (nibabel axis codes, see the module doc).
CANONICAL_AXCODES: tuple[str, str, str] = ("A", "L", "S")

#: In-plane size of the model grid (paper Sec. 4.3: images are scaled to 3 x 256 x 256).
MODEL_SIZE = 256

#: Version of the scan -> model-input mapping, part of every run's config hash
#: (:meth:`ExperimentConfig.hashed_dict`). 2: canonical (A, L, S) orientation, in-plane
#: resampling, file-grid metrics, area-pooled masks (1: file voxel order, centre crop).
DATA_PIPELINE_VERSION = 2

#: In-plane rules of the presets: name -> (file in-plane shape, axcodes of the distributed
#: files, kept voxel ranges on their axes i, j). SSL-ALPNet crops SABS ``img[:256, :256]``.
PRESET_CROPS: dict[str, tuple[tuple[int, int], tuple[str, str, str], tuple[slice, slice]]] = {
    "sabs": ((257, 257), ("L", "P", "S"), (slice(0, 256), slice(0, 256))),
}


#: An in-plane axis stretched by more than this factor to reach the model grid triggers the
#: thin-stack warning of :func:`make_geometry` (e.g. 15 slices of a short-axis stack -> 256).
THIN_STACK_STRETCH = 4.0

#: Largest difference (mm) between the image's and the (reoriented) label's affine entries that
#: still counts as the same world grid (header round-off).
PAIR_ATOL_MM = 1e-3


class GeometryError(ValueError):
    """An affine or shape that cannot be oriented (the message names the file)."""


def _ornt(axcodes) -> np.ndarray:
    from nibabel.orientations import axcodes2ornt

    return axcodes2ornt(tuple(axcodes))


def canonical_ornt() -> np.ndarray:
    """The nibabel orientation array of :data:`CANONICAL_AXCODES`."""
    return _ornt(CANONICAL_AXCODES)


@dataclass(frozen=True)
class Geometry:
    """How one file's array maps to the model grid and back.

    - ``file_shape`` / ``file_affine`` / ``file_zooms``: the file's array shape, 4 x 4
      voxel -> world (RAS+, mm) matrix and voxel sizes (mm);
    - ``to_canon`` / ``from_canon``: nibabel orientation transforms (file <-> canonical);
    - ``canon_shape`` / ``canon_affine`` / ``canon_spacing``: the canonical array at the
      file's resolution (same voxels, reordered);
    - ``inplane``: ``"identity"``, ``"crop"`` or ``"resample"``; ``crop``: the kept
      ``(rows, columns)`` of the canonical grid for ``"crop"``;
    - ``model_shape`` / ``model_affine`` / ``model_spacing``: the model grid
      ``(256, 256, Z)``.
    """

    file_shape: tuple[int, int, int]
    file_affine: np.ndarray
    file_zooms: tuple[float, float, float]
    to_canon: np.ndarray
    from_canon: np.ndarray
    canon_shape: tuple[int, int, int]
    canon_affine: np.ndarray
    canon_spacing: tuple[float, float, float]
    inplane: str
    crop: tuple[slice, slice] | None
    model_shape: tuple[int, int, int]
    model_affine: np.ndarray
    model_spacing: tuple[float, float, float]
    source: str = field(default="", compare=False)

    # ------------------------------------------------------------------ orientation
    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """File-order array ``file_shape`` -> canonical array ``canon_shape`` (a view when possible)."""
        from nibabel.orientations import apply_orientation

        array = np.asarray(array)
        if tuple(array.shape[:3]) != self.file_shape:
            raise ValueError(f"to_canonical: array shape {array.shape} is not the file shape {self.file_shape}")
        return apply_orientation(array, self.to_canon)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Canonical array ``canon_shape`` -> the file's own axis order and directions."""
        from nibabel.orientations import apply_orientation

        array = np.asarray(array)
        if tuple(array.shape[:3]) != self.canon_shape:
            raise ValueError(f"from_canonical: array shape {array.shape} is not the canonical shape {self.canon_shape}")
        return np.ascontiguousarray(apply_orientation(array, self.from_canon))

    # ------------------------------------------------------------------ in-plane grid
    def image_to_model(self, array: np.ndarray) -> np.ndarray:
        """File-order image -> float32 model grid ``(256, 256, Z)`` (reorient, then crop/resample)."""
        canon = np.asarray(self.to_canonical(array), dtype=np.float32)
        return np.ascontiguousarray(self._inplane(canon, order=1), dtype=np.float32)

    def label_to_model(self, array: np.ndarray) -> np.ndarray:
        """File-order label volume -> model grid ``(256, 256, Z)`` (nearest neighbour), dtype kept."""
        canon = self.to_canonical(array)
        return np.ascontiguousarray(self._inplane(canon, order=0))

    def _inplane(self, canon: np.ndarray, order: int) -> np.ndarray:
        if self.inplane == "identity":
            return canon
        if self.inplane == "crop":
            return canon[self.crop[0], self.crop[1], :]
        return resize_inplane(canon, (MODEL_SIZE, MODEL_SIZE), order=order)

    def mask_to_model(self, mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """A binary file-order mask -> bool model grid; small structures survive shrinking.

        Per slice :func:`downsample_mask` (area pooling; a structure below half a model voxel
        keeps its best-covered voxel(s)). Returns the mask and the slices where that fallback
        was needed.
        """
        canon = np.asarray(self.to_canonical(np.asarray(mask) > 0))
        if self.inplane != "resample":
            return np.ascontiguousarray(self._inplane(canon, order=0)), []
        out = np.zeros(self.model_shape, dtype=bool)
        below = []
        for z in np.flatnonzero(canon.any(axis=(0, 1))):
            m, small = downsample_mask(canon[:, :, z], (MODEL_SIZE, MODEL_SIZE))
            out[:, :, z] = m.numpy().astype(bool)
            if small:
                below.append(int(z))
        return out, below

    def model_label_to_canonical(self, array: np.ndarray, fill: Any = 0) -> np.ndarray:
        """A label-like model-grid array ``(256, 256, Z)`` -> canonical file-resolution grid.

        ``crop``: placed back, ``fill`` outside; ``resample``: nearest neighbour.
        """
        array = np.asarray(array)
        if array.shape != self.model_shape:
            raise ValueError(
                f"restore_shape: array has shape {array.shape}, expected the model grid {self.model_shape}"
            )
        if self.inplane == "identity":
            return array
        if self.inplane == "crop":
            out = np.full(self.canon_shape, fill, dtype=array.dtype)
            out[self.crop[0], self.crop[1], :] = array
            return out
        return resize_inplane(array, self.canon_shape[:2], order=0)

    def prob_to_canonical(self, prob):
        """Model-input probabilities, torch ``(B, C, S, S)`` -> ``(B, C, H, W)`` on the canonical file grid.

        Bilinear (``align_corners=False``) to the grid the model slice covers: the whole file
        slice (identity/resample) or the crop (then zero elsewhere: outside the crop the
        model predicts nothing, as the preset documents).
        """
        import torch
        import torch.nn.functional as F

        height, width = self.canon_shape[:2]
        if self.inplane == "crop":
            inner = (
                F.interpolate(prob, size=(MODEL_SIZE, MODEL_SIZE), mode="bilinear", align_corners=False)
                if prob.shape[-2:] != (MODEL_SIZE, MODEL_SIZE)
                else prob
            )
            out = torch.zeros(*prob.shape[:2], height, width, dtype=prob.dtype, device=prob.device)
            out[:, :, self.crop[0], self.crop[1]] = inner
            return out
        if prob.shape[-2:] != (height, width):
            prob = F.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False)
        return prob


def resize_inplane(array: np.ndarray, size: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resize the first two axes of ``(H, W, Z)`` to ``size``; ``order`` 1 bilinear, 0 nearest.

    torch's ``interpolate`` (bilinear, ``align_corners=False``, ``antialias=True`` when
    shrinking; ``nearest-exact`` for labels) slice by slice: pixel-area geometry, so the
    model grid covers exactly the file slice's extent. Labels keep their dtype.
    """
    import torch
    import torch.nn.functional as F

    array = np.asarray(array)
    h, w = array.shape[:2]
    size = (int(size[0]), int(size[1]))
    if (h, w) == size:
        return array
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, 2, 0)))  # (Z, H, W)
    if order == 0:
        src = t.to(torch.float32) if t.dtype != torch.float64 else t
        out = F.interpolate(src[:, None], size=size, mode="nearest-exact")[:, 0]
        res = out.numpy().astype(array.dtype, copy=False)
    else:
        shrink = size[0] < h or size[1] < w
        out = F.interpolate(
            t.to(torch.float32)[:, None], size=size, mode="bilinear", align_corners=False, antialias=shrink
        )[:, 0]
        res = out.numpy()
    return np.ascontiguousarray(np.moveaxis(res, 0, 2))


def make_geometry(shape, affine, zooms=None, preset: str | None = None, source: str = "") -> Geometry:
    """The :class:`Geometry` of a file with array ``shape`` (3D) and ``affine`` (4 x 4).

    ``preset`` selects a preset's documented in-plane rule (:data:`PRESET_CROPS`); any other
    in-plane size than 256 x 256 is resampled. ``source`` (the file) names errors.
    Raises :class:`GeometryError` for a non-3D shape or a singular / non-finite affine.
    """
    from nibabel.affines import voxel_sizes
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    shape = tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise GeometryError(f"{source}: expected a 3D volume, got shape {shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise GeometryError(f"{source}: the voxel-to-world affine is not a finite 4 x 4 matrix")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise GeometryError(f"{source}: the voxel-to-world affine is singular; cannot tell the scan's orientation")
    file_ornt = io_orientation(affine)
    if np.isnan(file_ornt).any():
        raise GeometryError(f"{source}: cannot tell the orientation of the voxel axes from the affine")
    target = canonical_ornt()
    to_canon = ornt_transform(file_ornt, target)
    from_canon = ornt_transform(target, file_ornt)
    canon_affine = affine @ inv_ornt_aff(to_canon, shape)
    canon_shape = tuple(int(shape[int(a)]) for a in np.argsort(to_canon[:, 0]))
    canon_spacing = tuple(float(s) for s in voxel_sizes(canon_affine))
    if zooms is None:
        file_zooms = tuple(float(s) for s in voxel_sizes(affine))
    else:
        file_zooms = tuple(float(z) for z in tuple(zooms)[:3])
    h, w, z = canon_shape
    crop = None
    if (h, w) == (MODEL_SIZE, MODEL_SIZE):
        inplane = "identity"
    elif preset in PRESET_CROPS and (h, w) == PRESET_CROPS[preset][0]:
        inplane = "crop"
        crop = _preset_crop_canonical(preset, (h, w))
    else:
        inplane = "resample"
    if inplane == "resample":
        scale = np.diag([h / MODEL_SIZE, w / MODEL_SIZE, 1.0, 1.0])
        # pixel-area geometry: model voxel centre r maps to canonical (r + 0.5) * h / 256 - 0.5
        shift = np.eye(4)
        shift[:2, 3] = [0.5 * h / MODEL_SIZE - 0.5, 0.5 * w / MODEL_SIZE - 0.5]
        model_affine = canon_affine @ shift @ scale
    elif inplane == "crop":
        offset = np.eye(4)
        offset[:2, 3] = [crop[0].start, crop[1].start]
        model_affine = canon_affine @ offset
    else:
        model_affine = canon_affine
    model_spacing = tuple(float(s) for s in voxel_sizes(model_affine))
    _warn_thin_stack(shape, canon_shape, to_canon, canon_spacing, source)
    return Geometry(
        file_shape=shape,
        file_affine=affine,
        file_zooms=file_zooms,
        to_canon=to_canon,
        from_canon=from_canon,
        canon_shape=canon_shape,
        canon_affine=canon_affine,
        canon_spacing=canon_spacing,
        inplane=inplane,
        crop=crop,
        model_shape=(MODEL_SIZE, MODEL_SIZE, z),
        model_affine=model_affine,
        model_spacing=model_spacing,
        source=str(source),
    )


def _warn_thin_stack(shape, canon_shape, to_canon, canon_spacing, source: str) -> None:
    """Warn when an in-plane axis of the model grid is stretched by more than THIN_STACK_STRETCH."""
    import warnings

    for axis in (0, 1):
        n = int(canon_shape[axis])
        stretch = MODEL_SIZE / max(1, n)
        if stretch > THIN_STACK_STRETCH:
            file_axis = int(np.flatnonzero(to_canon[:, 0] == axis)[0])
            slice_axis = int(np.flatnonzero(to_canon[:, 0] == 2)[0])
            warnings.warn(
                f"{source}: file axis {file_axis} ({n} voxels of {canon_spacing[axis]:.3g} mm) becomes an in-plane "
                f"axis of the model grid and is stretched {stretch:.1f}x to {MODEL_SIZE} "
                f"{'rows' if axis == 0 else 'columns'}, because the affine makes file axis {slice_axis} "
                f"({shape[slice_axis]} voxels) the inferior->superior slice axis; a thin stack (e.g. cardiac "
                f"short-axis) is then resliced across its slices, and organs segmented on it come out too large. "
                f"Check the scan's orientation (crapnet data summary --scan) or resample it first",
                stacklevel=3,
            )
            return


def _orientable(affine: np.ndarray) -> bool:
    return affine.shape == (4, 4) and bool(np.isfinite(affine).all()) and abs(np.linalg.det(affine[:3, :3])) >= 1e-12


def match_grid(ref_shape, ref_affine, shape, affine, atol: float = PAIR_ATOL_MM) -> tuple[np.ndarray | None, str]:
    """How an array of ``shape``/``affine`` lies on the grid of ``ref_shape``/``ref_affine``.

    Returns ``(transform, "")`` when both describe the same world grid up to axis order and
    flips: ``transform`` is the nibabel orientation transform that brings the array onto the
    reference's axes (``apply_orientation(array, transform)``; identity when they agree), no
    resampling. Otherwise ``(None, why)``: which of shape, voxel size, axis directions or
    origin differs, with the values (mm, degrees).
    """
    from nibabel.affines import voxel_sizes
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    ref_shape = tuple(int(n) for n in ref_shape)
    shape = tuple(int(n) for n in shape)
    ref_affine = np.asarray(ref_affine, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    if len(shape) != 3 or len(ref_shape) != 3:
        return None, f"shape {shape} vs the image's {ref_shape}"
    identity = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)
    if not (_orientable(ref_affine) and _orientable(affine)):
        # no orientation to compare (make_geometry then says so, naming the image): the pair must agree as stored
        if (
            shape == ref_shape
            and ref_affine.shape == affine.shape
            and np.allclose(affine, ref_affine, atol=atol, equal_nan=True)
        ):
            return identity, ""
        if shape != ref_shape:
            return None, f"shape {shape} differs from the image's {ref_shape}"
        return None, "the affines differ and one of them gives no orientation (singular or not finite)"
    try:
        xform = ornt_transform(io_orientation(affine), io_orientation(ref_affine))
    except ValueError:
        return None, "the axes of one affine cannot be matched to the other's"
    moved_shape = [0, 0, 0]
    for src, (dst, _flip) in enumerate(xform):
        moved_shape[int(dst)] = shape[src]
    moved = affine @ inv_ornt_aff(xform, shape)
    reordered = not np.array_equal(xform, identity)
    how = (
        f" (its axes {''.join(axcodes(affine))} reoriented to the image's {''.join(axcodes(ref_affine))})"
        if reordered
        else ""
    )
    if tuple(moved_shape) != ref_shape:
        if reordered:
            return None, f"shape {shape}{how} gives {tuple(moved_shape)}, the image has {ref_shape}"
        return None, f"shape {shape} differs from the image's {ref_shape}"
    if np.allclose(moved, ref_affine, atol=atol):
        return xform, ""
    parts = []
    vs_a, vs_b = voxel_sizes(moved), voxel_sizes(ref_affine)
    if not np.allclose(vs_a, vs_b, atol=atol):
        parts.append(f"voxel size {'x'.join(f'{v:.4g}' for v in vs_a)} vs {'x'.join(f'{v:.4g}' for v in vs_b)} mm")
    dirs_a = moved[:3, :3] / np.maximum(vs_a, 1e-12)
    dirs_b = ref_affine[:3, :3] / np.maximum(vs_b, 1e-12)
    cosines = np.clip(np.sum(dirs_a * dirs_b, axis=0), -1.0, 1.0)
    angle = float(np.degrees(np.arccos(cosines)).max())
    if angle > 1e-3:
        parts.append(f"axis directions differ by up to {angle:.3g} degrees")
    shift = float(np.linalg.norm(moved[:3, 3] - ref_affine[:3, 3]))
    if shift > atol:
        parts.append(f"first voxel centres {shift:.4g} mm apart")
    detail = "; ".join(parts) or f"max affine difference {np.abs(moved - ref_affine).max():.4g} mm"
    return None, f"the affines differ{how}: {detail}"


def _preset_crop_canonical(preset: str, hw: tuple[int, int]) -> tuple[slice, slice]:
    """A preset's crop (given on its distributed files' axes) as rows/columns of the canonical grid."""
    from nibabel.orientations import ornt_transform

    file_shape, axcodes, keep = PRESET_CROPS[preset]
    xform = ornt_transform(_ornt(axcodes), canonical_ornt())
    out: list[slice | None] = [None, None]
    for src_axis in range(2):
        dst_axis, flip = int(xform[src_axis, 0]), int(xform[src_axis, 1])
        n = hw[dst_axis]
        s = keep[src_axis]
        out[dst_axis] = s if flip == 1 else slice(n - s.stop, n - s.start)
    return out[0], out[1]  # type: ignore[return-value]


def axcodes(affine) -> tuple[str, ...]:
    """nibabel's axis codes of an affine (e.g. ``("L", "A", "S")`` for CHAOS)."""
    import nibabel as nib

    return tuple(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def downsample_mask(mask2d, size: tuple[int, int]):
    """A binary ``(H, W)`` mask on a smaller grid so that small structures survive.

    Each output cell takes the share of its area the structure covers (area pooling,
    ``adaptive_avg_pool2d``); cells covered at least half are foreground. When that leaves
    nothing although the input has foreground (a structure smaller than half a cell), the
    best-covered cell(s) are kept instead (max pooling of the shares): a support annotation
    never silently disappears. Growing (``size`` >= input) uses nearest neighbour.
    Returns ``(int64 tensor (h, w), below_resolution: bool)``.
    """
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(np.asarray(mask2d) > 0))
    h, w = int(size[0]), int(size[1])
    if tuple(t.shape) == (h, w):
        return t.long(), False
    if h >= t.shape[0] and w >= t.shape[1]:
        return F.interpolate(t[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0].long(), False
    share = F.adaptive_avg_pool2d(t[None, None].float(), (h, w))[0, 0]
    out = share >= 0.5
    below = False
    if not bool(out.any()) and bool(t.any()):
        out = share >= share.max()
        below = True
    return out.long(), below


__all__ = [
    "CANONICAL_AXCODES",
    "MODEL_SIZE",
    "PRESET_CROPS",
    "Geometry",
    "GeometryError",
    "make_geometry",
    "resize_inplane",
    "canonical_ornt",
    "axcodes",
    "downsample_mask",
    "match_grid",
    "THIN_STACK_STRETCH",
    "PAIR_ATOL_MM",
]

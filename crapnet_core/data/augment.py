"""Seeded augmentations of SSL-ALPNet's self-supervised episodes (paper Sec. 3.7).

The query of an episode is ``T_g(T_gamma(I))`` and its pseudo-label ``T_g(Y(l^p))`` (paper
Sec. 3.7, the target of Eq. 18): a gamma transform ``T_gamma`` on the image only, then a
geometric transform ``T_g`` (affine + elastic) applied identically to image and mask.
Parameters are SSL-ALPNet's (``sabs_aug``, used for both MR and CT):

- affine: rotation U(-5, 5) deg, shift U(-5, 5) px per axis, shear U(-5, 5) deg (one axis),
  isotropic scale U(0.9, 1.2), all about the slice centre;
- elastic (Simard et al. 2003): displacement = Gaussian-smoothed (sigma 5 px) U(-1, 1)
  noise times alpha = 10 px;
- gamma: U(0.5, 1.5) on the image rescaled to its own [min, max].

Implementation (MONAI building blocks + one ``grid_sample``): the affine matrix is composed
with MONAI's ``create_rotate`` / ``create_shear`` / ``create_scale`` / ``create_translate``,
the transform is a MONAI ``Randomizable`` (seeded with ``set_random_state``) and the gamma
uses the formula of MONAI's ``AdjustContrast`` in numpy (:func:`adjust_gamma`). The
affine and the elastic displacement form ONE dense sampling grid that a single
``torch.nn.functional.grid_sample`` applies (bilinear for the image, nearest for the mask),
so image and mask see exactly the same geometry, and the resize to the training size
happens in the same interpolation. Why not MONAI's ``Rand2DElasticd`` / ``Resample``:
(1) its scale range is symmetric about 1 and sampled per axis (SSL-ALPNet: isotropic
U(0.9, 1.2)) and its elastic field is control-point based rather than alpha/sigma;
(2) measured on the 2-core CI machine under load, MONAI's ``Resample`` path (elementwise
torch ops on 256 x 256 grids, which torch runs on its intra-op thread pool) gave 5
episodes/s with 2 torch threads against 54 with 1 thread; the grid here is built in
numpy/scipy (single-threaded) and torch only runs ``grid_sample`` on one image, which does
not use the thread pool: about 100 episodes/s on the same loaded machine, whatever the
number of torch threads, so episode generation does not fight a training step for threads.

Small, documented differences from SSL-ALPNet: the shear is about the slice centre
(SSL-ALPNet's shears about the corner, which also shifts the image); one bilinear
interpolation of the image instead of a cubic affine followed by a linear elastic warp;
the mask is warped with nearest neighbour (SSL-ALPNet warps a one-hot mask with the
image's interpolation and rounds); the image is padded by replicating its border
(SSL-ALPNet pads with 0, i.e. the mean intensity after normalisation, brighter than the
air around the body) while the mask is padded with 0.

Randomness: MONAI style (``Randomizable.set_random_state``); a given seed gives the same
output, so an episode depends only on its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Randomizable
from monai.transforms.utils import create_rotate, create_scale, create_shear, create_translate


@dataclass(frozen=True)
class AugmentParams:
    """SSL-ALPNet's ``sabs_aug`` ranges (degrees, pixels of the 256 grid, factors)."""

    rotate_deg: float = 5.0
    shift_px: float = 5.0
    shear_deg: float = 5.0
    scale: tuple[float, float] = (0.9, 1.2)
    elastic_alpha: float = 10.0
    elastic_sigma: float = 5.0
    gamma: tuple[float, float] = (0.5, 1.5)


def smooth_noise(rng: np.random.RandomState, shape: tuple[int, int], sigma: float, channels: int = 2) -> np.ndarray:
    """``channels`` fields of U(-1, 1) noise smoothed by a Gaussian (zeros outside, as SSL-ALPNet), float32 ``(C, H, W)``."""
    from scipy.ndimage import gaussian_filter

    noise = rng.uniform(-1.0, 1.0, size=(channels, *shape)).astype(np.float32)
    if sigma <= 0:
        return noise
    # truncate=2: a kernel radius of 2 sigma, as SSL-ALPNet's cv2.GaussianBlur(ksize=int(4 sigma) | 1)
    return gaussian_filter(noise, sigma=(0, sigma, sigma), mode="constant", cval=0.0, truncate=2.0)


def adjust_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """``T_gamma``: ``min + range * ((x - min) / range) ** gamma`` on the slice's own range.

    The formula of MONAI's ``AdjustContrast`` (and SSL-ALPNet's gamma transform), written in
    numpy because MONAI converts to torch and runs 5 elementwise ops on the intra-op
    thread pool (measured: the main cost of an episode under CPU contention).
    """
    image = np.asarray(image, dtype=np.float32)
    lo = float(image.min())
    rng = float(image.max()) - lo
    if rng <= 0:
        return image.copy()
    return (
        np.power((image - lo) / np.float32(rng + 1e-7), np.float32(gamma)) * np.float32(rng) + np.float32(lo)
    ).astype(np.float32)


class SSLAugment(Randomizable):
    """Gamma + affine + elastic augmentation of an (image, mask) slice pair, seeded.

    ``__call__({"image": (H, W) float, "mask": (H, W) int})`` returns a dict with
    ``image`` torch float32 ``(size, size)`` and ``mask`` torch int64 ``(size, size)``
    (``size`` defaults to the input size; resizing happens in the same interpolation).
    """

    def __init__(
        self,
        params: AugmentParams = AugmentParams(),
        size: int | None = None,
        gamma: bool = True,
        geometry: bool = True,
    ) -> None:
        self.params = params
        self.size = size
        self.use_gamma = gamma
        self.use_geometry = geometry
        self.set_random_state(seed=0)

    # -- randomness
    def randomize(self, data=None) -> None:
        p = self.params
        self._gamma = float(self.R.uniform(*p.gamma))
        self._rot = math.radians(float(self.R.uniform(-p.rotate_deg, p.rotate_deg)))
        self._shift = self.R.uniform(-p.shift_px, p.shift_px, size=2).astype(np.float64)
        self._shear = math.tan(math.radians(float(self.R.uniform(-p.shear_deg, p.shear_deg))))
        self._scale = float(self.R.uniform(*p.scale))
        self._elastic_seed = int(self.R.randint(0, 2**31 - 1))

    def forward_matrix(self) -> np.ndarray:
        """3 x 3 forward affine in centred pixel coordinates: scale . shear . shift . rotate."""
        rot = create_rotate(2, self._rot)
        shift = create_translate(2, self._shift.tolist())
        shear = create_shear(2, (self._shear, 0.0))
        scale = create_scale(2, (self._scale, self._scale))
        return np.asarray(scale @ shear @ shift @ rot, dtype=np.float64)

    def sampling_grid(self, in_shape: tuple[int, int], out_size: int) -> np.ndarray:
        """Centred input coordinates ``(2, S, S)`` (float64) to sample for each output pixel.

        Output pixel ``q`` sits at input position ``(q + 0.5) * H / S - 0.5`` (a bilinear
        resize with ``align_corners=False``); the elastic displacement ``d`` is added in the
        output frame, then the inverse affine maps to the input: ``src = M^-1 (p + d)``.
        Coordinates are centred: 0 is the middle of the input slice, in input pixels.
        """
        h, w = in_shape
        s = out_size
        qi = (np.arange(s) + 0.5) * (h / s) - 0.5 - (h - 1) / 2
        qj = (np.arange(s) + 0.5) * (w / s) - 0.5 - (w - 1) / 2
        pts = np.stack(np.meshgrid(qi, qj, indexing="ij"))  # (2, S, S)
        if self.use_geometry:
            p = self.params
            if p.elastic_alpha > 0:
                rs = np.random.RandomState(self._elastic_seed)
                disp = smooth_noise(rs, (s, s), p.elastic_sigma * s / h)
                # smoothing white noise on a coarser grid raises its std by h/s: compensate
                pts = pts + disp * (p.elastic_alpha * s / h)
            inv = np.linalg.inv(self.forward_matrix())
            pts = np.einsum("ab,bij->aij", inv[:2, :2], pts) + inv[:2, 2, None, None]
        return pts

    def _warp(self, arr: np.ndarray, grid: torch.Tensor, mode: str, padding: str) -> np.ndarray:
        out = torch.nn.functional.grid_sample(
            torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None],
            grid,
            mode=mode,
            padding_mode=padding,
            align_corners=False,
        )
        return out[0, 0].numpy()

    def __call__(self, data: dict, randomize: bool = True) -> dict:
        if randomize:
            self.randomize()
        image = np.asarray(data["image"], dtype=np.float32)
        mask = np.asarray(data["mask"])
        if image.ndim != 2 or image.shape != mask.shape:
            raise ValueError(f"SSLAugment: image {image.shape} and mask {mask.shape} must be equal 2D shapes")
        h, w = image.shape
        size = self.size or h
        if self.use_gamma:  # T_gamma (image only)
            image = adjust_gamma(image, self._gamma)
        pts = self.sampling_grid((h, w), size)
        # centred pixel coordinates -> grid_sample's [-1, 1] (align_corners=False), (x=col, y=row) order
        norm = np.empty((size, size, 2), dtype=np.float32)
        norm[..., 0] = (pts[1] + (w - 1) / 2 + 0.5) * (2.0 / w) - 1.0
        norm[..., 1] = (pts[0] + (h - 1) / 2 + 0.5) * (2.0 / h) - 1.0
        grid = torch.from_numpy(norm)[None]
        img_out = self._warp(image, grid, "bilinear", "border")
        mask_out = self._warp(mask, grid, "nearest", "zeros")
        out = dict(data)
        out["image"] = torch.from_numpy(np.ascontiguousarray(img_out, dtype=np.float32))
        out["mask"] = torch.from_numpy(np.rint(mask_out).astype(np.int64))
        return out

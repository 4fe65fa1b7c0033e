"""Prototype geometry: the one rule that sizes every method's local-prototype grid.

Why. A local prototype summarises one *cell* of the support image (Sec. 3.6, Eq. 14-15).
In the paper (256 x 256 input, output stride 8, 32 x 32 features) the cells are

========================  ==================  =====================  ==========================
method / phase            grid on 32 x 32     cell side, 256-px      CHAOS (1.25 mm/px)
========================  ==================  =====================  ==========================
CRAPNet (CARAFE++ sigma)  sigma = 4 -> 8 x 8  32 px (1/8 of side)    40 mm
SSL-ALPNet training       pool 4 -> 8 x 8     32 px                  40 mm
SSL-ALPNet test           pool 2 -> 16 x 16   16 px                  20 mm
========================  ==================  =====================  ==========================

(SSL-ALPNet's reference pools 4 x 4 feature pixels in training and 2 x 2 at test.) A reduced
profile that shrinks the input but keeps sigma and the pools (e.g. ``lite``'s old 96 px with
sigma 4: 12 x 12 features, a 3 x 3 grid, 107 mm cells) changes *what a prototype is*: no
kidney or spleen fills a 107 mm cell to the 0.95 rule, so CRAPNet keeps only its global
foreground prototype. The rule below keeps the cells' physical size instead.

Rule (:func:`prototype_geometry`). Slices of side L (256 for CHAOS) are resized to the input
side S, the encoder has output stride 8 (``encoders.OUTPUT_STRIDE``), so a cell of ``k``
feature pixels covers ``k * 8 * L / S`` pixels of the original slice. For each paper cell
(32 px for CARAFE++ and ALPNet training, 16 px for ALPNet at test, on the 256-px slice) the
rule picks the integer ``k >= 1`` whose cell is closest to the paper's in ratio (|log ratio|
minimal; ties go to the finer cell), i.e. ``k ~ paper_cell * S / (8 * 256)``. The grid is
``ceil(S / 8 / k)`` per side. A cell is *valid* when its ratio to the paper's lies within
``[1 / 1.5, 1.5]`` (:data:`TOLERANCE`).

Where it is applied. :func:`crapnet_core.engine.experiment.make_config` derives ``model.carafe_factor``,
``model.alpnet_pool_train`` and ``model.alpnet_pool_test`` with this rule from the final
``data.input_size`` of every profile (so ``--input-size`` moves the grid with it), unless a
field is set explicitly with ``--set model.<field>=...``. Then
:func:`check_geometry` refuses (``ValueError`` naming the field, the cell and the allowed
range) any configuration whose cells, for the prototypes the method actually uses, are outside
the factor; ``--set model.free_geometry=true`` accepts them on purpose (an ablation of the
grid). ``free_geometry`` does not change what is computed and is left out of the config hash.
The ``smoke`` profile (64 px, plumbing only) sets it: at 64 px one feature pixel is 32 px of
the 256-px slice, twice SSL-ALPNet's 16-px test cell, and no integer pool can be finer.

Results at the profiles' sizes (``python -m crapnet_core.models.prototype_grid 64 96 128 256``; the table on
book/method.md is its output): 96 px -> sigma 2 (6 x 6, 43 px = 53 mm cells, x 1.33), ALPNet
pools 2 / 1 (6 x 6 / 12 x 12, x 1.33 each); 128 px -> sigma 2, pools 2 / 1 (the paper's
8 x 8 / 16 x 16 grids exactly); 256 px -> the paper's 4 / 4 / 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .encoders import OUTPUT_STRIDE

#: Side (px) of the slices the paper's network sees (Sec. 4.3) and of the CHAOS/SABS slices.
PAPER_INPUT = 256
#: Paper cell sides in px of the 256-px slice: sigma x stride = 4 x 8 for CARAFE++ (Eq. 14),
#: SSL-ALPNet's pools 4 (training) and 2 (test) x stride 8.
PAPER_CELL_PX = {"carafe": 4 * OUTPUT_STRIDE, "avgpool_train": 4 * OUTPUT_STRIDE, "avgpool_test": 2 * OUTPUT_STRIDE}
#: A cell may be at most this factor larger or smaller than the paper's.
TOLERANCE = 1.5
#: Config field holding the cell (in feature pixels) of each kind of grid.
FIELDS = {"carafe": "carafe_factor", "avgpool_train": "alpnet_pool_train", "avgpool_test": "alpnet_pool_test"}
#: Slice side (px) and in-plane spacing range (mm/px) of the two datasets (their READMEs).
DATASET_PIXELS = {"CHAOS": (256, (1.25, 1.25)), "Synapse": (257, (1.17, 1.30))}


@dataclass(frozen=True)
class PrototypeGeometry:
    """Cells in feature pixels: CARAFE++ sigma and SSL-ALPNet's training / test pools."""

    carafe_factor: int
    alpnet_pool_train: int
    alpnet_pool_test: int

    def as_overrides(self) -> dict[str, int]:
        return {
            "carafe_factor": self.carafe_factor,
            "alpnet_pool_train": self.alpnet_pool_train,
            "alpnet_pool_test": self.alpnet_pool_test,
        }


def _check_size(input_size: int, stride: int) -> int:
    if int(input_size) < stride or int(input_size) % stride:
        raise ValueError(f"data.input_size: {input_size} must be a positive multiple of the encoder stride {stride}")
    return int(input_size) // stride


def cell_px(cells: int, input_size: int, stride: int = OUTPUT_STRIDE, slice_px: int = PAPER_INPUT) -> float:
    """Side (px of the original ``slice_px`` slice) of a cell of ``cells`` feature pixels."""
    return cells * stride * slice_px / int(input_size)


def cell_ratio(kind: str, cells: int, input_size: int, stride: int = OUTPUT_STRIDE) -> float:
    """Cell side of ``kind`` (``carafe``, ``avgpool_train``, ``avgpool_test``) over the paper's."""
    return cell_px(cells, input_size, stride) / PAPER_CELL_PX[kind]


def choose_cells(kind: str, input_size: int, stride: int = OUTPUT_STRIDE) -> int:
    """The integer cell (feature pixels) closest in ratio to the paper's cell of ``kind``."""
    features = _check_size(input_size, stride)
    best = min(range(1, features + 1), key=lambda k: (abs(math.log(cell_ratio(kind, k, input_size, stride))), k))
    return best


def prototype_geometry(input_size: int, stride: int = OUTPUT_STRIDE) -> PrototypeGeometry:
    """The rule of this module for an input side ``input_size`` (px, multiple of ``stride``).

    Returns the CARAFE++ factor sigma (Eq. 14) and SSL-ALPNet's pools; 256 px gives the
    paper's 4 / 4 / 2. Raises ``ValueError`` for a size that is not a multiple of the stride.
    """
    return PrototypeGeometry(
        carafe_factor=choose_cells("carafe", input_size, stride),
        alpnet_pool_train=choose_cells("avgpool_train", input_size, stride),
        alpnet_pool_test=choose_cells("avgpool_test", input_size, stride),
    )


def used_grids(model_cfg) -> tuple[str, ...]:
    """Kinds of local-prototype grid a model config uses (``()`` for global prototypes only)."""
    kind = model_cfg.prototype_kind
    if kind == "carafe":
        return ("carafe",)
    if kind == "avgpool":
        return ("avgpool_train", "avgpool_test")
    return ()


def geometry_problems(model_cfg, input_size: int, stride: int = OUTPUT_STRIDE) -> list[str]:
    """One message per grid the config uses whose cell is outside the factor :data:`TOLERANCE`."""
    out = []
    for kind in used_grids(model_cfg):
        name = FIELDS[kind]
        cells = int(getattr(model_cfg, name))
        ratio = cell_ratio(kind, cells, input_size, stride)
        if not 1 / TOLERANCE - 1e-9 <= ratio <= TOLERANCE + 1e-9:
            lo = [
                k
                for k in range(1, input_size // stride + 1)
                if 1 / TOLERANCE - 1e-9 <= cell_ratio(kind, k, input_size, stride) <= TOLERANCE + 1e-9
            ]
            allowed = f"{min(lo)}..{max(lo)}" if lo else "none at this input size"
            out.append(
                f"model.{name}={cells} at data.input_size={input_size} gives cells of "
                f"{cell_px(cells, input_size, stride):.1f} px of the 256-px slice, {ratio:.2f} x the paper's "
                f"{PAPER_CELL_PX[kind]} px (allowed: within x{TOLERANCE}, i.e. {name} in {allowed}; "
                f"the rule gives {choose_cells(kind, input_size, stride)})"
            )
    return out


def check_geometry(cfg) -> None:
    """Refuse an :class:`~crapnet_core.engine.experiment.ExperimentConfig` whose prototype cells are off the paper's.

    Raises ``ValueError`` listing every offending field, unless ``cfg.model.free_geometry``.
    """
    if getattr(cfg.model, "free_geometry", False):
        return
    problems = geometry_problems(cfg.model, cfg.data.input_size)
    if problems:
        raise ValueError(
            "prototype geometry: "
            + "; ".join(problems)
            + ". Pass --set model.free_geometry=true to run it anyway (see crapnet_core/models/prototype_grid.py)."
        )


def geometry_rows(
    input_size: int, geometry: PrototypeGeometry | None = None, stride: int = OUTPUT_STRIDE
) -> list[dict[str, Any]]:
    """Grid and cell size of every method at ``input_size`` (the rule's geometry unless given).

    One dict per grid: method, phase, field, cells (feature px), grid (per side), cell_px_input,
    cell_px_slice (px of the 256-px slice), mm per dataset of :data:`DATASET_PIXELS`
    (``(lo, hi)``), paper_cell_px, ratio, within (bool).
    """
    features = _check_size(input_size, stride)
    geometry = geometry or prototype_geometry(input_size, stride)
    rows = []
    for method, phase, kind in (
        ("CRAPNet (CARAFE++ sigma)", "train + test", "carafe"),
        ("SSL-ALPNet (pool)", "train", "avgpool_train"),
        ("SSL-ALPNet (pool)", "test", "avgpool_test"),
    ):
        name = FIELDS[kind]
        cells = int(getattr(geometry, name))
        ratio = cell_ratio(kind, cells, input_size, stride)
        mm = {}
        for ds, (side, (lo, hi)) in DATASET_PIXELS.items():
            px = cell_px(cells, input_size, stride, side)
            mm[ds] = (px * lo, px * hi)
        rows.append(
            {
                "input_size": int(input_size),
                "features": features,
                "method": method,
                "phase": phase,
                "field": name,
                "cells": cells,
                "grid": -(-features // cells),
                "cell_px_input": cells * stride,
                "cell_px_slice": cell_px(cells, input_size, stride),
                "mm": mm,
                "paper_cell_px": PAPER_CELL_PX[kind],
                "ratio": ratio,
                "within": 1 / TOLERANCE - 1e-9 <= ratio <= TOLERANCE + 1e-9,
            }
        )
    return rows


def _mm(pair: tuple[float, float]) -> str:
    lo, hi = pair
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}"


def geometry_markdown(sizes: Sequence[int], stride: int = OUTPUT_STRIDE) -> str:
    """Markdown table of :func:`geometry_rows` for each input size in ``sizes``."""
    lines = [
        "| input (px) | features | method | phase | field | value | grid | cell (input px) | "
        "cell (256-px slice) | CHAOS (mm) | Synapse (mm) | x paper |",
        "|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        for r in geometry_rows(size, stride=stride):
            flag = "" if r["within"] else " (outside x1.5)"
            lines.append(
                f"| {r['input_size']} | {r['features']} x {r['features']} | {r['method']} | {r['phase']} | "
                f"`{r['field']}` | {r['cells']} | {r['grid']} x {r['grid']} | {r['cell_px_input']} | "
                f"{r['cell_px_slice']:.1f} | {_mm(r['mm']['CHAOS'])} | {_mm(r['mm']['Synapse'])} | "
                f"{r['ratio']:.2f}{flag} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crapnet_core.models.prototype_grid [SIZE ...]``: print the table (default 64 96 128 256)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        sizes = [int(a) for a in args] or [64, 96, 128, 256]
    except ValueError:
        print(
            f"usage: python -m crapnet_core.models.prototype_grid [INPUT_SIZE ...] (integers), got {args}",
            file=sys.stderr,
        )
        return 2
    print(geometry_markdown(sizes))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = [
    "PAPER_INPUT",
    "PAPER_CELL_PX",
    "TOLERANCE",
    "FIELDS",
    "DATASET_PIXELS",
    "PrototypeGeometry",
    "cell_px",
    "cell_ratio",
    "choose_cells",
    "prototype_geometry",
    "used_grids",
    "geometry_problems",
    "check_geometry",
    "geometry_rows",
    "geometry_markdown",
    "main",
]

"""The paper's published numbers: Tables 1-4 of Ding et al., CRAPNet, WACV 2023 (Dice, 0..100).

Pure data at the bottom of the package (next to :mod:`crapnet_core.facts`), so that the
engine (``runs``: comparison rows of ``summary.md``) and the report (``figures``: tables
and plots) read the same one transcription. Source: /work/shared/paper, Tables 1-4.
"""

from __future__ import annotations

from typing import Any

from .facts import METHODS_REGISTRY

#: The paper's Tables 1-4 (Dice, 0..100), organ order LK, RK, Spleen, Liver, then the mean.
#: ``method`` keys are the paper's row names; :data:`PUBLISHED_METHOD_KEYS` maps ours to them.
PUBLISHED: dict[str, Any] = {
    "table1": {  # setting 1
        "sabs": {
            "ALPNet": (29.12, 31.32, 41.00, 65.07, 41.63),
            "SSL-PANet": (56.52, 50.42, 55.72, 60.86, 57.88),
            "SSL-ALPNet": (72.36, 71.81, 70.96, 78.29, 73.35),
            "SSL-RPNet": (65.14, 66.73, 64.01, 72.99, 67.22),
            "CRAPNet": (74.69, 74.18, 70.37, 75.41, 73.66),
        },
        "chaos": {
            "ALPNet": (44.73, 48.42, 49.61, 62.35, 51.28),
            "SSL-PANet": (58.83, 60.81, 61.32, 71.73, 63.17),
            "SSL-ALPNet": (81.92, 85.18, 72.18, 76.10, 78.84),
            "SSL-RPNet": (71.46, 81.96, 73.55, 75.99, 75.74),
            "CRAPNet": (81.95, 86.42, 74.32, 76.46, 79.79),
        },
    },
    "table2": {  # setting 2
        "sabs": {
            "ALPNet-init": (13.90, 11.61, 16.39, 41.71, 20.90),
            "ALPNet": (34.96, 30.40, 27.73, 47.37, 35.11),
            "SSL-PANet": (37.58, 34.69, 43.73, 61.71, 44.42),
            "SSL-ALPNet": (63.34, 54.82, 60.25, 73.65, 63.02),
            "CRAPNet": (70.91, 67.33, 70.17, 70.45, 69.72),
        },
        "chaos": {
            "ALPNet-init": (19.28, 14.93, 23.76, 37.73, 23.93),
            "ALPNet": (53.21, 58.99, 52.18, 37.32, 50.43),
            "SSL-PANet": (47.71, 47.95, 58.73, 64.99, 54.85),
            "SSL-ALPNet": (73.63, 78.39, 67.02, 73.05, 73.02),
            "CRAPNet": (74.66, 82.77, 70.82, 73.82, 75.52),
        },
    },
    "table3": {  # CHAOS MRI, setting 1, CRAPNet with N attention blocks
        1: (80.39, 82.42, 74.52, 71.93, 77.30),
        5: (81.95, 86.42, 74.32, 76.46, 79.79),
        7: (82.08, 83.93, 73.35, 73.16, 78.13),
        9: (80.27, 83.93, 73.61, 74.28, 78.02),
        12: (82.41, 85.84, 71.88, 73.02, 78.29),
        15: (80.71, 86.00, 73.88, 72.67, 78.31),
    },
    "table4": {  # CHAOS MRI, setting 1, two-branch vs one-branch attention
        2: (81.95, 86.42, 74.32, 76.46, 79.79),
        1: (78.08, 81.44, 71.65, 73.33, 76.13),
    },
}
#: Rows where the paper's printed mean is not the mean of its four organs (transcribed as
#: printed; the book says so under the tables): key -> (printed, mean of the organs).
PUBLISHED_INCONSISTENT = {
    ("table1", "sabs", "SSL-PANet"): (57.88, 55.88),
    ("table3", 1): (77.30, 77.315),
}
#: Our method key -> the paper's row name, for the paper's own methods (the registry's
#: ``published`` ones; their display names are the paper's row names).
PUBLISHED_METHOD_KEYS = {k: m.label for k, m in METHODS_REGISTRY.items() if m.published}


def published_dice() -> dict[tuple[str, int, str], tuple[float, ...]]:
    """The paper's Dice (Tables 1-2) for the methods this project implements.

    ``{(dataset, setting, method): (LK, RK, Spleen, Liver, Mean)}`` with our method keys.
    """
    return {
        (dataset, setting, method): rows[paper_name]
        for setting, table in ((1, "table1"), (2, "table2"))
        for dataset, rows in PUBLISHED[table].items()
        for method, paper_name in PUBLISHED_METHOD_KEYS.items()
        if paper_name in rows
    }


__all__ = ["PUBLISHED", "PUBLISHED_INCONSISTENT", "PUBLISHED_METHOD_KEYS", "published_dice"]

"""The set-up of every notebook of the book, in one call: :func:`setup`.

A notebook imports the installed ``crapnet_core`` (``make lab`` and ``crapnet book`` run them in the
project's environment, from any working folder), then calls ``dataset = setup(dataset, data_root)``:
the book's figure style (:func:`crapnet_core.report.figures.set_style`), pandas' display precision,
quiet progress bars in a kernel without widgets, and the dataset a notebook run by hand uses when its
``dataset`` parameter is None (the real data under ``$CRAPNET_DATA_ROOT`` when present, else the
phantom: :func:`crapnet_core.paths.default_dataset`).
"""

from __future__ import annotations

import os
import warnings


def setup(dataset: str | None = None, data_root: str | os.PathLike | None = None, precision: int = 2) -> str:
    """Set the notebook up (see the module docstring); returns the dataset to use."""
    import pandas as pd

    from ..paths import default_dataset
    from .figures import set_style

    set_style()  # the book's one figure style
    pd.set_option("display.precision", precision)
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without widgets
    return dataset if dataset is not None else default_dataset(data_root)


__all__ = ["setup"]

"""Where crapnet finds data and keeps its caches.

- ``CRAPNET_DATA_ROOT``: folder holding the real datasets (``CHAOST2/``, ``SABS/``). CI sets
  it to ``../shared/data``. Read-only: crapnet never writes there.
- ``CRAPNET_CACHE``: folder crapnet owns for derived files (superpixels, the phantom).
  Default ``~/.cache/crapnet``.
- the project folder (:func:`repo_root`) and, under it, ``runs/`` (training runs shared by
  the notebooks) and ``results/`` (committed cross-validation summaries).
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from .facts import DATASET_FOLDERS  # real datasets, in the order a notebook run by hand prefers them


class DataRootNotSet(RuntimeError):
    """Raised when a preset dataset is asked for but no data root is known."""


class ProjectNotFound(RuntimeError):
    """Raised when the project folder (a clone with ``notebooks/`` and ``_toc.yml``) is not found."""


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The real-data root: ``explicit`` if given, else ``$CRAPNET_DATA_ROOT``."""
    value = explicit if explicit is not None else os.environ.get("CRAPNET_DATA_ROOT")
    if not value:
        raise DataRootNotSet(
            "no data root: pass --data-root DIR or set CRAPNET_DATA_ROOT to the folder that "
            "holds CHAOST2/ and SABS/ (e.g. export CRAPNET_DATA_ROOT=../shared/data)"
        )
    return Path(value).expanduser().resolve()


_SAFE_PUNCTUATION = "._+-"


def safe_name(name: str) -> str:
    """``name`` as one file-name component.

    Unicode NFC first (the NFC and NFD spellings of a name give one file name); letters,
    marks and digits of any script are kept (``"fígado"``, ``"肝臓"``), and so are ``. _ + -``;
    every run of other characters (spaces, ``/``, ``\\``, ``:``...) becomes ``_``; leading dots
    are dropped (no hidden files, no ``..``). ``"left kidney"`` -> ``"left_kidney"``,
    ``"liver/gallbladder"`` -> ``"liver_gallbladder"``. Used for organ names in output file
    and run folder names, which must never create sub-folders. (ASCII names give what they
    always gave: run folder names do not change.)
    """
    text = unicodedata.normalize("NFC", str(name).strip())
    out = _UNSAFE.sub(
        "_", "".join(c if c in _SAFE_PUNCTUATION or unicodedata.category(c)[0] in "LMN" else "\0" for c in text)
    ).lstrip(".")
    return out or "_"


_UNSAFE = re.compile("\0+")


def cache_dir(*parts: str) -> Path:
    """A folder under crapnet's cache (created on demand)."""
    base = Path(os.environ.get("CRAPNET_CACHE", Path.home() / ".cache" / "crapnet")).expanduser()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def real_data_required() -> bool:
    """True when tests that need the real data must fail rather than skip (CI=true)."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def available_datasets(data_root: str | os.PathLike | None) -> list[str]:
    """Real datasets present under ``data_root`` (``chaos``, ``sabs``), in that order."""
    if not data_root:
        return []
    root = Path(data_root).expanduser()
    return [
        name
        for name, sub in DATASET_FOLDERS.items()
        if (root / sub).is_dir() and any((root / sub).glob("image_*.nii.gz"))
    ]


def default_dataset(explicit: str | os.PathLike | None = None) -> str:
    """The dataset a notebook uses when its ``dataset`` parameter is None.

    ``chaos`` (then ``sabs``) when the data root (``explicit``, else ``$CRAPNET_DATA_ROOT``)
    holds its ``image_*.nii.gz`` files, else ``phantom`` (the built-in synthetic data), so a
    notebook opened by hand runs with or without the real data.
    """
    value = explicit if explicit is not None else os.environ.get("CRAPNET_DATA_ROOT")
    return next(iter(available_datasets(value)), "phantom")


def repo_root() -> Path:
    """The project folder (holds ``notebooks/``, ``book/``, ``_toc.yml``)."""
    here = Path(__file__).resolve().parents[1]
    if (here / "notebooks").is_dir() and (here / "_toc.yml").is_file():
        return here
    cwd = Path.cwd()
    for cand in (cwd, *cwd.parents):
        if (cand / "notebooks").is_dir() and (cand / "_toc.yml").is_file():
            return cand
    raise ProjectNotFound(
        f"cannot find the project folder (with notebooks/ and _toc.yml) above {here} or {cwd}; "
        "run crapnet book from a clone of the repository"
    )


def default_runs_root() -> Path:
    """``<repo>/runs``: training runs shared by the notebooks (git-ignored)."""
    return repo_root() / "runs"


def default_results_dir() -> Path:
    """``<repo>/results``: committed cross-validation summaries."""
    return repo_root() / "results"

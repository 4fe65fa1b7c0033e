"""Atomic writes: an output file is either complete or absent, never half-written.

Everything crapnet writes (configs, metrics, checkpoints, NIfTI predictions, superpixels)
goes through these helpers: the content goes to a temporary file in the destination
folder, is flushed to disk, then renamed over the destination in one step (``os.replace``).

Permissions: ``tempfile.mkstemp`` creates files readable by their owner only (0600); before
the rename the file gets the mode a plain ``open(dest, "w")`` would give it: the mode of the
file it replaces, or ``0666`` minus the user's umask for a new file (0644 with the usual
umask 022), so results can be shared as the user's umask says.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def current_umask() -> int:
    """The process umask (read from ``/proc/self/status`` on Linux, else set-and-restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no read-only query exists elsewhere: set, then restore at once
    os.umask(mask)
    return mask


def _target_mode(dest: Path) -> int:
    """Mode ``open(dest, "w")`` would leave: the existing file's, else ``0o666 & ~umask``."""
    try:
        return dest.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success it replaces ``dest`` atomically.

    ``suffix`` is appended to the temporary name (e.g. ``.nii.gz`` so that writers that
    infer the format from the extension do the right thing). On error the temporary file
    is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _target_mode(dest))
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically (UTF-8, whatever the locale) and return the path."""
    with atomic_path(dest) as tmp:
        # explicit UTF-8: the locale's encoding can be ASCII (LANG=C, or a library that reset
        # the locale: GDCM does when it writes DICOM), and crapnet's texts hold non-ASCII
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json(dest: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (sorted keys are not forced: order is kept) atomically."""
    return write_text(dest, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def save_nifti(dest: str | os.PathLike, array, affine, header=None) -> Path:
    """Save ``array`` as NIfTI at ``dest`` (``.nii`` or ``.nii.gz``) atomically."""
    import nibabel as nib

    dest = Path(dest)
    suffix = ".nii.gz" if dest.name.endswith(".nii.gz") else ".nii"
    img = nib.Nifti1Image(array, affine, header=header)
    with atomic_path(dest, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return dest


def save_torch(dest: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to ``dest`` atomically (checkpoints)."""
    import torch

    with atomic_path(dest, suffix=".pt") as tmp:
        torch.save(obj, tmp)
    return Path(dest)


@contextmanager
def keep_locale():
    """Restore the process locale afterwards.

    GDCM (SimpleITK's DICOM library) can leave the locale set to "C", which turns Python's
    default text encoding into ASCII for the rest of the process (then any later
    ``read_text()`` of a UTF-8 file fails). Every SimpleITK read/write goes through this.
    """
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        try:
            locale.setlocale(locale.LC_ALL, saved)
        except locale.Error:  # pragma: no cover - a composite locale string the C library refuses
            pass

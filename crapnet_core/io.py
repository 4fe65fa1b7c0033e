"""Atomic writes: an output file is either complete or absent, never half-written.

Everything crapnet writes (configs, metrics, checkpoints, NIfTI predictions, superpixels)
goes through these helpers: the content goes to a temporary file in the destination
folder, is flushed to disk, then renamed over the destination in one step (``os.replace``).

Permissions: ``tempfile.mkstemp`` creates files readable by their owner only (0600); before
the rename the file gets the mode a plain ``open(dest, "w")`` would give it: the mode of the
file it replaces, or ``0666`` minus the user's umask for a new file (0644 with the usual
umask 022), so results can be shared as the user's umask says.

Operating-system errors (no permission, read-only file system, disk full) surface as
``OSError`` naming the destination (:func:`with_path`), which the ``crapnet`` command turns
into one line; :func:`check_output_folder` checks a folder before long work.
:func:`read_json` is the one reader of a JSON file (a missing or broken one: one error naming it).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
    tmp_path: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _target_mode(dest))
        os.replace(tmp_path, dest)
    except OSError as err:
        named = with_path(err, dest)
        if named is err:
            raise
        raise named from err
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def with_path(err: OSError, path: str | os.PathLike) -> OSError:
    """``err`` naming ``path`` when it names no file (a ``write`` that fails with ENOSPC names none).

    The same errno (hence the same subclass: ``PermissionError`` for EACCES...), so the CLI's
    boundary (:func:`crapnet_core.cli.os_error_message`) can say what happened and where.
    A temporary file next to ``path`` is reported as ``path`` itself.
    """
    name = err.filename
    if name is not None and Path(os.fsdecode(name)).name.startswith(f".{Path(path).name}."):
        name = None  # atomic_path's temporary file: the user knows the destination, not the temp name
    if name is not None or err.errno is None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))


def why_missing(path: str | os.PathLike, what: str = "file") -> str:
    """Why ``path`` cannot be read as a file, in words: not found, a symbolic link loop, a
    broken link (and where it points), a folder, no permission. For error messages."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return (
                "symbolic link loop (the link points back to itself, directly or through other links); fix or remove it"
            )
        if p.is_symlink():
            try:
                target = os.readlink(p)
            except OSError:
                target = "?"
            return f"broken symbolic link (to {target}, which does not exist)"
        if err.errno in (errno.EACCES, errno.EPERM):
            return f"no permission to read the {what} (or its folder)"
        if err.errno == errno.ENOTDIR:
            return f"{what} not found (a part of the path is a file, not a folder)"
        return f"{what} not found"
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        return f"is a folder, not a {what}"
    if not os.access(p, os.R_OK):
        return f"no permission to read the {what}"
    return f"{what} not found"


def existing_ancestor(path: str | os.PathLike) -> Path:
    """``path`` itself when it exists, else its nearest existing parent folder."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes (for this user) on the file system that holds ``path`` (or would hold it)."""
    return int(shutil.disk_usage(existing_ancestor(path)).free)


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 2**10:,.0f} kB"


def check_output_folder(folder: str | os.PathLike, need_bytes: int = 0, what: str = "output folder") -> Path:
    """Before long work: ``folder`` (or the parent it would be created in) must be writable,
    and hold ``need_bytes`` free; ``OSError`` naming the folder otherwise.

    Checked without writing anything: a folder that is a file (``ENOTDIR``), a read-only file
    system (``EROFS``, from ``statvfs``), no write permission (``EACCES``, ``os.access``), less
    free space than ``need_bytes`` (``ENOSPC``; the message says how much is needed and free).
    ``what`` names the option (``--out``) in the message. Returns the folder.
    """
    folder = Path(folder)
    base = existing_ancestor(folder)
    if not base.is_dir():
        raise OSError(errno.ENOTDIR, f"{what}: {base} is a file, not a folder", str(base))
    try:
        read_only = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the access check below decides
        read_only = False
    if read_only:
        raise OSError(errno.EROFS, f"{what}: read-only file system", str(base))
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"{what}: no permission to write", str(base))
    if need_bytes > 0:
        free = free_bytes(base)
        if free < need_bytes:
            raise OSError(
                errno.ENOSPC,
                f"{what}: not enough free space: about {_mb(need_bytes)} needed, {_mb(free)} free",
                str(folder),
            )
    return folder


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


def read_json(path: str | os.PathLike, what: str = "file", missing: str = "", invalid: str = "") -> Any:
    """The content of the JSON file ``path`` (UTF-8), as :func:`json.loads` gives it.

    Errors, one line each naming the file: ``FileNotFoundError`` when ``path`` cannot be read as a
    file (``"<path>: <what> not found"``, a broken link, a folder: :func:`why_missing`; then
    ``missing``, a hint, when given); ``ValueError`` when it is not valid JSON (``"<path>: not
    valid JSON (<where it breaks>)"``, then the hint ``invalid``) or not UTF-8 text.
    ``PermissionError`` and other operating-system errors pass as they are (they name the file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise FileNotFoundError(f"{path}: {why_missing(path, what)}" + (f"; {missing}" if missing else "")) from None
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON (not UTF-8 text: byte {err.start})" + (f"; {invalid}" if invalid else "")
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})" + (f"; {invalid}" if invalid else "")) from None


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


#: Messages of torch's zip writer when a write fails; with a file name it hides the errno
#: (a full disk reads "[enforce fail at inline_container.cc:...] unexpected pos ...").
_TORCH_WRITE_FAILED = re.compile(r"inline_container|unexpected pos|file write failed|PytorchStreamWriter")


def save_torch(dest: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to ``dest`` atomically (checkpoints).

    torch writes through a Python file object, so a failed write raises the operating
    system's ``OSError`` (``ENOSPC`` for a full disk) naming ``dest``; should torch's own
    writer still fail with its opaque zip-writer message, the free space is checked and a
    full disk is reported as ``ENOSPC``.
    """
    import torch

    with atomic_path(dest, suffix=".pt") as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(obj, fh)
        except RuntimeError as err:
            if not _TORCH_WRITE_FAILED.search(str(err)):
                raise
            free = free_bytes(tmp)
            written = tmp.stat().st_size if tmp.exists() else 0
            if free < max(written, 2**20):
                raise OSError(errno.ENOSPC, f"no space left on device ({_mb(free)} free)", str(dest)) from err
            raise OSError(errno.EIO, f"writing the checkpoint failed ({err})", str(dest)) from err
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

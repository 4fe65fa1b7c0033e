"""One writer per run folder: an exclusive lock that names its holder.

Every command that writes into a run folder (``train``, ``evaluate``, ``evaluate
--checkpoints``, ``cross-validate`` through :func:`~crapnet_core.engine.runs.ensure_run`, the
book's workflow jobs) holds ``RUN/.lock`` while it works. The holder writes a small record into
the lock file (process id, command line, machine, start time, UTC); a second process either
stops at once with one line naming the folder and that holder (:class:`RunFolderBusy`,
``wait=False``: the command-line default) or waits for it (``wait=True``: callers that share
runs on purpose, such as notebooks asking for the same config), saying whom it waits for.

The lock is ``flock(2)`` on the open lock file: the kernel releases it when the holder exits,
however it exits (a killed training leaves no stale lock; a stale *record* is never read
because only a held lock is reported). Within one process the lock is re-entrant per thread
(``ensure_run`` holds it around ``train`` and ``evaluate``, which take it again).

Hand-written on ``fcntl.flock`` rather than the ``filelock`` package, on purpose: the holder's
record must live in the locked file itself and be readable by a waiting process, and
``filelock`` opens the lock file with ``O_TRUNC`` (so a contender would erase the record it
wants to report); the primitive is one system call, the same one ``filelock`` uses on Unix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: The lock file inside a run folder (a dot file: run-folder checks ignore it).
LOCK_NAME = ".lock"


class RunFolderBusy(ValueError):
    """Another process holds the run folder's lock; the message names the folder and the holder."""


_HELD: dict[tuple[str, int], list] = {}  # (real lock path, thread id) -> [fd, depth]
_GUARD = threading.Lock()


def _command_line() -> str:
    """This process's command line as the user typed it (``crapnet train ...``)."""
    argv = list(sys.argv) or ["python"]
    prog = Path(argv[0]).name
    if prog == "__main__.py":  # python -m crapnet_core.cli ... is the crapnet command
        parent = Path(argv[0]).parent
        prog = "crapnet" if (parent.name, parent.parent.name) == ("cli", "crapnet_core") else f"python -m {parent.name}"
    elif prog in ("-c", ""):
        prog = "python -c ..."
    return " ".join([prog, *argv[1:]])[:500]


def _record(command: str | None) -> dict:
    return {
        "pid": os.getpid(),
        "command": command or _command_line(),
        "host": socket.gethostname(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def describe_holder(lock_file: str | os.PathLike) -> str:
    """``process <pid> (<command>) on <host> since <time> UTC`` from a lock file's record."""
    try:
        info = json.loads(Path(lock_file).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process (it has not written its details yet)"
    host = info.get("host")
    here = host in (None, socket.gethostname())
    return (
        f"process {info['pid']} ({info.get('command', '?')})"
        + ("" if here else f" on {host}")
        + (f", since {info['started_utc']}" if info.get("started_utc") else "")
    )


def lock_holder(run_dir: str | os.PathLike) -> str | None:
    """Who holds ``run_dir``'s lock now (see :func:`describe_holder`), or None when no one does.

    A look without side effects: nothing is created (an absent folder or lock file: None).
    The calling thread's own hold counts as free.
    """
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return None
    import fcntl

    with _GUARD:
        if (os.path.realpath(path), threading.get_ident()) in _HELD:
            return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return describe_holder(path)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops a lock this probe may have taken
    return None


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, wait: bool = True, command: str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if absent) for the ``with`` block.

    ``wait=False``: raise :class:`RunFolderBusy` at once when another process holds it
    (the message names the folder and the holder: pid, command, start time); ``wait=True``:
    log whom it waits for and block until the lock is free. ``command`` (default: this
    process's command line) goes into the holder record. Re-entrant within a thread.
    Yields the lock file's path. ``OSError`` (read-only folder...) names the lock file.
    """
    import fcntl

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    key = (os.path.realpath(path), threading.get_ident())
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:  # this thread holds it already (ensure_run -> train -> ...)
        try:
            yield path
        finally:
            with _GUARD:
                held[1] -= 1
        return
    # no O_TRUNC: a waiting process must not erase the holder's record before reading it
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(path)
            if not wait:
                raise RunFolderBusy(
                    f"{run_dir}: run folder in use by {holder}; wait for it to finish (or stop it), "
                    f"or choose another output folder"
                ) from None
            log.warning("%s: run folder in use by %s; waiting for it to finish", run_dir, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        data = json.dumps(_record(command)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        with _GUARD:
            _HELD[key] = [fd, 1]
        try:
            yield path
        finally:
            with _GUARD:
                _HELD.pop(key, None)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no record of a holder that is gone
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "RunFolderBusy", "run_lock", "lock_holder", "describe_holder"]

"""The ``crapnet`` command: one entry point, one sub-command family per module.

Each ``cli_*`` module exposes ``register(subparsers)`` that adds its sub-commands and sets
``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
The notebooks call the same library functions that these sub-commands call.

    crapnet data summary ...        (cli_data)
    crapnet superpixels ...         (cli_data)
    crapnet train / evaluate / cross-validate / segment ...   (cli_train)
    crapnet compare A B             (cli_stats)
    crapnet rerun-check ...         (cli_rerun)
    crapnet study plan|run|status|collect|analysis|migrate   (cli_study)
    crapnet book ...                (cli_book)
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

from .. import __version__

#: Modules that contribute sub-commands, in the order they appear in ``crapnet --help``.
COMMAND_MODULES = (
    "crapnet_core.cli.data",
    "crapnet_core.cli.train",
    "crapnet_core.cli.stats",
    "crapnet_core.cli.rerun",
    "crapnet_core.cli.study",
    "crapnet_core.cli.book",
)


class UserError(Exception):
    """An error caused by the user's input: printed as one clear line, exit code 2."""


#: What to do about an operating-system error, by errno (the boundary of :func:`main`).
_OS_HINTS = {
    errno.EACCES: "permission denied; choose a folder you can write to (or change its permissions)",
    errno.EPERM: "operation not permitted; choose a folder you can write to (or change its permissions)",
    errno.EROFS: "read-only file system; choose an output folder on a writable file system",
    errno.ENOSPC: "no space left on device{free}; free space there or choose an output folder on another disk",
    errno.EDQUOT: "disk quota exceeded{free}; free space or choose an output folder on another disk",
    errno.ENOENT: "no such file or folder; check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "is a folder where a file is expected; check the path",
    errno.ELOOP: "symbolic link loop (a link that points back to itself); fix or remove the link",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or use fewer --jobs",
}


def os_error_message(err: OSError) -> str:
    """One line for an operating-system error: the path, what happened, what to do.

    Permission, read-only file system, no space (with the free space), missing file or
    folder, symlink loop...; an ``OSError`` raised with a message only (no errno) is
    printed as it is.
    """
    if err.errno is None:
        return str(err)
    path = err.filename if err.filename is not None else None
    path2 = getattr(err, "filename2", None)
    hint = _OS_HINTS.get(err.errno)
    text = err.strerror or os.strerror(err.errno)
    std = os.strerror(err.errno)
    if hint is None:
        hint = (text[:1].lower() + text[1:]) if text else f"errno {err.errno}"
    elif text and text != std:  # a message of our own (e.g. check_output_folder's): keep it, then the hint
        hint = f"{text}; " + hint.split("; ", 1)[-1]
    if "{free}" in hint:
        free = ""
        if path is not None and text == std:  # our own messages say the free space already
            try:
                from ..io import free_bytes

                free = f" ({free_bytes(os.fsdecode(path)) / 2**20:,.0f} MB free there)"
            except OSError:
                free = ""
        hint = hint.replace("{free}", free)
    where = os.fsdecode(path) if path is not None else "(no path given)"
    if path2 is not None:
        where += f" -> {os.fsdecode(path2)}"
    return f"{where}: {hint}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crapnet",
        description="Few-shot medical image segmentation with Cycle-Resemblance Attention.",
    )
    parser.add_argument("--version", action="version", version=f"crapnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for provenance records
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError) as err:
        # Bad input: one line that names the file/argument and the problem, no traceback.
        if args.verbose:
            raise
        print(f"crapnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # The one boundary for operating-system errors (permission, read-only, disk full, missing
        # folder...): one line naming the path and what to do, exit 2 (-v shows the traceback).
        if args.verbose:
            raise
        print(f"crapnet {args.command}: error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

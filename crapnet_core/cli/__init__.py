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
import importlib
import logging
import sys

from .. import __version__

#: Modules that contribute sub-commands, in the order they appear in ``crapnet --help``.
COMMAND_MODULES = ("crapnet_core.cli.data", "crapnet_core.cli.train", "crapnet_core.cli.stats", "crapnet_core.cli.rerun",
                   "crapnet_core.cli.study", "crapnet_core.cli.book")


class UserError(Exception):
    """An error caused by the user's input: printed as one clear line, exit code 2."""


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
    except (UserError, FileNotFoundError, ValueError) as err:
        # Bad input: one line that names the file/argument and the problem, no traceback.
        if args.verbose:
            raise
        print(f"crapnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``vrx`` command: thin argument parsing over the library.

Each sub-command lives in its own module here and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to a function taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from ..errors import VRXError

# Modules under vrx.cli that each register one or more sub-commands, in help order.
COMMAND_MODULES = ["demo", "classify", "toyworld", "discover", "map_centres", "graphs", "train", "explain", "report", "sensitivity", "compare", "consistency", "diagnose"]


def build_parser() -> argparse.ArgumentParser:
    """The full ``vrx`` argument parser."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="vrx", description="Explain what an image classifier "
                                     "reasons about, with structural visual concepts.")
    parser.add_argument("--version", action="version", version=f"vrx {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vrx`` console command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        # A user reads "vrx discover: warning: ...", not the source line that warned.
        print(f"vrx {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return int(args.func(args) or 0)
    except VRXError as exc:
        print(f"vrx {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vrx {args.command}: interrupted; finished artifacts are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``vrx explain``: why / why-not explanations of images with a finished run (JSON + PNG per image)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_max_pixels_argument, add_run_model_arguments, max_pixels, run_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` sub-command."""
    from ..defaults import DEFAULT_MAX_EDGES

    p = subparsers.add_parser("explain", help="explain images with a trained run (JSON + PNG per image)",
                              description="Build the structural concept graphs of each image, explain the "
                              "GRN's decision (why the predicted class, why not the others) and write "
                              "<name>.json and <name>.png per image into --out.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (png, jpg, ...)")
    p.add_argument("--run", required=True, type=Path, help="run folder with concepts/ and grn/")
    p.add_argument("--out", required=True, type=Path, help="folder for the JSON and PNG files")
    p.add_argument("--max-edges", type=int, default=DEFAULT_MAX_EDGES,
                   help=f"relations drawn per class panel (default {DEFAULT_MAX_EDGES})")
    add_max_pixels_argument(p)
    add_run_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Explain the images; 1 when some could not be read (the others are still written), else 0."""
    from ..errors import ConfigError
    from ..explain import ExplainError, explain_images

    if args.max_edges < 0:
        raise ConfigError(f"--max-edges must be >= 0, got {args.max_edges}")
    limit = max_pixels(args)
    try:
        written = explain_images(run_from_args(args, args.run), args.images, args.out, max_edges=args.max_edges,
                                 max_pixels=limit)
    except ExplainError as exc:
        for path in exc.written:
            print(path)
        for msg in exc.failed.values():
            print(f"vrx explain: error: {msg}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0

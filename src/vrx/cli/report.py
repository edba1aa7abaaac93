"""``vrx report``: a self-contained HTML report of a run (concepts, fidelity, sample explanations)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command."""
    from ..defaults import DEFAULT_SAMPLES

    p = subparsers.add_parser("report", help="write RUN/report.html (concepts, fidelity, explanations)",
                              description="Write a self-contained HTML page (images embedded) with each "
                              "class's concepts and TCAV scores, the GRN's fidelity with its ablations, and "
                              "explanations of sample test images, right and wrong ones.")
    p.add_argument("--run", required=True, type=Path, help="run folder (concepts/, graphs/, grn/)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"sample images to explain (default {DEFAULT_SAMPLES})")
    p.add_argument("--out", type=Path, default=None, help="output file (default RUN/report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report and print its path."""
    from ..errors import ConfigError
    from ..report import write_report

    if args.out is not None and args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a folder; give the report's file name, e.g. "
                          f"{args.out / 'report.html'}")
    path = write_report(args.run, n_samples=args.samples, out=args.out)
    print(path)
    return 0

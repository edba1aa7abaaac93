"""``vrx map-centres``: give a crop-mode bank's concepts map-space centres, for one-forward matching."""

from __future__ import annotations

import argparse

from ._common import add_run_model_arguments, run_from_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``map-centres`` sub-command."""
    p = sub.add_parser("map-centres", help="add map-space concept centres to a run's bank (one-forward matching)",
                       description="For every concept, pool its member segments from one forward of each "
                                   "member image and store the mean beside the crop-mode centre, so "
                                   "`vrx graphs --features map` (and explaining) needs one forward per image. "
                                   "The bank changes: build the graphs again afterwards.")
    p.add_argument("--run", required=True, help="run folder made by `vrx discover`")
    add_run_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Add the centres, save the bank; print what it took."""
    from .. import stages

    run = run_from_args(args, args.run)
    done = stages.add_map_centres(run, run.adapter())
    print(f"map-space centres: {done['members']} members from {done['images']} images in {done['seconds']} s")
    print(f"bank: {run.concepts_dir}")
    return 0

"""``vrx diagnose``: why the classifier fails on a test set, per class, with a recommendation."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_run_model_arguments, run_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``diagnose`` sub-command."""
    p = subparsers.add_parser(
        "diagnose", help="model diagnosis: per class, are errors concept or structure ones, and what data helps",
        description="Explain every image of a labelled folder (<class>/*.png) that the run's classifier gets "
                    "wrong, type each error (concept / structure / both) and name its culprit from "
                    "contributions, count them per (true class, predicted class) and recommend, per class, "
                    "what its training data lacks. Writes RUN/experiments/diagnosis.json.")
    p.add_argument("--run", required=True, type=Path, help="run folder with concepts/, graphs/ and grn/")
    p.add_argument("--images", required=True, type=Path, help="labelled test images: IMAGES/<class>/*.png")
    p.add_argument("--planted", choices=("concept", "structure"),
                   help="the known cause of the errors (toyworld scenarios): adds the share VRX names")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_run_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Diagnose and print the table and the recommendations."""
    from ..experiments.diagnose import diagnose, diagnosis_path
    from ..runtime import threads

    with threads(torch_threads=args.threads):
        run = run_from_args(args, args.run)
        result = diagnose(run, args.images, planted_type=args.planted)
    print(result["markdown"])
    print(f"{result['seconds']:.0f} s; wrote {diagnosis_path(run)}")
    return 0

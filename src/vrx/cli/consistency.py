"""``vrx consistency``: the paper's Table 1 on toyworld errors with planted causes."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_run_model_arguments, run_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``consistency`` sub-command."""
    p = subparsers.add_parser(
        "consistency", help="logic consistency: do edits that follow VRX's explanation correct errors? (toyworld)",
        description="Render a shifted toyworld split with planted causes (parts swapped, added or misplaced), "
                    "explain every image the classifier gets wrong, type the error (concept / structure / "
                    "both) and name its culprit from contributions, then edit the image as VRX says, with a "
                    "random-patch, a good-concept and a Grad-CAM edit as controls, and classify again. Writes "
                    "RUN/experiments/consistency.json and prints the paper-form table.")
    p.add_argument("--run", required=True, type=Path, help="run folder with concepts/, graphs/ and grn/")
    p.add_argument("--images", type=Path,
                   help="a shifted split rendered before (default: render one into RUN/experiments/consistency/images)")
    p.add_argument("--n-per-class", type=int, default=200, help="shifted images per class (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shifted split and the random controls")
    p.add_argument("--max-steps", type=int, default=5,
                   help="VRX-guided edits per error: re-explain and edit while still wrong (default 5)")
    p.add_argument("--patch", choices=("box", "segment"), default="box",
                   help="an edited patch is its segment's bounding box (default) or the segment itself")
    p.add_argument("--no-gradcam", action="store_true", help="leave out the Grad-CAM row")
    p.add_argument("--limit", type=int, help="account for only the first N errors (a quick look)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_run_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the experiment, print the table and where the JSON is."""
    from ..errors import ConfigError
    from ..experiments.consistency import run_consistency
    from ..experiments.consistency_records import ConsistencyConfig
    from ..runtime import threads

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    config = ConsistencyConfig(n_per_class=args.n_per_class, seed=args.seed, max_steps=args.max_steps,
                               patch=args.patch, gradcam=not args.no_gradcam)
    folder = run_from_args(args, args.run)
    with threads(torch_threads=args.threads):
        result = run_consistency(folder, args.images, config, limit=args.limit)
    print(result.markdown())
    print(f"{result.seconds:.0f} s; wrote {folder.experiment_result_path('consistency')}")
    return 0

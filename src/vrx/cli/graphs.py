"""``vrx graphs``: build every class's structural concept graph for a folder of images."""

from __future__ import annotations

import argparse

from ._common import add_max_pixels_argument, add_run_model_arguments, max_pixels, run_from_args
from ._scale import add_executor_arguments, executor_from


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``graphs`` sub-command."""
    p = sub.add_parser("graphs", help="build structural concept graphs (and teacher logits) for images",
                       description="Match each class's concepts to every image's patches and write "
                                   "RUN/graphs/ for `vrx train`.")
    p.add_argument("--run", required=True, help="run folder made by `vrx discover`")
    p.add_argument("--images", required=True, help="folder with one sub-folder of images per class")
    p.add_argument("--max-images", type=int, help="use at most this many images per class")
    p.add_argument("--node-features", choices=("context", "patch"), default="context",
                   help="a node's feature: the classifier's map pooled over the matched patch (context, "
                        "default) or the patch's own features (patch); see docs/grn.md")
    p.add_argument("--features", choices=("bank", "map"), default="bank",
                   help="patch features to match on: the bank's own mode (bank, default) or one forward of "
                        "each image pooled over its segments (map; a crop-mode bank needs `vrx map-centres`)")
    add_run_model_arguments(p)
    add_executor_arguments(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build and save the graphs; print a one-line description."""
    from .. import stages
    from ..data.images import load_image_folder
    from ..graphs.builder import MatchConfig
    from ..graphs.dataset import describe
    from ..runtime import DISCOVERY_THREADS, threads

    executor = executor_from(args)
    run = run_from_args(args, args.run)
    images = load_image_folder(args.images, max_images_per_class=args.max_images, max_pixels=max_pixels(args))
    with executor, threads(**DISCOVERY_THREADS):
        ds = stages.build_graphs(run, run.adapter(), images, MatchConfig(node_features=args.node_features, features=args.features),
                                 executor=executor)
    print(describe(ds))
    print(f"graphs: {run.graphs_dir}")
    return 0

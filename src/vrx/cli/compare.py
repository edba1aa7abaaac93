"""``vrx compare``: every attribution method on the same images, one table (docs/compare.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_model_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` sub-command."""
    p = subparsers.add_parser(
        "compare", help="compare attribution methods (VRX included) on the same images",
        description="Run attribution methods on the same images and targets, time them, and score them "
                    "with deletion / insertion AUC, the pointing games (toyworld), the trade-off curve and, "
                    "with --run, C-Deletion / C-Insertion of concept orders. Writes compare.json, "
                    "compare.md, grid.png, deletion.png, insertion.png and tradeoff.png into --out.")
    add_model_arguments(p)
    p.set_defaults(model=None)   # to tell "not given" from the default: --run brings its own model
    p.add_argument("--images", required=True, type=Path,
                   help="folder of images, directly inside or in class sub-folders (toyworld)")
    p.add_argument("--methods", help="comma-separated method names (default: every registered method; "
                                     "vrx only with --run)")
    p.add_argument("--run", type=Path, help="a finished vrx run: adds the vrx method and concept orders; "
                                           "the model is the run's")
    p.add_argument("--trust-run", action="store_true",
                   help="load a python: model spec from RUN/run.json (it runs that Python code)")
    p.add_argument("--n", type=int, help="compare this many images (a seeded sample; default all)")
    p.add_argument("--seed", type=int, default=0, help="image sample, method and random-order seed (default 0)")
    p.add_argument("--out", type=Path, help="output folder (default with --run: RUN/experiments/compare)")
    p.add_argument("--subset-methods", help="comma-separated costly methods to run on --subset images only")
    p.add_argument("--subset", type=int, help="images the --subset-methods run on (the first N)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method setting, e.g. rise.n_masks=1000 (VALUE read as JSON, else as text); repeatable")
    p.add_argument("--batch", type=int, default=8, help="images per attribution call (default 8)")
    p.add_argument("--step", type=int, help="deletion/insertion pixels per step (default: the input width)")
    p.add_argument("--grid-images", type=int, default=6, help="image rows in grid.png (default 6)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(func=run)


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


def parse_settings(items: list[str]) -> dict[str, dict]:
    """``["rise.n_masks=1000", ...]`` as ``{"rise": {"n_masks": 1000}}``; ConfigError for a bad item."""
    from ..errors import ConfigError

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method.strip() or not name.strip():
            raise ConfigError(f"--set {item!r}: expected METHOD.KEY=VALUE, e.g. rise.n_masks=1000")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method.strip(), {})[name.strip()] = parsed
    return out


def run(args: argparse.Namespace) -> int:
    """Compare, write the files and print the table."""
    from ..compare.images import select_images
    from ..compare.output import write_comparison
    from ..compare.runner import CompareConfig, compare
    from ..errors import ConfigError
    from ..run import Run
    from ..runtime import threads
    from ._common import adapter_from_args, check_out_dir

    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.out is not None:
        check_out_dir(args.out)
    folder = None
    if args.run is not None:
        if args.model is not None:
            raise ConfigError("give --model or --run, not both: with --run the model is the run's")
        folder = Run(args.run, trust_code=args.trust_run)
        adapter = folder.adapter()
        out = args.out if args.out is not None else folder.experiment_dir("compare")
    else:
        if args.out is None:
            raise ConfigError("--out is required without --run")
        args.model = args.model or "efficientnet-lite0"
        adapter = adapter_from_args(args)
        out = args.out
    config = CompareConfig(methods=_names(args.methods), settings=parse_settings(args.set),
                           subset_methods=_names(args.subset_methods), subset=args.subset, seed=args.seed,
                           batch=args.batch, step=args.step, grid_images=args.grid_images)
    images = select_images(args.images, args.n, args.seed)
    with threads(torch_threads=args.threads, blas_threads=1):
        result = compare(adapter, images, config, run=folder)
    written = write_comparison(result, out)
    print(written[1].read_text(), end="")
    for path in written:
        print(path)
    return 0

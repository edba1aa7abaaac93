"""``vrx classify``: the top classes of some images, with probabilities."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InvalidImageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``classify`` sub-command."""
    p = subparsers.add_parser("classify", help="print the top classes of images",
                              description="Print the most probable classes of each image.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (png, jpg, ...)")
    add_model_arguments(p)
    p.add_argument("--top", type=int, default=5, help="how many classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The --model flag and the options a python: model spec needs (shared by other commands)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default="efficientnet-lite0", metavar="SPEC",
                   help="efficientnet-lite0 (default), toy:DIR, python:MODULE:FUNCTION or "
                        "python:FILE.py:FUNCTION")
    g.add_argument("--bottleneck", metavar="LAYER", help="dotted module path of the bottleneck layer")
    g.add_argument("--input-size", type=int, nargs="+", metavar="N", help="input size: S or H W")
    g.add_argument("--mean", type=float, nargs="+", metavar="M", help="normalisation mean (1 or 3 values)")
    g.add_argument("--std", type=float, nargs="+", metavar="S", help="normalisation std (1 or 3 values)")
    g.add_argument("--labels", metavar="FILE", help="class names: text file (one per line) or JSON list")
    g.add_argument("--batch-size", type=int, metavar="N", help="images per forward pass")
    g.add_argument("--device", metavar="DEV", help="torch device (default cpu)")


def load_model_from_args(args: argparse.Namespace):
    """The ClassifierAdapter the model flags describe."""
    from ..models import load

    return load(args.model, bottleneck=args.bottleneck, input_size=args.input_size, mean=args.mean,
                std=args.std, class_names=args.labels, batch_size=args.batch_size, device=args.device)


def run(args: argparse.Namespace) -> int:
    """Classify the images; 1 if any could not be read, else 0."""
    from ..data.images import load_image
    from ..models.adapter import to_tensor

    adapter = load_model_from_args(args)
    failed = 0
    results = []
    bs = adapter.batch_size
    for start in range(0, len(args.images), bs):
        names, batch = [], []
        for path in args.images[start:start + bs]:
            try:
                # Resized on the way in, so a batch of big photos never sits in memory at full size.
                batch.append(to_tensor(load_image(path), size=adapter.input_size))
                names.append(path)
            except InvalidImageError as exc:
                print(f"vrx classify: error: {exc}", file=sys.stderr)
                failed += 1
        if batch:
            for path, preds in zip(names, adapter.predict(batch, top=args.top)):
                results.append((path, preds))
    if args.json:
        print(json.dumps([{"image": path, "top": [{"class_id": p.class_id, "class_name": p.class_name,
                                                   "probability": round(p.probability, 6)} for p in preds]}
                          for path, preds in results], indent=2))
    else:
        for path, preds in results:
            print(path)
            for rank, p in enumerate(preds, 1):
                print(f"  {rank}. {p.probability:6.1%}  {p.class_name} ({p.class_id})")
    return 1 if failed else 0

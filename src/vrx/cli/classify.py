"""``vrx classify``: the top classes of some images, with probabilities."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError, InvalidImageError
from ._common import add_max_pixels_argument, add_model_arguments, adapter_from_args, max_pixels

#: An image whose shorter side is below this share of the model input's is warned about: it is
#: upsampled so far that the prediction says little about it.
TINY_FRACTION = 0.25


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``classify`` sub-command."""
    p = subparsers.add_parser("classify", help="print the top classes of images",
                              description="Print the most probable classes of each image.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (png, jpg, ...)")
    add_model_arguments(p)
    p.add_argument("--top", type=int, default=5,
                   help="how many classes per image (default 5; at most the model's class count)")
    add_max_pixels_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Classify the images; 1 if any could not be read, else 0."""
    from ..data.images import load_image
    from ..models.adapter import to_tensor

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    limit = max_pixels(args)
    adapter = adapter_from_args(args)
    failed = 0
    results = []
    bs = adapter.batch_size
    for start in range(0, len(args.images), bs):
        names, batch = [], []
        for path in args.images[start:start + bs]:
            try:
                # Resized on the way in, so a batch of big photos never sits in memory at full size.
                image = load_image(path, max_pixels=limit)
                warn_if_tiny(path, image.shape[:2], adapter.input_size)
                batch.append(to_tensor(image, size=adapter.input_size))
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


def warn_if_tiny(path: str, shape: tuple[int, ...], input_size: tuple[int, int]) -> None:
    """Warn on stderr, naming the file, when an image is far smaller than the model's input."""
    h, w = shape[:2]
    if min(h, w) < TINY_FRACTION * min(input_size):
        print(f"vrx classify: warning: {path}: image is {w}x{h}, far smaller than the model's "
              f"{input_size[1]}x{input_size[0]} input; it is upsampled and its prediction is unreliable",
              file=sys.stderr)

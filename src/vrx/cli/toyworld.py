"""``vrx toyworld render`` and ``vrx toyworld train``: the synthetic vehicle world and its toy CNN."""

from __future__ import annotations

import argparse

from ..errors import ConfigError

# Demo defaults: 400 images per class train the toy CNN to >= 95% test accuracy in well under
# three minutes on two CPU cores (see docs/toyworld.md for the measured figures).
DEMO_N_PER_CLASS = 400


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``toyworld`` command with its ``render`` and ``train`` sub-commands."""
    from ..models import DEFAULT_EPOCHS, DEFAULT_THREADS  # torch-free

    p = subparsers.add_parser("toyworld", help="render the synthetic vehicle world; train the toy CNN",
                              description="Synthetic vehicles made of parts, with ground-truth part maps.")
    sub = p.add_subparsers(dest="toyworld_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    r = sub.add_parser("render", help="render a dataset folder (images, part maps, scene JSON)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--n-per-class", type=int, default=DEMO_N_PER_CLASS, help="images per class")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--classes", default=None,
                   help="comma-separated classes (default: fire_engine,ambulance,school_bus)")
    r.add_argument("--size", type=int, default=128, help="image side in pixels")
    r.add_argument("--n-random", type=int, default=None, help="images without a vehicle (default: n-per-class)")
    r.set_defaults(func=run_render)

    t = sub.add_parser("train", help="train the toy CNN on a rendered folder")
    t.add_argument("--data", required=True, help="folder written by `vrx toyworld render`")
    t.add_argument("--out", required=True, help="model folder to write")
    t.add_argument("--backbone", choices=("toy", "efficientnet-lite0"), default="toy",
                   help="the toy CNN (default), or EfficientNet-Lite0 (ImageNet weights, frozen) with a "
                        "linear head trained on the folder (render it with --size 224); its spec: "
                        "lite0-toy:OUT")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs (default {DEFAULT_EPOCHS} for the toy CNN, 300 full-batch "
                        "steps for the Lite0 head)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"torch CPU threads for training (default {DEFAULT_THREADS}: robust on shared cores)")
    t.set_defaults(func=run_train)


def _classes(text: str | None) -> list[str]:
    from ..data.toyworld import DEFAULT_CLASSES

    if text is None:
        return list(DEFAULT_CLASSES)
    names = [c.strip() for c in text.split(",") if c.strip()]
    if len(names) < 2:
        raise ConfigError(f"--classes needs at least two class names, got {text!r}")
    return names


def run_render(args: argparse.Namespace) -> int:
    """Render a toyworld dataset folder."""
    from ..data.toyworld import render_dataset
    from ._common import check_out_dir

    check_out_dir(args.out)
    m = render_dataset(args.out, args.n_per_class, args.seed, classes=_classes(args.classes),
                       n_random=args.n_random, size=args.size)
    print(f"toyworld: {m['n_per_class']} x {len(m['classes'])} classes ({', '.join(m['classes'])}) "
          f"+ {m['n_random']} random images, {m['size']} px, seed {m['seed']} -> {args.out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Train the toy CNN on a rendered folder."""
    from ..models import DEFAULT_EPOCHS
    from ..models.toytrain import train_toy
    from ..runtime import threads
    from ._common import check_out_dir

    check_out_dir(args.out)
    if args.backbone == "efficientnet-lite0":
        from ..models import load
        from ..models.lite0toy import train_lite0_head

        with threads(torch_threads=args.threads):
            m = train_lite0_head(args.data, args.out, load("efficientnet-lite0"), seed=args.seed,
                                 **({"epochs": args.epochs} if args.epochs else {}))
        print(f"lite0 head: test accuracy {m['test_accuracy']:.3f}, val {m['val_accuracy']:.3f} "
              f"({m['n_train']}/{m['n_val']}/{m['n_test']} train/val/test images, features "
              f"{m['seconds_features']:.0f} s, total {m['seconds']:.0f} s) -> model spec lite0-toy:{args.out}")
        return 0
    with threads(torch_threads=args.threads):
        m = train_toy(args.data, args.out, epochs=args.epochs or DEFAULT_EPOCHS, seed=args.seed)
    print(f"toy cnn: test accuracy {m['test_accuracy']:.3f}, val {m['val_accuracy']:.3f} "
          f"(best epoch {m['best_epoch']}/{m['epochs']}, {m['n_train']}/{m['n_val']}/{m['n_test']} "
          f"train/val/test images, {m['seconds']:.0f} s) -> {args.out}")
    return 0

"""``vrx train``: distil the classifier into a GRN from ``RUN/graphs/`` and report held-out fidelity."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..grn.config import DistillConfig, GRNConfig


def _sizes(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "none", "linear"):
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    a, d = GRNConfig(), DistillConfig()
    p = subparsers.add_parser("train", help="train the graph reasoning network (GRN) on RUN/graphs",
                              description="Distil the classifier into a GRN from RUN/graphs/, write "
                              "RUN/grn/ (model.safetensors, config.json, metrics.json) and print the "
                              "held-out fidelity of the GRN and its ablations.")
    p.add_argument("--run", required=True, type=Path, help="run folder holding graphs/")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"maximum epochs ({d.epochs})")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--hidden", type=_sizes, default=a.hidden, help="graph-conv sizes, e.g. 32,32")
    p.add_argument("--edge-dim", type=int, default=a.edge_dim)
    p.add_argument("--input-proj", type=int, default=a.input_proj, help="0: no input projection")
    p.add_argument("--head-hidden", type=_sizes, default=a.head_hidden,
                   help="MLP sizes of the embedding network E; 'linear' (default) for one linear layer")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--mask-prob", type=float, default=d.mask_prob,
                   help="probability of the concept-masking augmentation")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--split", type=Path, default=None,
                   help="JSON file with explicit {train, val, test} image index lists")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-ablations", action="store_true", help="train only the full GRN")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, write RUN/grn/ and print the fidelity table."""
    from .. import stages
    from ..grn.distill import Split
    from ..grn.fidelity import format_table
    from ..run import Run
    from ..runtime import GRN_THREADS, threads
    from ..store import read_json

    config = GRNConfig(hidden=args.hidden, edge_dim=args.edge_dim, input_proj=args.input_proj or None,
                       head_hidden=args.head_hidden)
    distill = DistillConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size,
                            lr=args.lr, temperature=args.temperature, mask_prob=args.mask_prob,
                            val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                            seed=args.seed)
    split = None
    if args.split:
        try:
            split = Split.from_dict(read_json(args.split))
        except ConfigError as exc:
            raise ConfigError(f"{args.split}: {exc}") from None
    run = Run(args.run)
    with threads(**GRN_THREADS):
        metrics = stages.train_grn(run, config, distill, ablations=not args.no_ablations, split=split)
    print(format_table(metrics))
    print(f"wrote {run.grn_dir}/model.safetensors, config.json, metrics.json")
    return 0

"""``vrx demo``: the whole pipeline on the built-in toyworld, with defaults."""

from __future__ import annotations

import argparse
import dataclasses
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser("demo", help="run VRX end to end on the built-in toyworld",
                       description="Render toyworld, train the toy CNN and explain it with VRX. "
                                   "A second run reuses every finished stage.")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", help="comma-separated toyworld classes (default: fire_engine,ambulance,"
                                     "school_bus; police_car,taxi differ only in layout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its summary."""
    from ..demo import DemoConfig, run_demo

    from ._common import check_out_dir

    check_out_dir(args.out)
    config = DemoConfig(seed=args.seed)
    if args.classes:
        config = dataclasses.replace(config, classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()))
    summary = run_demo(args.out, config)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    print(f"toy CNN held-out accuracy: {summary['cnn_test_accuracy']:.3f}  (summary: {args.out}/summary.json)")
    return 0

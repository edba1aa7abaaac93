"""The executor flags that ``vrx discover`` and ``vrx graphs`` share (see docs/scale.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..scale.executor import Executor


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """--executor, --address, --workers."""
    g = p.add_argument_group("scale-out")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where images are segmented and featurised: this process (default) or Ray "
                        "workers (pip install 'vrx[ray]'); the results are the same")
    g.add_argument("--address", help="address of a running Ray cluster (`ray start --head` prints it; "
                                     "default: start a local Ray)")
    g.add_argument("--workers", type=int, help="Ray workers, one CPU each (default: every CPU of the cluster)")


def executor_from(args: argparse.Namespace) -> Executor:
    """The executor the flags ask for (ConfigError for a bad combination or a missing Ray)."""
    from ..scale.executor import make_executor

    return make_executor(args.executor, address=args.address, workers=args.workers)

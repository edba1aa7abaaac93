"""What several sub-commands share: the model flags, and the run manifest that remembers them."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..run import ModelSpec

__all__ = ["add_model_arguments", "model_spec", "adapter_from_args"]


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The --model flag and the options a python: model spec needs."""
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


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model the flags describe, as the run manifest records it."""
    return ModelSpec.from_dict({f.name: getattr(args, f.name) for f in fields(ModelSpec)
                                if getattr(args, f.name, None) is not None})


def adapter_from_args(args: argparse.Namespace):
    """The ClassifierAdapter the model flags describe."""
    return model_spec(args).load()


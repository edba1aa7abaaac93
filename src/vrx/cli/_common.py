"""What several sub-commands share: the model flags, the run manifest that remembers them, the
run-folder flags (--model, --trust-run) and the image-size limit."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from ..errors import ConfigError
from ..run import ModelSpec, Run

__all__ = ["add_model_arguments", "model_spec", "adapter_from_args", "add_run_model_arguments", "run_from_args",
           "add_max_pixels_argument", "max_pixels", "check_out_dir"]


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The --model flag and the options a python: model spec needs."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default="efficientnet-lite0", metavar="SPEC",
                   help="efficientnet-lite0 (default), toy:DIR, python:MODULE:FUNCTION or "
                        "python:FILE.py:FUNCTION (a python: spec imports and runs that code)")
    g.add_argument("--bottleneck", metavar="LAYER", help="dotted module path of the bottleneck layer")
    g.add_argument("--input-size", type=int, nargs="+", metavar="N", help="input size: S or H W")
    g.add_argument("--mean", type=float, nargs="+", metavar="M", help="normalisation mean (1 or 3 values)")
    g.add_argument("--std", type=float, nargs="+", metavar="S", help="normalisation std (1 or 3 values)")
    g.add_argument("--labels", metavar="FILE", help="class names: text file (one per line) or JSON list")
    g.add_argument("--batch-size", type=int, metavar="N",
                   help="images per forward pass (default: as many as fit the memory budget)")
    g.add_argument("--memory-budget", metavar="B",
                   help="memory a batch may take, a fraction of the host's RAM or free GPU memory (0.25, the "
                        "default; 25%%) or a size (2GB); ignored with --batch-size")
    g.add_argument("--device", metavar="DEV", help="torch device (default cpu)")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model the flags describe, as the run manifest records it."""
    return ModelSpec.from_dict({f.name: getattr(args, f.name) for f in fields(ModelSpec)
                                if getattr(args, f.name, None) is not None})


def adapter_from_args(args: argparse.Namespace):
    """The ClassifierAdapter the model flags describe."""
    return model_spec(args).load()



def add_run_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model and --trust-run for a command that loads the classifier RUN/run.json names."""
    g = p.add_argument_group("run model")
    g.add_argument("--model", metavar="SPEC", help="load this model spec instead of the one in RUN/run.json "
                   "(its other options are kept); needed for a python: spec unless --trust-run")
    g.add_argument("--trust-run", action="store_true",
                   help="load a python: model spec from RUN/run.json: that runs the Python code it names, "
                        "so only for run folders you trust")


def run_from_args(args: argparse.Namespace, path: str | os.PathLike) -> Run:
    """The run folder at ``path`` with the --model / --trust-run choices of ``args``."""
    return Run(path, model=getattr(args, "model", None), trust_code=bool(getattr(args, "trust_run", False)))


def add_max_pixels_argument(p: argparse.ArgumentParser) -> None:
    """--max-megapixels: the size limit checked from each image's header before it is decoded."""
    from ..data.images import DEFAULT_MAX_PIXELS

    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6, metavar="MP",
                   help=f"refuse images larger than this (default {DEFAULT_MAX_PIXELS / 1e6:g}; 0: no limit)")


def max_pixels(args: argparse.Namespace) -> int | None:
    """The pixel limit --max-megapixels asks for (None: no limit)."""
    mp = args.max_megapixels
    if mp < 0:
        raise ConfigError(f"--max-megapixels must be >= 0, got {mp:g}")
    return None if mp == 0 else int(mp * 1e6)


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> None:
    """ConfigError when an output folder is an existing file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: is a file, not a folder; give a folder for the output")

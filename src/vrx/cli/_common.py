"""What several sub-commands share: the model flags and the run manifest that remembers them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ArtifactError
from ..store import read_json, write_json
from .classify import add_model_arguments, load_model_from_args

__all__ = ["add_model_arguments", "adapter_from_args", "adapter_from_run", "save_run_manifest"]

MODEL_FLAGS = ("model", "bottleneck", "input_size", "mean", "std", "labels", "batch_size", "device")

adapter_from_args = load_model_from_args


def save_run_manifest(run: Path, args: argparse.Namespace, **extra) -> None:
    """Record in ``RUN/run.json`` how the model was given, so later stages load the same one."""
    manifest = {"model": {k: getattr(args, k, None) for k in MODEL_FLAGS}, **extra}
    write_json(Path(run) / "run.json", manifest)


def adapter_from_run(run: Path):
    """The ClassifierAdapter a run was made with (from ``RUN/run.json``)."""
    path = Path(run) / "run.json"
    if not path.exists():
        raise ArtifactError(f"{path}: missing; run `vrx discover --out {run}` first")
    flags = read_json(path)["model"]
    return load_model_from_args(argparse.Namespace(**{k: flags.get(k) for k in MODEL_FLAGS}))

"""A GRN's folder: ``model.safetensors`` (the weights) and ``config.json`` (how to rebuild the network).

``config.json``, format version 2::

    {"format_version": 2,
     "config": {...},            GRNConfig.to_dict(): the architecture
     "shape": {"num_classes": K, "num_nodes": N, "feature_dim": D},   the graphs it was built for
     "class_names": [...],       the K classes of interest, in order (null when unnamed)
     "layout": {...},            EmbeddingLayout.to_dict(), for readers without vrx
     "weights_hash": "...",      content hash of model.safetensors: damaged weights are an error
     "meta_hash": "...",         hash of this record itself (vrx.store.seal): an edit is an error
     ...}                        what the caller adds (Distiller.save: "split", "distill", "best_epoch",
                                 "history")

Version 1 (a single config holding architecture, training settings and N, K, D) is still read.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, ConfigError
from ..graphs.scg import GraphShape
from ..store import SEAL_KEY, check_seal, content_hash, load_tensors, read_json, save_tensors, seal, write_json
from .config import GRNConfig
from .model import GRN

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 2
_OWN_KEYS = ("format_version", "config", "shape", "class_names", "layout", "weights_hash", SEAL_KEY)
RETRAIN = "run `vrx train` again"


def save_grn(directory: str | os.PathLike, model: GRN, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (plus the JSON-ready ``extra``) into ``directory``."""
    directory = Path(directory)
    clash = sorted(set(extra or {}) & set(_OWN_KEYS))
    if clash:
        raise ConfigError(f"save_grn: extra keys {clash} are written by save_grn itself")
    save_tensors(directory / MODEL_FILE, dict(model.state_dict()))
    meta = {"format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "shape": model.graph_shape.to_dict(), "class_names": model.class_names,
            "layout": model.layout.to_dict(), "weights_hash": _weights_hash(directory / MODEL_FILE),
            **(extra or {})}
    write_json(directory / CONFIG_FILE, seal(meta))
    return directory


def _weights_hash(path: Path) -> str:
    try:
        return content_hash(path.read_bytes())
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _architecture(meta: dict[str, Any]) -> tuple[GRNConfig, GraphShape]:
    """(architecture, graph shape) recorded in a config.json of version 1 or 2."""
    config = dict(meta.get("config") or {})
    if meta.get("format_version") == 1:
        # Version 1 kept N, K, D and the training settings in the one config.
        shape = GraphShape(config.get("K"), config.get("N"), config.get("D"))
        known = {f.name for f in dataclasses.fields(GRNConfig)}
        return GRNConfig.from_dict({k: v for k, v in config.items() if k in known}), shape
    # GRNs saved before these settings existed had a full head and embedded absent nodes.
    config = {"head": "full", "zero_absent": False} | config
    return GRNConfig.from_dict(config), GraphShape.from_dict(meta.get("shape"))


def load_grn(directory: str | os.PathLike) -> GRN:
    """Read a GRN written by :func:`save_grn` into ``directory``, in eval mode; ArtifactError names
    the file that is missing, of another format version or inconsistent."""
    directory = Path(directory)
    cfg_path, model_path = directory / CONFIG_FILE, directory / MODEL_FILE
    meta = read_json(cfg_path)
    if not isinstance(meta, dict) or meta.get("format_version") not in (1, FORMAT_VERSION):
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ArtifactError(f"{cfg_path}: not a GRN config of format version 1 or {FORMAT_VERSION} "
                            f"(format_version {version!r})")
    check_seal(meta, cfg_path, RETRAIN)
    try:
        config, shape = _architecture(meta)
        model = GRN(config, shape, meta.get("class_names"))
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as exc:
        why = exc if isinstance(exc, ConfigError) else f"malformed ({type(exc).__name__}: {exc})"
        raise ArtifactError(f"{cfg_path}: {why}") from None
    # Safetensors has no checksum: a flipped byte in the weights would load as another network.
    recorded = meta.get("weights_hash")
    if recorded is not None and model_path.exists() and recorded != _weights_hash(model_path):
        raise ArtifactError(f"{model_path}: does not match the weights_hash in {cfg_path.name} (the file "
                            "is damaged or from another GRN); run `vrx train` again")
    state = load_tensors(model_path)
    own = model.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        raise ArtifactError(f"{model_path}: does not match {cfg_path.name} (missing {sorted(missing)}, "
                            f"unexpected {sorted(unexpected)})")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ArtifactError(f"{model_path}: '{key}' has shape {tuple(value.shape)}, "
                                f"{cfg_path.name} implies {tuple(own[key].shape)}")
    model.load_state_dict(state)
    model.eval()
    return model

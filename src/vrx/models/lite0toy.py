"""EfficientNet-Lite0 with a toyworld head: an ImageNet backbone where the parts are known.

The backbone is EfficientNet-Lite0 with its bundled ImageNet weights, frozen; only a new linear
head (its ``_fc``, 1280 -> classes) is trained, on toyworld scenes rendered at 224 px. Since the
backbone is frozen, every image's pooled 1280-d features are computed once (one forward each) and
the head is fitted on them: training costs about one forward per image, not one per epoch.

A model folder (``lite0-toy:DIR`` as a model spec) holds ``head.safetensors`` (the head's weight
and bias), ``config.json`` (class names) and ``metrics.json`` and ``split.json`` as ``vrx
toyworld train`` writes them for the toy CNN.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.toyworld.dataset import list_images
from ..errors import ArtifactError, ConfigError, ModelSpecError
from ..store import load_tensors, read_json, save_tensors, write_json
from .adapter import ClassifierAdapter
from .toytrain import load_images, split_indices

log = logging.getLogger(__name__)

ARCH = "efficientnet-lite0-head"
HEAD_FILE, CONFIG_FILE = "head.safetensors", "config.json"
POOLED = "_avg_pooling"   # the 1280-d pooled features the head reads
FEATURES = 1280


def lite0_with_head(lite0: nn.Module, head: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of EfficientNet-Lite0 ``lite0`` (the zoo's, ImageNet weights) whose ``_fc`` is the given head."""
    model = copy.deepcopy(lite0)  # the zoo's network is shared within the process: never change it
    weight, bias = head["weight"], head["bias"]
    if weight.ndim != 2 or weight.shape[1] != FEATURES or bias.shape != weight.shape[:1]:
        raise ArtifactError(f"head of shape {tuple(weight.shape)} / {tuple(bias.shape)}; expected "
                            f"[classes, {FEATURES}] / [classes]")
    model._fc = nn.Linear(FEATURES, weight.shape[0])
    model._fc.load_state_dict({"weight": weight, "bias": bias})
    model.requires_grad_(False)
    return model.eval()


def load_lite0_toy(path: str | os.PathLike, lite0: ClassifierAdapter, **options: Any) -> ClassifierAdapter:
    """The model saved in folder ``path`` by :func:`train_lite0_head`, as a ClassifierAdapter.

    ``lite0`` is the zoo's EfficientNet-Lite0 adapter (``vrx.models.load("efficientnet-lite0")``):
    the backbone, its input size, normalisation and bottleneck.
    """
    folder = Path(path).expanduser()
    if not str(path) or not (folder / HEAD_FILE).is_file():
        raise ModelSpecError(f"lite0-toy model folder {str(folder)!r} has no {HEAD_FILE}; train one with "
                             "`vrx toyworld train --backbone efficientnet-lite0 --data DIR --out MODEL_DIR`")
    config = read_json(folder / CONFIG_FILE)
    if not isinstance(config, dict) or config.get("arch") != ARCH or "class_names" not in config:
        raise ArtifactError(f"{folder / CONFIG_FILE}: not a {ARCH} config")
    model = lite0_with_head(lite0.model, load_tensors(folder / HEAD_FILE))
    settings = {"input_size": tuple(lite0.input_size), "mean": tuple(lite0.mean), "std": tuple(lite0.std),
                "bottleneck": lite0.bottleneck,
                "class_names": list(config["class_names"]), "name": f"lite0-toy-{folder.resolve().name}"}
    settings.update(options)
    return ClassifierAdapter(model, **settings)


def pooled_features(adapter: ClassifierAdapter, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """[N, 1280] pooled backbone features of uint8 N x 3 x H x W images (resized to 224 px)."""
    out = []
    for s in range(0, len(images), batch_size):
        x = images[s:s + batch_size].float().div_(255.0)
        out.append(adapter.activations(x, layer=POOLED).flatten(1))
    return torch.cat(out)


def train_lite0_head(data_dir: str | os.PathLike, out_dir: str | os.PathLike, lite0: ClassifierAdapter, *,
                     seed: int = 0,
                     epochs: int = 300, lr: float = 1e-2, weight_decay: float = 1e-3,
                     val_fraction: float = 0.15, test_fraction: float = 0.15) -> dict[str, Any]:
    """Fit a linear head on frozen Lite0 features of a rendered toyworld folder; save; return metrics.

    Full-batch Adam on the cross-entropy, the epoch with the best validation accuracy kept (ties:
    the lower validation loss), test accuracy measured once on it. ``lite0`` is the zoo's
    EfficientNet-Lite0 adapter. Like :func:`train_toy`, it runs on torch's current thread settings.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    t0 = time.perf_counter()
    data_dir, out = Path(data_dir), Path(out_dir)
    classes, items = list_images(data_dir)
    labels = torch.from_numpy(np.array([k for _, k in items], dtype=np.int64))
    tr, va, te = split_indices(labels.numpy(), val_fraction, test_fraction, seed)
    if len(tr) == 0:
        raise ConfigError(f"{data_dir}: no training images left after the val/test split")
    feats = pooled_features(lite0, load_images([p for p, _ in items]))
    t_features = time.perf_counter() - t0

    gen = torch.Generator().manual_seed(int(seed))
    head = nn.Linear(FEATURES, len(classes))
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    best: tuple[tuple[float, float], int, dict[str, torch.Tensor] | None] = ((-1.0, 0.0), 0, None)
    for epoch in range(epochs):
        loss = F.cross_entropy(head(feats[tr]), labels[tr])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            logits = head(feats[va])
            score = (_acc(logits, labels[va]), -float(F.cross_entropy(logits, labels[va])) if len(va) else 0.0)
        if score > best[0]:
            best = (score, epoch + 1, {k: v.detach().clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[2])
    with torch.no_grad():
        metrics = {"val_accuracy": _acc(head(feats[va]), labels[va]),
                   "test_accuracy": _acc(head(feats[te]), labels[te]),
                   "train_accuracy": _acc(head(feats[tr]), labels[tr])}
    metrics.update(best_epoch=best[1], epochs=epochs, n_train=len(tr), n_val=len(va), n_test=len(te),
                   class_names=classes, seed=int(seed), lr=lr, weight_decay=weight_decay,
                   backbone="efficientnet-lite0 (ImageNet, frozen)", seconds_features=round(t_features, 2),
                   seconds=round(time.perf_counter() - t0, 2), data_dir=str(data_dir),
                   torch_threads=torch.get_num_threads())
    save_tensors(out / HEAD_FILE, {k: v.contiguous() for k, v in head.state_dict().items()})
    write_json(out / CONFIG_FILE, {"arch": ARCH, "class_names": classes, "trained_on": str(data_dir),
                                   "seed": int(seed)})
    write_json(out / "split.json", {"train": [str(items[i][0]) for i in tr], "val": [str(items[i][0]) for i in va],
                                    "test": [str(items[i][0]) for i in te]})
    write_json(out / "metrics.json", metrics)
    return metrics


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")

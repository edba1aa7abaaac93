"""A small CNN for 128 x 128 toyworld images, and its safetensors + JSON artifact.

The ``features`` stack ends in a 16 x 16 map of ReLU activations, then a global average pool and
one linear layer. The bottleneck where concepts are discovered and Grad-CAM is taken is the
block *before* the last (``features.3``, 64 x 16 x 16): at the last block the logit is a linear
read-out, so its gradient is the same for every image and every TCAV score is 0 or 1; one
Conv-BN-ReLU block in between makes the gradient depend on the image, as in real networks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArtifactError
from ..store import load_tensors, read_json, save_tensors, write_json

ARCH = "toycnn"
DEFAULT_WIDTHS: tuple[int, ...] = (16, 32, 64, 64, 96)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=False))


class ToyCNN(nn.Module):
    """Five Conv-BN-ReLU blocks (three strided: 128→64→32→16 px), global average pool, linear head."""

    def __init__(self, num_classes: int = 3, widths: tuple[int, ...] | list[int] = DEFAULT_WIDTHS,
                 in_channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 5 or min(widths) < 1 or num_classes < 1:
            raise ValueError(f"ToyCNN needs 5 positive widths and num_classes >= 1, got {widths}, {num_classes}")
        self.num_classes, self.widths, self.in_channels = int(num_classes), widths, int(in_channels)
        w0, w1, w2, w3, w4 = widths
        # Strided convs instead of pooling: training on two CPU cores must take minutes, and at
        # 16 x 16 each cell still sees about one small part (8 px); the last two blocks widen the
        # receptive field (47 px) so that relations between neighbouring parts are visible.
        # torch's default layer init draws from the global generator; fork it so that building a
        # model never changes the caller's random state, then initialise from ``seed`` explicitly.
        with torch.random.fork_rng(devices=[]):
            self.features = nn.Sequential(
                _block(in_channels, w0, stride=2),
                _block(w0, w1, stride=2),
                _block(w1, w2, stride=2),
                _block(w2, w3),
                _block(w3, w4),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(w4, num_classes)
        init_toy_cnn(self, torch.Generator().manual_seed(int(seed)))

    @property
    def bottleneck(self) -> str:
        """Dotted name of the default bottleneck layer: the output of the block before the last."""
        return f"features.{len(self.features) - 2}"

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments."""
        return {"num_classes": self.num_classes, "widths": list(self.widths), "in_channels": self.in_channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised NCHW images."""
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def init_toy_cnn(model: ToyCNN, generator: torch.Generator) -> ToyCNN:
    """Re-initialise weights from an explicit generator (He init for convs), leaving global RNG alone."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features ** 0.5
                m.weight.copy_((torch.rand(m.weight.shape, generator=generator) * 2 - 1) * bound)
                m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
                m.reset_running_stats()
    return model


REQUIRED_KEYS = ("arch", "kwargs", "class_names", "input_size", "mean", "std", "bottleneck")


def save_toy_model(directory: str | os.PathLike, model: ToyCNN, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (meta must give class_names, mean and std)."""
    d = Path(directory)
    missing = [k for k in ("class_names", "mean", "std") if k not in meta]
    if missing:
        raise ArtifactError(f"{d}: cannot save toy model, meta lacks {', '.join(missing)}")
    if len(meta["class_names"]) != model.num_classes:
        raise ArtifactError(f"{d}: {len(meta['class_names'])} class names for a {model.num_classes}-class model")
    config = {"arch": ARCH, "kwargs": model.config(), "input_size": [128, 128],
              "bottleneck": model.bottleneck, **meta}
    config["class_names"] = list(config["class_names"])
    config["mean"], config["std"] = [float(x) for x in config["mean"]], [float(x) for x in config["std"]]
    save_tensors(d / WEIGHTS_FILE, model.state_dict())
    write_json(d / CONFIG_FILE, config)
    return d


def load_toy_model(directory: str | os.PathLike) -> tuple[ToyCNN, dict[str, Any]]:
    """Load a saved toy model in eval mode with its config; ArtifactError names the folder if broken."""
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(f"{d}: toy model folder missing")
    config = read_json(d / CONFIG_FILE)
    if not isinstance(config, dict):
        raise ArtifactError(f"{d / CONFIG_FILE}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ArtifactError(f"{d / CONFIG_FILE}: missing keys {', '.join(missing)}")
    if config["arch"] != ARCH:
        raise ArtifactError(f"{d / CONFIG_FILE}: arch is {config['arch']!r}, expected {ARCH!r}")
    try:
        model = ToyCNN(**config["kwargs"])
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{d / CONFIG_FILE}: bad model kwargs ({exc})") from None
    if len(config["class_names"]) != model.num_classes:
        raise ArtifactError(f"{d / CONFIG_FILE}: {len(config['class_names'])} class names for "
                            f"{model.num_classes} outputs")
    state = load_tensors(d / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{d / WEIGHTS_FILE}: weights do not fit the config ({exc})") from None
    model.eval()
    return model, config

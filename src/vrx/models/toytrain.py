"""Training the toy CNN on a rendered toyworld folder.

Images are split by image into train / val / test per class with a fixed seed. Only the training
split is augmented (horizontal flips and small shifts, both of which toyworld already varies), the
epoch with the best validation accuracy is kept, and test accuracy is measured once, on it.
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
from PIL import Image

from ..data.toyworld.dataset import list_images
from ..errors import ConfigError, InvalidImageError
from ..progress import progress as progress_bar
from ..store import write_json
from .toycnn import ToyCNN, init_toy_cnn, save_toy_model
from .toydefaults import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_THREADS

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_EPOCHS", "DEFAULT_THREADS", "load_images", "predict", "split_indices",
           "train_toy"]

log = logging.getLogger(__name__)

MAX_SHIFT = 6


def load_images(paths: list[Path]) -> torch.Tensor:
    """Read RGB images of one size into a uint8 N x 3 x H x W tensor, naming any bad file."""
    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise InvalidImageError(f"{p}: cannot read image ({exc})") from None
        if arrays and a.shape != arrays[0].shape:
            raise InvalidImageError(f"{p}: size {a.shape[1]}x{a.shape[0]} differs from "
                                    f"{arrays[0].shape[1]}x{arrays[0].shape[0]} of {paths[0]}")
        arrays.append(a)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class random split of image indices into (train, val, test)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) "
                          "and sum below 1")
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = int(round(len(idx) * val_fraction)), int(round(len(idx) * test_fraction))
        parts[1].extend(idx[:n_val])
        parts[2].extend(idx[n_val:n_val + n_test])
        parts[0].extend(idx[n_val + n_test:])
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a shift of up to MAX_SHIFT pixels (edge-replicated)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (MAX_SHIFT,) * 4, mode="replicate")
    shifts = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 2), generator=gen)
    return torch.stack([padded[i, :, sy:sy + h, sx:sx + w] for i, (sy, sx) in enumerate(shifts.tolist())])


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - mean[:, None, None]) / std[:, None, None]


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
            batch_size: int = 128) -> torch.Tensor:
    """Predicted class ids for uint8 images (eval mode)."""
    model.eval()
    out = [model(_normalise(images[i:i + batch_size], mean, std)).argmax(1)
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def _accuracy(model, images, labels, mean, std) -> float:
    if len(images) == 0:
        return float("nan")
    return float((predict(model, images, mean, std) == labels).float().mean())


def train_toy(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, epochs: int = DEFAULT_EPOCHS,
              seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE, val_fraction: float = 0.15,
              test_fraction: float = 0.15, lr: float = 3e-3, weight_decay: float = 1e-4,
              widths: tuple[int, ...] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a ToyCNN on a rendered folder, save it to ``out_dir`` and return its metrics.

    It runs on torch's current thread settings, which it leaves alone; to train as the CLI and the
    demo do, scope them: ``with vrx.runtime.threads(torch_threads=DEFAULT_THREADS): train_toy(...)``.
    """
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    return _train(Path(data_dir), Path(out_dir), epochs=epochs, seed=seed, batch_size=batch_size,
                  val_fraction=val_fraction, test_fraction=test_fraction, lr=lr,
                  weight_decay=weight_decay, widths=widths, progress=progress)


def _train(data_dir: Path, out_dir: Path, *, epochs: int, seed: int, batch_size: int, val_fraction: float,
           test_fraction: float, lr: float, weight_decay: float, widths: tuple[int, ...] | None,
           progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    classes, items = list_images(data_dir)
    labels_np = np.array([k for _, k in items], dtype=np.int64)
    images = load_images([p for p, _ in items])
    labels = torch.from_numpy(labels_np)
    tr, va, te = split_indices(labels_np, val_fraction, test_fraction, seed)
    if len(tr) == 0:
        raise ConfigError(f"{data_dir}: no training images left after the val/test split")
    x_tr, y_tr = images[tr], labels[tr]
    # Per-channel statistics of the training split; the adapter applies them to [0, 1] images.
    pix = x_tr.float().div_(255.0)
    mean, std = pix.mean(dim=(0, 2, 3)), pix.std(dim=(0, 2, 3)).clamp_min(1e-3)
    del pix

    gen = torch.Generator().manual_seed(int(seed))
    model = init_toy_cnn(ToyCNN(num_classes=len(classes), **({"widths": widths} if widths else {})), gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(tr) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.25)
    best = (-1.0, -1, None)
    history = []
    bar = progress_bar(range(epochs), desc="train toy cnn", enabled=None if progress else False)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(tr), generator=gen)
        total, seen = 0.0, 0
        for s in range(0, len(tr), batch_size):
            idx = order[s:s + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            xb = _normalise(_augment(x_tr[idx], gen), mean, std)
            loss = F.cross_entropy(model(xb), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        val_acc = _accuracy(model, images[va], labels[va], mean, std)
        train_loss = total / max(seen, 1)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_accuracy": val_acc})
        log.info("epoch %d/%d: train loss %.4f, val accuracy %.4f", epoch + 1, epochs, train_loss, val_acc)
        score = val_acc if val_acc == val_acc else -train_loss  # no val split: keep the lowest loss
        if score > best[0]:
            best = (score, epoch + 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    metrics = {
        "val_accuracy": _accuracy(model, images[va], labels[va], mean, std),
        "test_accuracy": _accuracy(model, images[te], labels[te], mean, std),
        "train_accuracy": _accuracy(model, x_tr, y_tr, mean, std),
        "best_epoch": best[1], "epochs": epochs, "n_train": len(tr), "n_val": len(va), "n_test": len(te),
        "class_names": classes, "seed": int(seed), "batch_size": batch_size, "lr": lr,
        "seconds": round(time.perf_counter() - t0, 2), "history": history,
        "data_dir": str(data_dir), "torch_threads": torch.get_num_threads(),
    }
    out = Path(out_dir)
    save_toy_model(out, model, {"class_names": classes, "mean": mean.tolist(), "std": std.tolist(),
                                "input_size": list(images.shape[2:]), "trained_on": str(data_dir),
                                "seed": int(seed)})
    write_json(out / "split.json", {"train": [str(items[i][0]) for i in tr],
                                    "val": [str(items[i][0]) for i in va],
                                    "test": [str(items[i][0]) for i in te]})
    write_json(out / "metrics.json", metrics)
    return metrics

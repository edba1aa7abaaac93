"""Distillation of a classifier into a GRN (paper eq. 4): L1 between temperature softmaxes of the GRN
output and the teacher's logits, with the paper's concept-masking augmentation, a by-image
train/validation/test split, mini-batches, Adam and early stopping on validation loss.

Training runs with the process's torch thread settings as they are; the GRN's ops are tiny, so the
command line runs it with one thread (``vrx.runtime.threads(**vrx.runtime.GRN_THREADS)``).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..graphs.dataset import GraphDataset
from ..graphs.scg import SCGBatch
from ..graphs.teacher import Teacher
from ..progress import progress
from .config import DistillConfig, GRNConfig
from .io import save_grn
from .model import GRN

__all__ = ["Distiller", "Split", "distill_loss", "effect_loss", "feature_stats", "make_split", "mask_augment"]

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Image indices of the training, validation and test parts."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def __post_init__(self) -> None:
        self.train, self.val, self.test = (torch.as_tensor(v, dtype=torch.long).flatten()
                                           for v in (self.train, self.val, self.test))

    def check(self, n: int) -> None:
        """Raise ConfigError unless the parts are disjoint, in range and training is non-empty."""
        allidx = torch.cat([self.train, self.val, self.test])
        if len(self.train) == 0:
            raise ConfigError("split: the training part is empty")
        if len(allidx) and (allidx.min() < 0 or allidx.max() >= n):
            raise ConfigError(f"split: indices out of range for {n} images")
        if len(torch.unique(allidx)) != len(allidx):
            raise ConfigError("split: train, val and test overlap")

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-ready index lists."""
        return {"train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        """From ``{"train": [...], "val": [...], "test": [...]}`` (val/test may be missing);
        ConfigError unless each part is a list of integer image indices."""
        if not isinstance(d, dict) or "train" not in d:
            raise ConfigError("split: expected an object with 'train' (and 'val', 'test') lists of image indices")
        parts = [d["train"], d.get("val", []), d.get("test", [])]
        for name, part in zip(("train", "val", "test"), parts):
            if not (isinstance(part, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in part)):
                raise ConfigError(f"split: '{name}' must be a list of integer image indices")
        return cls(*parts)


def make_split(image_ids: list[str] | int, val_fraction: float = 0.15, test_fraction: float = 0.15,
               seed: int = 0) -> Split:
    """Random split by image: rows sharing an image id always land in the same part."""
    ids = [str(i) for i in range(image_ids)] if isinstance(image_ids, int) else list(image_ids)
    groups: dict[str, list[int]] = {}
    for row, image in enumerate(ids):
        groups.setdefault(image, []).append(row)
    keys = list(groups)
    n = len(keys)
    n_test = min(n, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = round(n * val_fraction) if val_fraction > 0 else 0
    # Keep at least one image in each requested part when there are enough images to go around.
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    if val_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    if n - n_test - n_val < 1:
        raise ConfigError(f"split: {n} images are too few for val {val_fraction} and test "
                          f"{test_fraction} fractions")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()

    def rows(part: list[int]) -> torch.Tensor:
        return torch.tensor(sorted(r for g in part for r in groups[keys[g]]), dtype=torch.long)

    return Split(rows(order[n_test + n_val:]), rows(order[n_test:n_test + n_val]), rows(order[:n_test]))


def distill_loss(output: torch.Tensor, target_logits: torch.Tensor, temperature: float = 1.0
                 ) -> torch.Tensor:
    """Eq. 4: ||softmax(output/T) - softmax(target/T)||_1 summed over classes, mean over the batch."""
    p = torch.softmax(output / temperature, dim=-1)
    q = torch.softmax(target_logits / temperature, dim=-1)
    return (p - q).abs().sum(dim=-1).mean()


def effect_loss(plain: torch.Tensor, masked: torch.Tensor, teacher_plain: torch.Tensor,
                teacher_masked: torch.Tensor) -> torch.Tensor:
    """L1 between the GRN's and the teacher's change of class probabilities when a concept is masked."""
    dp = masked.softmax(-1) - plain.softmax(-1)
    dq = teacher_masked.softmax(-1) - teacher_plain.softmax(-1)
    return (dp - dq).abs().sum(-1).mean()


def mask_augment(graphs: SCGBatch, teacher: Teacher, prob: float, generator: torch.Generator
                 ) -> tuple[SCGBatch, torch.Tensor, torch.Tensor]:
    """Concept masking: with probability ``prob`` per image, one detected concept becomes a dummy node
    (with the nodes its patch covers, ``Teacher.covered``).

    The concept is drawn uniformly among the image's detected (k, n) with known masked logits, and the
    target becomes ``teacher.masked_logits[b, k, n]``. Returns (graphs, target logits [B, K],
    node mask [B, K, N] bool). The same number of random draws is made whatever ``prob`` is.
    """
    b, k, n, _ = graphs.shape
    maskable = teacher.maskable(graphs.present).reshape(b, k * n)
    has = maskable.any(dim=1)
    do = (torch.rand(b, generator=generator) < prob) & has
    weights = torch.where(has[:, None], maskable.float(), torch.ones_like(maskable, dtype=torch.float))
    choice = torch.multinomial(weights, 1, generator=generator).squeeze(1) if b else \
        torch.zeros(0, dtype=torch.long)
    rows = torch.arange(b)
    node_mask = torch.zeros(b, k, n, dtype=torch.bool)
    node_mask[rows[do]] = teacher.node_masks(rows[do], choice[do] // n, choice[do] % n, n)
    masked_target = teacher.masked_logits[rows, choice // n, choice % n]
    target = torch.where(do[:, None], masked_target, teacher.logits)
    out = graphs[rows]  # a copy whose masked rows are replaced by their variants
    if do.any():
        v = teacher.variants(graphs, rows[do], choice[do] // n, choice[do] % n)
        out.x[do], out.present[do], out.pos[do] = v.x, v.present, v.pos
    return out, target, node_mask


def feature_stats(graphs: SCGBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the detected nodes' features (dummies excluded)."""
    x = graphs.x.reshape(-1, graphs.feature_dim)
    keep = graphs.present.reshape(-1) > 0.5
    if keep.sum() < 2:
        return torch.zeros(graphs.feature_dim), torch.ones(graphs.feature_dim)
    sel = x[keep]
    return sel.mean(dim=0), sel.std(dim=0)


class Distiller:
    """Train a GRN to imitate a classifier's logits on SCGs (scikit-learn style: ``fit`` returns self).

    Settings: ``config`` (the GRN's architecture) and ``distill`` (loss, optimiser, stopping, split);
    the graphs' K, N and D come from the data. Learned state: ``model_`` (best-validation weights),
    ``split_``, ``history_`` (one dict per epoch), ``best_epoch_``, ``best_val_loss_``,
    ``train_seconds_``.
    """

    def __init__(self, config: GRNConfig | None = None, distill: DistillConfig | None = None, *,
                 show_progress: bool | None = None) -> None:
        self.config = config if config is not None else GRNConfig()
        self.distill = distill if distill is not None else DistillConfig()
        self.show_progress = show_progress

    def fit(self, dataset: GraphDataset, split: Split | dict | None = None) -> Distiller:
        """Fit on ``dataset``'s training part, early-stopping on its validation part; returns self.

        Without ``split``, images are split by ``distill``'s fractions and seed.
        """
        cfg = self.distill
        n_img = len(dataset)
        if split is None:
            split = make_split(dataset.image_ids, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        elif isinstance(split, dict):
            split = Split.from_dict(split)
        split.check(n_img)
        gen = torch.Generator().manual_seed(cfg.seed)
        model = GRN.for_graphs(dataset.graphs, self.config, generator=gen)
        train = dataset.subset(split.train)
        val = dataset.subset(split.val) if len(split.val) else None
        if self.config.standardize:
            model.set_input_stats(*feature_stats(train.graphs))
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # The L1 loss keeps full-size gradients near its optimum, so a constant lr makes the
        # validation loss jitter; halving it on plateaus lets training settle.
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=cfg.lr_patience) \
            if cfg.lr_patience else None
        history: list[dict[str, float]] = []
        best_loss, best_epoch, best_state, wait = float("inf"), 0, copy.deepcopy(model.state_dict()), 0
        n_train = len(train)
        start = time.perf_counter()
        bar = progress(range(1, cfg.epochs + 1), desc="GRN epochs", total=cfg.epochs,
                       enabled=self.show_progress)
        for epoch in bar:
            model.train()
            order = torch.randperm(n_train, generator=gen)
            total, seen = 0.0, 0
            for s in range(0, n_train, cfg.batch_size):
                idx = order[s:s + cfg.batch_size]
                loss = self._batch_loss(model, train.graphs[idx], train.teacher[idx], gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            train_loss = total / max(seen, 1)
            # Early stopping watches the unmasked validation loss (the deterministic quantity);
            # without a validation part it falls back to the (augmented) training loss.
            val_loss = self._loss(model, val, cfg.temperature) if val is not None else train_loss
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                            "lr": opt.param_groups[0]["lr"]})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            if sched is not None:
                sched.step(val_loss)
            if val_loss < best_loss - 1e-6:
                best_loss, best_epoch, wait = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                wait += 1
                if wait >= cfg.patience:
                    log.info("GRN: early stop at epoch %d (best %d, val loss %.4f)", epoch, best_epoch,
                             best_loss)
                    break
        bar.close()
        model.load_state_dict(best_state)
        model.eval()
        self.train_seconds_ = time.perf_counter() - start
        self.model_, self.split_ = model, split
        self.history_, self.best_epoch_, self.best_val_loss_ = history, best_epoch, best_loss
        log.info("GRN: %d epochs in %.1f s, best epoch %d, val loss %.4f", len(history),
                 self.train_seconds_, best_epoch, best_loss)
        return self

    def _batch_loss(self, model: GRN, graphs: SCGBatch, teacher: Teacher, gen: torch.Generator) -> torch.Tensor:
        """The training loss of one mini-batch (see DistillConfig.effect_weight)."""
        cfg = self.distill
        if cfg.effect_weight == 0:
            graphs, target, _ = mask_augment(graphs, teacher, cfg.mask_prob, gen)
            return distill_loss(model(graphs), target, cfg.temperature)
        masked, target, node_mask = mask_augment(graphs, teacher, 1.0, gen)
        did = node_mask.flatten(1).any(1)
        out = model(SCGBatch.concat([graphs, masked]))
        plain_out, masked_out = out[:len(graphs)], out[len(graphs):]
        loss = distill_loss(out, torch.cat([teacher.logits, target]), cfg.temperature)
        if did.any():
            loss = loss + cfg.effect_weight * effect_loss(plain_out[did], masked_out[did],
                                                          teacher.logits[did], target[did])
        return loss

    @staticmethod
    @torch.no_grad()
    def _loss(model: GRN, ds: GraphDataset, temperature: float) -> float:
        if len(ds) == 0:
            return float("nan")
        return float(distill_loss(model.predict(ds.graphs), ds.teacher.logits, temperature))

    def save(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the fitted GRN (model.safetensors + config.json) with its split, distillation
        settings and history (and the JSON-ready ``extra``) into ``directory``; returns it."""
        if not hasattr(self, "model_"):
            raise ConfigError("Distiller.save: call fit() first")
        return save_grn(directory, self.model_, extra={"split": self.split_.to_dict(),
                                                       "distill": self.distill.to_dict(),
                                                       "best_epoch": self.best_epoch_,
                                                       "history": self.history_, **(extra or {})})

"""The teacher: the classifier's logits for each image, plain and with one detected concept masked."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .scg import SCGBatch, SCGShapeError


@dataclass
class Teacher:
    """The classifier's logits over the K classes of interest, plain and with one concept patch masked."""

    logits: torch.Tensor         # [B, K]
    # [B, K, N, K]: logits of the image with concept n of class graph k masked; NaN if undetected
    masked_logits: torch.Tensor

    def validate(self, batch: SCGBatch | None = None) -> None:
        """Raise SCGShapeError when the shapes do not fit each other (and ``batch``)."""
        if self.logits.ndim != 2:
            raise SCGShapeError(f"Teacher.logits must be [B, K], got {tuple(self.logits.shape)}")
        b, k = self.logits.shape
        if self.masked_logits.ndim != 4 or tuple(self.masked_logits.shape[:2]) != (b, k) \
                or self.masked_logits.shape[3] != k:
            raise SCGShapeError(f"Teacher.masked_logits must be [B={b}, K={k}, N, K={k}], got "
                                f"{tuple(self.masked_logits.shape)}")
        if not torch.isfinite(self.logits).all():
            raise SCGShapeError("Teacher.logits contain NaN or inf")
        if batch is not None:
            bb, kk, n, _ = batch.shape
            if (b, k) != (bb, kk) or self.masked_logits.shape[2] != n:
                raise SCGShapeError(f"Teacher shapes {tuple(self.masked_logits.shape)} do not match "
                                    f"graphs (B, K, N) = {(bb, kk, n)}")

    def __getitem__(self, index) -> Teacher:
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        elif isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        return Teacher(self.logits[index], self.masked_logits[index])

    def maskable(self, present: torch.Tensor) -> torch.Tensor:
        """[B, K, N] bool: detected concepts whose masked-image logits are known (usable for masking)."""
        return present.bool() & torch.isfinite(self.masked_logits).all(dim=-1)

    def to(self, device: torch.device | str) -> Teacher:
        """A copy on ``device``."""
        return Teacher(self.logits.to(device), self.masked_logits.to(device))

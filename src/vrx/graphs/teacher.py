"""The teacher: the classifier's logits for each image, plain and with one detected concept masked.

Masking a concept's patch in the image also removes whatever other detected nodes sit mostly on
that patch (two concepts matched to one part at two resolutions, or two class graphs' nodes on the
same segment): ``covered`` records which, so the graph a masked image is compared with drops them too.
"""

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
    # [B, K, N, K, N] bool: masking node (k, n)'s patch removes node (k2, n2) too (None: only itself)
    covered: torch.Tensor | None = None
    # [B, K, N, K, N, D]: the node features of the image with node (k, n)'s patch masked (context
    # features re-pooled from the masked image; None: the plain image's features are kept)
    masked_x: torch.Tensor | None = None

    def validate(self, batch: SCGBatch | None = None) -> None:
        """Raise SCGShapeError when the shapes do not fit each other (and ``batch``)."""
        if self.logits.ndim != 2:
            raise SCGShapeError(f"Teacher.logits must be [B, K], got {tuple(self.logits.shape)}")
        b, k = self.logits.shape
        if self.masked_logits.ndim != 4 or tuple(self.masked_logits.shape[:2]) != (b, k) \
                or self.masked_logits.shape[3] != k:
            raise SCGShapeError(f"Teacher.masked_logits must be [B={b}, K={k}, N, K={k}], got "
                                f"{tuple(self.masked_logits.shape)}")
        if self.covered is not None and tuple(self.covered.shape) != (*self.masked_logits.shape[:3],
                                                                       *self.masked_logits.shape[1:3]):
            raise SCGShapeError(f"Teacher.covered must be [B, K, N, K, N], got {tuple(self.covered.shape)}")
        if self.masked_x is not None and tuple(self.masked_x.shape[:5]) != (*self.masked_logits.shape[:3],
                                                                            *self.masked_logits.shape[1:3]):
            raise SCGShapeError(f"Teacher.masked_x must be [B, K, N, K, N, D], got {tuple(self.masked_x.shape)}")
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
        return Teacher(self.logits[index], self.masked_logits[index],
                       None if self.covered is None else self.covered[index],
                       None if self.masked_x is None else self.masked_x[index])

    def maskable(self, present: torch.Tensor) -> torch.Tensor:
        """[B, K, N] bool: detected concepts whose masked-image logits are known (usable for masking)."""
        return present.bool() & torch.isfinite(self.masked_logits).all(dim=-1)

    def node_masks(self, rows: torch.Tensor, k: torch.Tensor, n: torch.Tensor, num_nodes: int) -> torch.Tensor:
        """[M, K, N] bool: the nodes removed when node (k[i], n[i]) of image rows[i] is masked."""
        if self.covered is not None:
            return self.covered[rows, k, n]
        out = torch.zeros(len(rows), self.logits.shape[1], num_nodes, dtype=torch.bool)
        out[torch.arange(len(rows)), k, n] = True
        return out

    def variants(self, graphs: SCGBatch, rows: torch.Tensor, k: torch.Tensor, n: torch.Tensor) -> SCGBatch:
        """The graphs of images ``rows[i]`` (of ``graphs``, the batch this teacher belongs to) with node
        (k[i], n[i])'s patch masked: its own features where recorded, the covered nodes made dummies."""
        g = graphs[rows]
        if self.masked_x is not None:
            x = torch.where(g.present[..., None] > 0, self.masked_x[rows, k, n].to(g.x), g.x)
            g = SCGBatch(x, g.present, g.pos, list(g.class_names))
        return g.mask_nodes(self.node_masks(rows, k, n, graphs.num_nodes))

    def to(self, device: torch.device | str) -> Teacher:
        """A copy on ``device``."""
        return Teacher(self.logits.to(device), self.masked_logits.to(device),
                       None if self.covered is None else self.covered.to(device),
                       None if self.masked_x is None else self.masked_x.to(device))

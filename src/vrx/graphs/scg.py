"""Structural concept graphs (SCGs): the batch type, its shape and its edges.

One image gives K class graphs (one per class of interest), each with N concept nodes. A node is
either a detected concept (the matched patch's feature, ``present`` = 1, the patch centroid as
``pos``) or a dummy (feature = ``DUMMY_EPS`` everywhere, ``present`` = 0, ``pos`` = 0). Every graph
is fully connected with N(N-1) directed edges j -> i in the fixed order given by :func:`edge_index`,
and the paper's edge feature of j -> i is ``[x_j, y_j, x_i, y_i]``.

The teacher's logits are in :mod:`vrx.graphs.teacher`, the graph dataset and its files in
:mod:`vrx.graphs.dataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ..config import Config, check
from ..errors import ArtifactError, VRXError
from ..store import load_tensors, read_json, save_tensors, write_json

#: Feature value of every entry of a dummy (undetected) node, as in the paper's constant epsilon.
DUMMY_EPS = 1e-3

#: Version of the on-disk graph format, written into the JSON sidecar.
FORMAT_VERSION = 1


class SCGShapeError(VRXError, ValueError):
    """Tensors of an SCG batch, teacher or dataset whose shapes or values do not fit together."""


@lru_cache(maxsize=32)
def _edge_index_cached(n: int) -> torch.Tensor:
    src = [j for j in range(n) for i in range(n) if i != j]
    dst = [i for j in range(n) for i in range(n) if i != j]
    return torch.tensor([src, dst], dtype=torch.long)


def edge_index(n: int) -> torch.Tensor:
    """All ordered pairs j -> i (j != i) of n nodes as LongTensor[2, n(n-1)]: row 0 source j, row 1 target i.

    The order is source-major: (0->1, 0->2, ..., 1->0, 1->2, ...), the order of the original code.
    """
    if n < 1:
        raise SCGShapeError(f"number of concept nodes must be >= 1, got {n}")
    return _edge_index_cached(int(n)).clone()


def edge_position(n: int, j: int, i: int) -> int:
    """Position of the directed edge j -> i in :func:`edge_index` order."""
    if not (0 <= j < n and 0 <= i < n) or i == j:
        raise SCGShapeError(f"no edge {j}->{i} in a graph of {n} nodes")
    return j * (n - 1) + (i if i < j else i - 1)


@dataclass(frozen=True)
class GraphShape(Config):
    """What one image's graphs look like: K class graphs of N concept nodes with D-dim features."""

    num_classes: int   # K, class graphs per image
    num_nodes: int     # N, concept nodes per class graph
    feature_dim: int   # D, the concept feature size

    def validate(self) -> None:
        check(*((isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                 f"GraphShape.{name} must be a positive int, got {getattr(self, name)!r}")
                for name in ("num_classes", "num_nodes", "feature_dim")))


@dataclass
class SCGBatch:
    """B images x K class graphs x N concept nodes with D-dim features, positions and present flags."""

    x: torch.Tensor          # [B, K, N, D] float32; a dummy node holds DUMMY_EPS everywhere
    present: torch.Tensor    # [B, K, N] float32 in {0, 1}
    pos: torch.Tensor        # [B, K, N, 2] float32 (x, y) in [0, 1]; 0 for dummy nodes
    class_names: list[str]   # the K classes of interest, in order

    def __post_init__(self) -> None:
        self.class_names = [str(c) for c in self.class_names]
        self.validate()

    # -- shape -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, K, N, D)."""
        return tuple(self.x.shape)  # type: ignore[return-value]

    @property
    def num_nodes(self) -> int:
        """N, concept nodes per class graph."""
        return int(self.x.shape[2])

    @property
    def num_classes(self) -> int:
        """K, class graphs per image."""
        return int(self.x.shape[1])

    @property
    def feature_dim(self) -> int:
        """D, the concept feature size."""
        return int(self.x.shape[3])

    @property
    def graph_shape(self) -> GraphShape:
        """(K, N, D) of these graphs, as a :class:`GraphShape` (what a GRN is built for)."""
        return GraphShape(self.num_classes, self.num_nodes, self.feature_dim)

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.x.device

    def validate(self) -> None:
        """Raise SCGShapeError when the tensors do not fit together."""
        if self.x.ndim != 4:
            raise SCGShapeError(f"SCGBatch.x must be [B, K, N, D], got shape {tuple(self.x.shape)}")
        b, k, n, _ = self.x.shape
        if tuple(self.present.shape) != (b, k, n):
            raise SCGShapeError(f"SCGBatch.present must be {(b, k, n)}, got {tuple(self.present.shape)}")
        if tuple(self.pos.shape) != (b, k, n, 2):
            raise SCGShapeError(f"SCGBatch.pos must be {(b, k, n, 2)}, got {tuple(self.pos.shape)}")
        if len(self.class_names) != k:
            raise SCGShapeError(f"SCGBatch has {k} class graphs but {len(self.class_names)} class names")
        if len(set(self.class_names)) != k:
            raise SCGShapeError(f"SCGBatch class names are not unique: {self.class_names}")
        for name in ("x", "present", "pos"):
            t = getattr(self, name)
            if not t.is_floating_point():
                raise SCGShapeError(f"SCGBatch.{name} must be a float tensor, got {t.dtype}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int | slice | torch.Tensor | list[int]) -> SCGBatch:
        """Images selected by an int (kept as a batch of one), a slice, a list or an index/bool tensor."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        elif isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        return SCGBatch(self.x[index], self.present[index], self.pos[index], list(self.class_names))

    def to(self, device: torch.device | str) -> SCGBatch:
        """A copy on ``device``."""
        return SCGBatch(self.x.to(device), self.present.to(device), self.pos.to(device),
                        list(self.class_names))

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def empty(cls, batch: int, class_names: list[str], n: int, d: int) -> SCGBatch:
        """A batch where every node is a dummy (the builder fills detected concepts in)."""
        k = len(class_names)
        return cls(torch.full((batch, k, n, d), DUMMY_EPS, dtype=torch.float32),
                   torch.zeros(batch, k, n), torch.zeros(batch, k, n, 2), list(class_names))

    @staticmethod
    def concat(batches: list[SCGBatch]) -> SCGBatch:
        """Concatenate batches with the same class list along the image axis."""
        if not batches:
            raise SCGShapeError("cannot concatenate an empty list of SCG batches")
        names = batches[0].class_names
        for b in batches[1:]:
            if b.class_names != names:
                raise SCGShapeError(f"class lists differ: {names} vs {b.class_names}")
        return SCGBatch(torch.cat([b.x for b in batches]), torch.cat([b.present for b in batches]),
                        torch.cat([b.pos for b in batches]), list(names))

    def mask_nodes(self, node_mask: torch.Tensor) -> SCGBatch:
        """A copy where nodes with ``node_mask`` [B, K, N] true become dummies (eps, absent, pos 0)."""
        m = node_mask.to(torch.bool)
        keep = (~m).to(self.x.dtype)
        x = torch.where(m[..., None], torch.full_like(self.x, DUMMY_EPS), self.x)
        return SCGBatch(x, self.present * keep, self.pos * keep[..., None], list(self.class_names))

    # -- edges -----------------------------------------------------------------------------
    def edge_index(self, n: int | None = None) -> torch.Tensor:
        """LongTensor[2, N(N-1)] of directed edges j -> i in the fixed order (see module doc)."""
        return edge_index(self.num_nodes if n is None else n).to(self.device)

    def edge_attr(self) -> torch.Tensor:
        """[B, K, N(N-1), 4] edge features [x_j, y_j, x_i, y_i] of each directed edge j -> i."""
        src, dst = self.edge_index()
        return torch.cat([self.pos[:, :, src, :], self.pos[:, :, dst, :]], dim=-1)

    def edge_present(self) -> torch.Tensor:
        """[B, K, N(N-1)] float: 1 where both ends of the edge are detected concepts."""
        src, dst = self.edge_index()
        return self.present[:, :, src] * self.present[:, :, dst]

    # -- PyG export ------------------------------------------------------------------------
    def to_pyg(self):
        """A torch_geometric ``Batch`` with one ``Data`` per (image, class) graph, image-major order.

        Each Data holds x [N, D], edge_index [2, N(N-1)], edge_attr [N(N-1), 4], present [N],
        pos [N, 2], graph_class (k) and image_row (b; not named *_index, which PyG would offset).
        """
        from torch_geometric.data import Batch, Data  # imported lazily: PyG takes ~2 s to import

        ei = self.edge_index().cpu()
        ea = self.edge_attr().cpu()
        data = []
        for b in range(len(self)):
            for k in range(self.num_classes):
                data.append(Data(x=self.x[b, k].cpu(), edge_index=ei.clone(), edge_attr=ea[b, k],
                                 present=self.present[b, k].cpu(), pos=self.pos[b, k].cpu(),
                                 graph_class=torch.tensor([k]), image_row=torch.tensor([b])))
        return Batch.from_data_list(data)

    # -- I/O -------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The named tensors written to disk."""
        return {"x": self.x.float(), "present": self.present.float(), "pos": self.pos.float()}

    def meta(self) -> dict[str, Any]:
        """The JSON-side description of the batch."""
        b, k, n, d = self.shape
        return {"format_version": FORMAT_VERSION, "class_names": list(self.class_names),
                "B": b, "K": k, "N": n, "D": d, "eps": DUMMY_EPS}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (safetensors) and a JSON sidecar ``path`` with suffix ``.json``."""
        path = Path(path)
        save_tensors(path, self.tensors())
        write_json(path.with_suffix(".json"), self.meta())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SCGBatch:
        """Read a batch written by :meth:`save`; ArtifactError names the file that is wrong."""
        path = Path(path)
        meta = read_json(path.with_suffix(".json"))
        tensors = load_tensors(path)
        return batch_from_tensors(tensors, meta, path)


def batch_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path) -> SCGBatch:
    """The batch in ``tensors`` read from ``path`` with its JSON ``meta``; ArtifactError names the file."""
    for key in ("x", "present", "pos"):
        if key not in tensors:
            raise ArtifactError(f"{path}: tensor '{key}' missing")
    if not isinstance(meta.get("class_names"), list):
        raise ArtifactError(f"{path.with_suffix('.json')}: 'class_names' missing")
    try:
        batch = SCGBatch(tensors["x"], tensors["present"], tensors["pos"], meta["class_names"])
    except SCGShapeError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    expect = tuple(meta.get(k) for k in ("K", "N", "D"))
    if expect != batch.shape[1:]:
        raise ArtifactError(f"{path}: tensors have (K, N, D) = {batch.shape[1:]} but "
                            f"{path.with_suffix('.json').name} says {expect}")
    return batch

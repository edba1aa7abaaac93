"""Where each node and edge sits in a class-graph embedding of the GRN (what the interpreter reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..graphs.scg import edge_index
from .config import GRNConfig


@dataclass(frozen=True)
class EmbeddingLayout:
    """Which slice of a class-graph embedding G^c(h_c) belongs to which node or directed edge.

    The embedding is [node 0 | node 1 | ... | node N-1 | edge e_0 | ... | edge e_{E-1}], nodes of
    ``node_dim`` entries each, then edges (in :func:`vrx.graphs.scg.edge_index` order) of ``edge_dim``
    entries each (``edge_dim`` = 0 when edge features are off).
    """

    num_nodes: int
    node_dim: int
    edge_dim: int
    edges: tuple[tuple[int, int], ...] = field(default=())  # (j, i) of each directed edge j -> i

    @classmethod
    def of(cls, config: GRNConfig, num_nodes: int) -> EmbeddingLayout:
        """The layout of a GRN with architecture ``config`` on graphs of ``num_nodes`` nodes."""
        ei = edge_index(num_nodes)
        return cls(num_nodes, config.hidden[-1], config.edge_dim if config.use_edge_features else 0,
                   tuple(zip(ei[0].tolist(), ei[1].tolist())))

    @property
    def num_edges(self) -> int:
        """Number of directed edges with an embedding slice (0 without edge features)."""
        return len(self.edges) if self.edge_dim else 0

    @property
    def size(self) -> int:
        """Length of one class-graph embedding."""
        return self.num_nodes * self.node_dim + self.num_edges * self.edge_dim

    def node_slice(self, i: int) -> slice:
        """Slice of node i."""
        if not 0 <= i < self.num_nodes:
            raise IndexError(f"node {i} out of range 0..{self.num_nodes - 1}")
        return slice(i * self.node_dim, (i + 1) * self.node_dim)

    def edge_slice(self, j: int, i: int) -> slice:
        """Slice of the directed edge j -> i."""
        if not self.edge_dim:
            raise IndexError("this GRN has no edge embeddings (use_edge_features=False)")
        p = self.edges.index((j, i))
        start = self.num_nodes * self.node_dim + p * self.edge_dim
        return slice(start, start + self.edge_dim)

    def segments(self) -> torch.Tensor:
        """LongTensor[size]: segment id of each entry, 0..N-1 nodes then N.. edges (for scatter-sums)."""
        nodes = torch.arange(self.num_nodes).repeat_interleave(self.node_dim)
        edges = (self.num_nodes + torch.arange(self.num_edges)).repeat_interleave(self.edge_dim)
        return torch.cat([nodes, edges])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"num_nodes": self.num_nodes, "node_dim": self.node_dim, "edge_dim": self.edge_dim,
                "edges": [list(e) for e in self.edges], "size": self.size}

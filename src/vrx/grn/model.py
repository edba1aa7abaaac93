"""The graph reasoning network (GRN) of VRX: a GraphConv-style GNN over the K class graphs of an image
(paper eq. 3, with a learned class-specific dependency weight e_ji^c per directed edge), a readout that
concatenates node and edge embeddings, and an embedding network E giving one output per class.

Dense implementation: a batch is [B, K, N, ...] with N small (4-8), so messages are gathered along the
N(N-1) fixed edges and summed with ``index_add``; no sparse machinery is needed (see docs/grn.md for
the timing against a torch_geometric ``MessagePassing`` version).

The architecture is a :class:`~vrx.grn.config.GRNConfig`; the data's K, N and D come as a
:class:`~vrx.graphs.scg.GraphShape` (``GRN.for_graphs(batch, config)`` takes both from a batch).
Saving and loading are in :mod:`vrx.grn.io`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from ..graphs.scg import GraphShape, SCGBatch, edge_index
from .config import GRNConfig
from .layers import GRNLayer, linear
from .layout import EmbeddingLayout


class GRN(nn.Module):
    """Graph reasoning network: ``forward(batch) -> [B, K]`` logits over the classes of interest.

    Dummy (undetected) nodes: their input is the present flag 0 and a zero feature; they send and
    receive no messages and every edge touching them has a zero embedding; with ``zero_absent`` their
    node embedding is zero too, so an absent concept contributes nothing (without it, a learned
    constant per class graph and node slot).
    """

    def __init__(self, config: GRNConfig, shape: GraphShape, class_names: list[str] | None = None, *,
                 generator: torch.Generator | None = None) -> None:
        """A GRN of architecture ``config`` for graphs of ``shape``, weights drawn from ``generator``
        (default: a generator seeded with 0)."""
        super().__init__()
        if shape.num_nodes < 2 and config.message_passing:
            raise ConfigError("GRN: message passing needs N >= 2 nodes per graph")
        if class_names is not None and len(class_names) != shape.num_classes:
            raise ConfigError(f"GRN: {len(class_names)} class names for K = {shape.num_classes}")
        self.config = config
        self.graph_shape = shape
        self.class_names = list(class_names) if class_names is not None else None
        n, k, d = shape.num_nodes, shape.num_classes, shape.feature_dim
        ei = edge_index(n)
        self.register_buffer("src", ei[0], persistent=False)
        self.register_buffer("dst", ei[1], persistent=False)
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("feat_std", torch.ones(d))
        self.proj = linear(d, config.input_proj) if config.input_proj else None
        dims = [(config.input_proj or d) + 1, *config.hidden]   # +1: the present flag
        edims = [4] + [config.edge_dim] * len(config.hidden)
        self.layers = nn.ModuleList(
            GRNLayer(dims[i], dims[i + 1], edims[i], edims[i + 1], use_edges=config.use_edge_features,
                     message_passing=config.message_passing) for i in range(len(config.hidden)))
        if config.message_passing:
            # Raw (unconstrained) dependency logits; e_ji^c = sigmoid/softplus of them.
            self.dependency_logits = nn.Parameter(
                torch.zeros(k if config.class_specific_edges else 1, n * (n - 1)))
        else:
            self.register_parameter("dependency_logits", None)
        self.layout = EmbeddingLayout.of(config, n)
        head: list[nn.Module] = []
        size = k * self.layout.size
        for hsize in config.head_hidden:
            head += [linear(size, hsize), nn.ReLU()]
            size = hsize
        head.append(linear(size, k))
        self.head = nn.Sequential(*head)
        # [K_out, K_graph * E] 0/1 mask of the head's weight: the block head's structure.
        block = torch.eye(k) if config.head == "block" else torch.ones(k, k)
        self.register_buffer("head_mask", block.repeat_interleave(self.layout.size, dim=1), persistent=False)
        self.reset_parameters(generator if generator is not None else torch.Generator().manual_seed(0))

    @classmethod
    def for_graphs(cls, graphs: SCGBatch, config: GRNConfig | None = None, *,
                   generator: torch.Generator | None = None) -> GRN:
        """A GRN for graphs like ``graphs``: their shape and class names, architecture ``config``."""
        return cls(config if config is not None else GRNConfig(), graphs.graph_shape, graphs.class_names,
                   generator=generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise all weights from ``generator`` (PyTorch's default Linear bounds, LN = identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = module.in_features ** -0.5
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        if self.dependency_logits is not None:
            # Equal dependencies at the start (0.5 with sigmoid); training differentiates the edges.
            self.dependency_logits.zero_()

    # -- pieces the interpreter uses --------------------------------------------------------
    def dependency_weights(self) -> torch.Tensor | None:
        """[K, N(N-1)] constrained e_ji^c (rows equal when shared), None without message passing."""
        if self.dependency_logits is None:
            return None
        raw = self.dependency_logits
        dep = torch.sigmoid(raw) if self.config.dependency == "sigmoid" else F.softplus(raw)
        return dep.expand(self.graph_shape.num_classes, -1)

    def linear_readout(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(W [K_out, K_graph, E_dim], b [K_out]) of a linear head, so y_c = sum W[c]*G + b_c; else None."""
        if self.config.head_hidden:
            return None
        lin = self.head[-1]
        k = self.graph_shape.num_classes
        return (lin.weight * self.head_mask).view(k, k, self.layout.size), lin.bias

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the feature standardisation (training-set mean and std of detected nodes)."""
        self.feat_mean.copy_(mean.to(self.feat_mean))
        self.feat_std.copy_(std.clamp_min(1e-6).to(self.feat_std))

    # -- forward ------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> None:
        s = self.graph_shape
        want = (s.num_classes, s.num_nodes, s.feature_dim)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ConfigError(f"GRN built for graphs (K, N, D) = {want}, got x of shape {tuple(x.shape)}")

    def embed_tensors(self, x: torch.Tensor, present: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Class-graph embeddings G^c(h_c) [B, K, E_dim] from raw tensors (layout: ``self.layout``)."""
        self._check(x)
        src, dst = self.src, self.dst
        present = present.to(x.dtype)
        if self.config.standardize:
            x = (x - self.feat_mean) / self.feat_std
        x = x * present[..., None]               # dummy nodes: zero feature, identified by the flag
        if self.proj is not None:
            x = self.proj(x)
        h = torch.cat([x, present[..., None]], dim=-1)
        emask = present[:, :, src] * present[:, :, dst]
        edge = None
        if self.config.use_edge_features:
            edge = torch.cat([pos[:, :, src], pos[:, :, dst]], dim=-1) * emask[..., None]
        dep = self.dependency_weights()
        for layer in self.layers:
            h, edge = layer(h, edge, dep, emask, src, dst)
        if self.config.zero_absent:
            h = h * present[..., None]
        parts = [h.flatten(2)]
        if edge is not None:
            parts.append(edge.flatten(2))
        return torch.cat(parts, dim=-1)

    def embed(self, batch: SCGBatch) -> torch.Tensor:
        """Class-graph embeddings [B, K, E_dim]; ``self.layout`` says which slice is which node/edge."""
        self._check_names(batch)
        return self.embed_tensors(batch.x, batch.present, batch.pos)

    def head_forward(self, emb: torch.Tensor) -> torch.Tensor:
        """The embedding network E: [B, K, E_dim] -> [B, K] logits."""
        if self.config.head == "block":
            lin = self.head[-1]
            return F.linear(emb.flatten(1), lin.weight * self.head_mask, lin.bias)
        return self.head(emb.flatten(1))

    def forward(self, batch: SCGBatch) -> torch.Tensor:
        """Logits [B, K] over the classes of interest."""
        return self.head_forward(self.embed(batch))

    def _check_names(self, batch: SCGBatch) -> None:
        if self.class_names is not None and batch.class_names != self.class_names:
            raise ConfigError(f"GRN trained on classes {self.class_names}, graphs are for "
                              f"{batch.class_names}")

    @torch.no_grad()
    def predict(self, batch: SCGBatch, batch_size: int = 4096) -> torch.Tensor:
        """Logits [B, K] in eval mode without gradients, in chunks."""
        was = self.training
        self.eval()
        try:
            outs = [self(batch[s:s + batch_size]) for s in range(0, len(batch), batch_size)]
        finally:
            self.train(was)
        return torch.cat(outs) if outs else torch.zeros(0, self.graph_shape.num_classes)

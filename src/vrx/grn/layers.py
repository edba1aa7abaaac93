"""The graph-conv layer of the GRN (paper eq. 3) and the weight-free linear layers it is made of."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def linear(n_in: int, n_out: int) -> nn.Linear:
    """A Linear layer left uninitialised: no draw from the global RNG (``GRN.reset_parameters`` fills it)."""
    return nn.utils.skip_init(nn.Linear, n_in, n_out)


class GRNLayer(nn.Module):
    """One graph-conv layer, paper eq. 3 with the edge update run first:

    edge' = relu(LN(W4 edge)) masked to edges between detected nodes;
    f_i'  = relu(LN(W1 f_i + sum_j mask_ji * W3 [e_ji^c * W2 f_j, edge'_ji])).
    """

    def __init__(self, in_dim: int, out_dim: int, edge_in: int, edge_out: int, *,
                 use_edges: bool, message_passing: bool) -> None:
        super().__init__()
        self.use_edges, self.message_passing = use_edges, message_passing
        self.w1 = linear(in_dim, out_dim)
        if message_passing:
            self.w2 = linear(in_dim, out_dim)
            self.w3 = linear(out_dim + (edge_out if use_edges else 0), out_dim)
        if use_edges:
            self.w4 = linear(edge_in, edge_out)
            self.edge_norm = nn.LayerNorm(edge_out)
        # LayerNorm, not BatchNorm: statistics per node, so single graphs and batches of one behave
        # the same in training and inference (the original code ran train-mode BN on single graphs).
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, h: torch.Tensor, edge: torch.Tensor | None, dep: torch.Tensor | None,
                emask: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h [B,K,N,in], edge [B,K,E,edge_in], dep [K,E], emask [B,K,E] -> (h', edge')."""
        if self.use_edges:
            edge = F.relu(self.edge_norm(self.w4(edge))) * emask[..., None]
        out = self.w1(h)
        if self.message_passing:
            hj = self.w2(h)[:, :, src]                       # W2 f_j gathered per edge: [B,K,E,out]
            msg = dep[None, :, :, None] * hj                 # e_ji^c W2 f_j
            if self.use_edges:
                msg = torch.cat([msg, edge], dim=-1)         # C(e W2 f_j, edge_ji)
            msg = self.w3(msg) * emask[..., None]            # no message along edges touching a dummy
            out = out.index_add(2, dst, msg)                 # sum over j in N(i)
        return F.relu(self.norm(out)), edge

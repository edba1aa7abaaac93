"""The graph reasoning network (GRN) of VRX: a GraphConv-style GNN over the K class graphs of an image
(paper eq. 3, with a learned class-specific dependency weight e_ji^c per directed edge), a readout that
concatenates node and edge embeddings, and an embedding network E giving one output per class.

Dense implementation: a batch is [B, K, N, ...] with N small (4-8), so messages are gathered along the
N(N-1) fixed edges and summed with ``index_add``; no sparse machinery is needed (see docs/grn.md for
the timing against a torch_geometric ``MessagePassing`` version).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ArtifactError, ConfigError
from ..graphs.scg import SCGBatch, edge_index
from ..store import load_tensors, read_json, save_tensors, write_json

GRN_DIR = "grn"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
_DEPENDENCY = ("sigmoid", "softplus")


@dataclass
class GRNConfig:
    """Architecture and training settings of a GRN (N, K, D may be left None and read from the data)."""

    N: int | None = None                  # concept nodes per class graph
    K: int | None = None                  # classes of interest (class graphs per image, outputs)
    D: int | None = None                  # concept feature size
    input_proj: int | None = 64           # shared linear projection of the D-dim features; None: none
    hidden: tuple[int, ...] = (32, 32)    # node sizes of the graph-conv layers (their number = layers)
    edge_dim: int = 8                     # edge embedding size after each layer
    head_hidden: tuple[int, ...] = ()     # () : E is one linear layer (exact additive decomposition)
    class_specific_edges: bool = True     # False: one e_ji shared by all class graphs (ablation)
    use_edge_features: bool = True        # False: no edge features in messages or readout (ablation)
    message_passing: bool = True          # False: nodes are updated alone, no messages (ablation)
    dependency: str = "sigmoid"           # constraint on e_ji^c: sigmoid -> (0, 1), softplus -> (0, inf)
    standardize: bool = True              # standardise features with training-set mean and std
    temperature: float = 2.0              # softmax temperature T of the distillation loss (measured)
    mask_prob: float = 0.5                # probability of concept-masking augmentation per image
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int = 300
    batch_size: int = 64
    patience: int = 30                    # epochs without validation improvement before stopping
    lr_patience: int = 10                 # halve the learning rate after this many flat epochs; 0: never
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.head_hidden = tuple(int(h) for h in self.head_hidden)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError on out-of-range or inconsistent values."""
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"GRNConfig: {msg}")
        for name in ("N", "K", "D"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise bad(f"{name} must be a positive int or None, got {v!r}")
        if self.N is not None and self.N < 2 and self.message_passing:
            raise bad("message passing needs N >= 2 nodes per graph")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise bad(f"hidden must be a non-empty tuple of positive sizes, got {self.hidden}")
        if any(h < 1 for h in self.head_hidden):
            raise bad(f"head_hidden sizes must be positive, got {self.head_hidden}")
        if self.input_proj is not None and self.input_proj < 1:
            raise bad(f"input_proj must be positive or None, got {self.input_proj}")
        if self.edge_dim < 1:
            raise bad(f"edge_dim must be positive, got {self.edge_dim}")
        if self.dependency not in _DEPENDENCY:
            raise bad(f"dependency must be one of {_DEPENDENCY}, got {self.dependency!r}")
        if not 0.0 <= self.mask_prob <= 1.0:
            raise bad(f"mask_prob must lie in [0, 1], got {self.mask_prob}")
        if not self.temperature > 0:
            raise bad(f"temperature must be > 0, got {self.temperature}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise bad(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.lr_patience < 0:
            raise bad("epochs, batch_size and patience must be >= 1, lr_patience >= 0")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise bad(f"val_fraction {self.val_fraction} and test_fraction {self.test_fraction} must be "
                      "in [0, 1) and leave images for training")

    def replace(self, **changes: Any) -> GRNConfig:
        """A copy with ``changes`` applied (unknown names raise ConfigError)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"GRNConfig has no field(s) {sorted(unknown)}")
        d = asdict(self)
        d.update(changes)
        return GRNConfig(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        d = asdict(self)
        d["hidden"], d["head_hidden"] = list(self.hidden), list(self.head_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GRNConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"GRNConfig: unknown field(s) {sorted(unknown)}")
        return cls(**d)

    def resolved(self, batch: SCGBatch) -> GRNConfig:
        """This config with N, K, D filled from ``batch``; ConfigError if set values disagree."""
        _, k, n, d = batch.shape
        for name, have in (("N", n), ("K", k), ("D", d)):
            want = getattr(self, name)
            if want is not None and want != have:
                raise ConfigError(f"GRNConfig.{name} = {want} but the graphs have {name} = {have}")
        return self.replace(N=n, K=k, D=d)


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


def _linear(n_in: int, n_out: int) -> nn.Linear:
    # skip_init: no draw from the global RNG; reset_parameters() fills weights from a torch.Generator.
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
        self.w1 = _linear(in_dim, out_dim)
        if message_passing:
            self.w2 = _linear(in_dim, out_dim)
            self.w3 = _linear(out_dim + (edge_out if use_edges else 0), out_dim)
        if use_edges:
            self.w4 = _linear(edge_in, edge_out)
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


class GRN(nn.Module):
    """Graph reasoning network: ``forward(batch) -> [B, K]`` logits over the classes of interest.

    Dummy (undetected) nodes: their input is the present flag 0 and a zero feature; they send and
    receive no messages and every edge touching them has a zero embedding, so in a linear head an
    absent concept contributes a learned constant per (class graph, node slot) and its edges nothing.
    """

    def __init__(self, config: GRNConfig, class_names: list[str] | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if config.N is None or config.K is None or config.D is None:
            raise ConfigError("GRN needs N, K and D set in GRNConfig (use config.resolved(batch))")
        if class_names is not None and len(class_names) != config.K:
            raise ConfigError(f"GRN: {len(class_names)} class names for K = {config.K}")
        self.config = config
        self.class_names = list(class_names) if class_names is not None else None
        n, k, d = config.N, config.K, config.D
        ei = edge_index(n)
        self.register_buffer("src", ei[0], persistent=False)
        self.register_buffer("dst", ei[1], persistent=False)
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("feat_std", torch.ones(d))
        self.proj = _linear(d, config.input_proj) if config.input_proj else None
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
        self.layout = EmbeddingLayout(n, config.hidden[-1],
                                      config.edge_dim if config.use_edge_features else 0,
                                      tuple(zip(ei[0].tolist(), ei[1].tolist())))
        head: list[nn.Module] = []
        size = k * self.layout.size
        for hsize in config.head_hidden:
            head += [_linear(size, hsize), nn.ReLU()]
            size = hsize
        head.append(_linear(size, k))
        self.head = nn.Sequential(*head)
        self.reset_parameters(generator if generator is not None
                              else torch.Generator().manual_seed(config.seed))

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
        return dep.expand(self.config.K, -1)

    def linear_readout(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(W [K_out, K_graph, E_dim], b [K_out]) of a linear head, so y_c = sum W[c]*G + b_c; else None."""
        if self.config.head_hidden:
            return None
        lin = self.head[-1]
        return lin.weight.view(self.config.K, self.config.K, self.layout.size), lin.bias

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the feature standardisation (training-set mean and std of detected nodes)."""
        self.feat_mean.copy_(mean.to(self.feat_mean))
        self.feat_std.copy_(std.clamp_min(1e-6).to(self.feat_std))

    # -- forward ------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> None:
        c = self.config
        if x.ndim != 4 or tuple(x.shape[1:]) != (c.K, c.N, c.D):
            raise ConfigError(f"GRN built for graphs (K, N, D) = {(c.K, c.N, c.D)}, got x of shape "
                              f"{tuple(x.shape)}")

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
        return self.head(emb.flatten(1))

    def forward_tensors(self, x: torch.Tensor, present: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] from raw tensors (handy for Captum)."""
        return self.head_forward(self.embed_tensors(x, present, pos))

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
        return torch.cat(outs) if outs else torch.zeros(0, self.config.K)


def save_grn(directory: str | os.PathLike, model: GRN, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (e.g. RUN/grn)."""
    directory = Path(directory)
    state = {k: v for k, v in model.state_dict().items()}
    save_tensors(directory / MODEL_FILE, state)
    meta = {"format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "class_names": model.class_names, "layout": model.layout.to_dict()}
    if extra:
        meta.update(extra)
    write_json(directory / CONFIG_FILE, meta)
    return directory


def load_grn(directory: str | os.PathLike) -> GRN:
    """Read a GRN written by :func:`save_grn` (``directory`` = RUN/grn, or RUN itself)."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).exists() and (directory / GRN_DIR / CONFIG_FILE).exists():
        directory = directory / GRN_DIR
    cfg_path, model_path = directory / CONFIG_FILE, directory / MODEL_FILE
    meta = read_json(cfg_path)
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{cfg_path}: not a GRN config of format version {FORMAT_VERSION}")
    try:
        config = GRNConfig.from_dict(dict(meta.get("config") or {}))
        model = GRN(config, meta.get("class_names"))
    except (ConfigError, TypeError) as exc:
        raise ArtifactError(f"{cfg_path}: {exc}") from None
    state = load_tensors(model_path)
    own = model.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        raise ArtifactError(f"{model_path}: does not match {cfg_path.name} (missing {sorted(missing)}, "
                            f"unexpected {sorted(unexpected)})")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ArtifactError(f"{model_path}: '{key}' has shape {tuple(value.shape)}, "
                                f"{cfg_path.name} implies {tuple(own[key].shape)}")
    model.load_state_dict(state)
    model.eval()
    return model

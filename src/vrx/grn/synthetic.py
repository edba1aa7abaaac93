"""Synthetic graph datasets with a known teacher, for tests, benchmarks and sanity checks of the GRN.

Two tasks: ``presence_task`` (the teacher's logits depend on which concepts are detected) and
``structure_task`` (every concept is detected; the class is decided by the relative horizontal
position of two concepts, so only a model that sees edge geometry can imitate it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..graphs.dataset import GraphDataset
from ..graphs.scg import DUMMY_EPS, SCGBatch
from ..graphs.teacher import Teacher


def _graphs(protos: torch.Tensor, present: torch.Tensor, pos: torch.Tensor, noise: float,
            gen: torch.Generator, class_names: list[str]) -> SCGBatch:
    b = present.shape[0]
    x = protos[None] + noise * torch.randn(b, *protos.shape, generator=gen)
    x = torch.where(present[..., None] > 0, x, torch.full_like(x, DUMMY_EPS))
    return SCGBatch(x, present, pos * present[..., None], class_names)


def _dataset(graphs: SCGBatch, logits: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor,
             task: str, seed: int) -> GraphDataset:
    """``graphs`` with the teacher ``logits`` of their present flags, plain and per masked concept."""
    present = graphs.present
    b, k, n = present.shape
    base = logits(present)
    eye = torch.eye(k * n).view(k * n, k, n)
    masked = logits(present[:, None] * (1 - eye[None])).view(b, k, n, k)
    masked = torch.where(present[..., None] > 0, masked, torch.full_like(masked, float("nan")))
    return GraphDataset(graphs, Teacher(base, masked), [f"img{i:05d}" for i in range(b)],
                        labels.tolist(), config={"task": task, "seed": seed})


def presence_task(n_images: int = 400, K: int = 3, N: int = 4, D: int = 16, seed: int = 0,
                  noise: float = 0.3) -> GraphDataset:
    """Teacher logits linear in the present flags: own-class concepts raise a class, others lower it."""
    gen = torch.Generator().manual_seed(seed)
    names = [f"class{k}" for k in range(K)]
    protos = torch.randn(K, N, D, generator=gen)
    labels = torch.randint(K, (n_images,), generator=gen)
    own = torch.arange(K)[None, :] == labels[:, None]                  # [B, K]
    p = torch.where(own, 0.85, 0.2)[..., None].expand(n_images, K, N)
    present = torch.bernoulli(p, generator=gen)
    pos = torch.rand(n_images, K, N, 2, generator=gen)
    graphs = _graphs(protos, present, pos, noise, gen, names)
    # W[c, k, n]: effect of concept n of class graph k on the logit of class c.
    w = 0.5 + 1.5 * torch.rand(K, N, generator=gen)
    weight = -0.4 * w[None].expand(K, K, N).clone()
    weight[torch.arange(K), torch.arange(K)] = 2.0 * w

    def logits(pr: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ckn,...kn->...c", weight, pr)

    return _dataset(graphs, logits, labels, "presence", seed)


def structure_task(n_images: int = 400, N: int = 3, D: int = 8, seed: int = 0, noise: float = 0.3,
                   scale: float = 8.0) -> GraphDataset:
    """K = 2; all concepts detected with the same features; class 0 iff concept 1 lies right of concept 0."""
    gen = torch.Generator().manual_seed(seed)
    K = 2
    names = ["right", "left"]
    protos = torch.randn(K, N, D, generator=gen)
    present = torch.ones(n_images, K, N)
    pos = 0.1 + 0.8 * torch.rand(n_images, 1, N, 2, generator=gen)
    pos = pos.expand(n_images, K, N, 2).clone()                          # same patches in both graphs
    graphs = _graphs(protos, present, pos, noise, gen, names)

    def logits(pr: torch.Tensor) -> torch.Tensor:
        # The relation exists only while both concepts 0 and 1 of graph 0 are detected.
        s = scale * (pos[:, 0, 1, 0] - pos[:, 0, 0, 0])
        both = pr[..., 0, 0] * pr[..., 0, 1]
        while both.ndim > s.ndim:
            s = s[:, None]
        s = s * both
        return torch.stack([s, -s], dim=-1)

    base = logits(present)
    return _dataset(graphs, logits, (base[:, 1] > base[:, 0]).long(), "structure", seed)


def mixed_task(n_images: int = 1000, K: int = 3, N: int = 4, D: int = 128, seed: int = 0,
               noise: float = 0.5) -> GraphDataset:
    """A harder teacher: presence, feature strength (non-linear), concept pairs and one spatial relation.

    logit_c = sum_{k,n} W[c,k,n] p_kn (1 + 0.5 tanh(q_kn)) + 1.5 p_c0 p_c1 sigmoid(6 (y_c0 - y_c1)),
    with q_kn the projection of the node feature on a hidden direction (how strongly the concept shows)
    and the last term rewarding concept 0 above concept 1 in class c's own graph.
    """
    gen = torch.Generator().manual_seed(seed)
    names = [f"class{k}" for k in range(K)]
    protos = torch.randn(K, N, D, generator=gen)
    labels = torch.randint(K, (n_images,), generator=gen)
    own = torch.arange(K)[None, :] == labels[:, None]
    present = torch.bernoulli(torch.where(own, 0.8, 0.3)[..., None].expand(n_images, K, N),
                              generator=gen)
    pos = torch.rand(n_images, K, N, 2, generator=gen)
    graphs = _graphs(protos, present, pos, noise, gen, names)
    direction = torch.randn(K, N, D, generator=gen)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    q = ((graphs.x - protos[None]) * direction[None]).sum(-1) / noise    # ~N(0, 1) when present
    w = 0.5 + 1.5 * torch.rand(K, N, generator=gen)
    weight = -0.4 * w[None].expand(K, K, N).clone()
    weight[torch.arange(K), torch.arange(K)] = 2.0 * w
    diag = torch.arange(K)
    above = torch.sigmoid(6 * (pos[:, diag, 1, 1] - pos[:, diag, 0, 1]))          # [B, K]

    def logits(pr: torch.Tensor) -> torch.Tensor:
        strength = pr * (1 + 0.5 * torch.tanh(q.view(n_images, *([1] * (pr.ndim - 3)), K, N)))
        lin = torch.einsum("ckn,...kn->...c", weight, strength)
        pair = pr[..., diag, diag * 0] * pr[..., diag, diag * 0 + 1]
        a = above.view(n_images, *([1] * (pr.ndim - 3)), K)
        return lin + 1.5 * pair * a

    return _dataset(graphs, logits, labels, "mixed", seed)

"""Contributions of concepts and relations to the GRN's outputs (paper section 3.3, eq. 5-6).

For an output y^c and the embedding G^k of class graph k, the paper's contribution is gradient x
embedding: alpha_k = dy^c / dG^k, s_k = alpha_k^T G^k. We split that dot product over the embedding
slices of ``grn.layout``: node i's slice gives the contribution of concept i of graph k, edge j->i's
slice the contribution of that relation. With the default linear head the parts are exact:
y^c = sum of every node and edge contribution over all K class graphs + the head's bias b_c.

Sign: a positive contribution pushes y^c up. "Why not B?" also gets contributions to the margin
y_A - y_B (A = the class being explained, by default the predicted one): positive = favours A over B.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError, UnknownClassError
from ..graphs.scg import SCGBatch
from ..grn.model import GRN
from .explanation import WHY, WHY_NOT, ClassExplanation, EdgeContribution, Explanation, NodeContribution
from .sentences import add_sentences


@dataclass
class Contributions:
    """Raw contribution tensors of a batch (C = outputs, K = class graphs, they are the same classes).

    ``node[b, c, k, n]`` is the contribution of node n of graph k to output c of image b, ``edge[b,
    c, k, e]`` that of edge e (``edge_index`` order; E = 0 without edge features).
    """

    scores: torch.Tensor        # [B, C]
    node: torch.Tensor          # [B, C, K, N]
    edge: torch.Tensor          # [B, C, K, E]
    bias: torch.Tensor | None   # [C] for a linear head, else None
    residual: torch.Tensor      # [B, C] score - bias - all contributions (0 for a linear head)

    @property
    def graph(self) -> torch.Tensor:
        """[B, C, K] s_k of eq. 6: the contribution of each whole class graph."""
        return self.node.sum(-1) + self.edge.sum(-1)


class Interpreter:
    """The Visual Decision Interpreter: ``Interpreter(grn).explain(scg)``, one Explanation per image.

    ``concept_names`` maps (class name, 1-based rank) to a human label used in the sentences.
    """

    def __init__(self, grn: GRN, concept_names: dict[tuple[str, int], str] | None = None,
                 batch_size: int = 1024) -> None:
        if grn.class_names is None:
            raise ConfigError("Interpreter needs a GRN that knows its class names")
        self.grn = grn
        self.concept_names = dict(concept_names or {})
        if int(batch_size) < 1:
            raise ConfigError(f"Interpreter batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    @property
    def exact(self) -> bool:
        """Whether contributions add up exactly to the outputs (a linear head)."""
        return self.grn.linear_readout() is not None

    def contributions(self, scg: SCGBatch) -> Contributions:
        """Gradient x embedding of every output w.r.t. every node and edge slice, for a batch."""
        if len(scg) == 0:
            raise ConfigError("no graphs to explain: the SCG batch is empty")
        grn = self.grn
        was_training = grn.training
        grn.eval()
        parts = []
        try:
            for start in range(0, len(scg), self.batch_size):
                parts.append(self._chunk(scg[start:start + self.batch_size]))
        finally:
            grn.train(was_training)
        scores, node, edge = (torch.cat([p[i] for p in parts]) for i in range(3))
        readout = grn.linear_readout()
        bias = readout[1].detach().double() if readout is not None else None
        total = node.sum((-1, -2)) + edge.sum((-1, -2))
        residual = scores - total - (bias if bias is not None else 0.0)
        return Contributions(scores.float(), node.float(), edge.float(),
                             None if bias is None else bias.float(), residual.float())

    def _chunk(self, scg: SCGBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grn, lay = self.grn, self.grn.layout
        b, k = scg.shape[:2]
        with torch.enable_grad():
            with torch.no_grad():
                emb = grn.embed(scg)
            # Differentiate w.r.t. the embeddings only: eq. 5 asks for dy/dG, not for the weights.
            emb = emb.detach().requires_grad_(True)
            y = grn.head_forward(emb)
            grads = [torch.autograd.grad(y[:, c].sum(), emb, retain_graph=c < k - 1)[0]
                     for c in range(k)]
        # Rows of a batch never interact in the head, so the gradient of the batch sum is per-row.
        # Sums in float64: the completeness check is then limited by the model's float32 forward only.
        contrib = torch.stack(grads, dim=1).double() * emb.detach().double()[:, None]  # [B, C, K, S]
        n_node = lay.num_nodes * lay.node_dim
        node = contrib[..., :n_node].reshape(b, k, k, lay.num_nodes, lay.node_dim).sum(-1)
        if lay.num_edges:
            edge = contrib[..., n_node:].reshape(b, k, k, lay.num_edges, lay.edge_dim).sum(-1)
        else:
            edge = contrib.new_zeros(b, k, k, 0)
        return y.detach().double(), node, edge

    def explain(self, scg: SCGBatch, target: str | int | Sequence[str | int] | None = None,
                image_ids: Sequence[str] | None = None) -> list[Explanation]:
        """One :class:`Explanation` per image of ``scg``, in order (a list also for one image).

        ``target`` is the class asked "why?" (name or index, or one per image); by default each
        image's predicted class. Every other class gets a "why not?".
        """
        names = list(scg.class_names)
        b = len(scg)
        if image_ids is not None and len(image_ids) != b:
            raise ConfigError(f"{len(image_ids)} image ids for {b} graphs")
        targets = self._targets(target, names, b)
        con = self.contributions(scg)
        # Python lists once per batch: indexing tensors element by element is ~10x slower.
        node, edge = con.node.double().tolist(), con.edge.double().tolist()
        graph, scores_all = con.graph.double().tolist(), con.scores.double().tolist()
        residual = con.residual.double().tolist()
        bias = None if con.bias is None else con.bias.double().tolist()
        present, pos = scg.present.bool().tolist(), scg.pos.double().tolist()
        edges = self.grn.layout.edges if con.edge.shape[-1] else ()
        edge_present = scg.edge_present().bool().tolist() if edges else None
        kk = range(len(names))
        result = []
        for i in range(b):
            scores = scores_all[i]
            predicted = max(kk, key=lambda c: scores[c])
            t = predicted if targets[i] is None else targets[i]
            classes = {}
            for c, cname in enumerate(names):
                why = c == t
                nodes = [NodeContribution(
                    concept=n + 1, class_graph=names[k], present=present[i][k][n],
                    position=list(pos[i][k][n]) if present[i][k][n] else None,
                    contribution=node[i][c][k][n],
                    margin_contribution=None if why else node[i][t][k][n] - node[i][c][k][n])
                    for k in kk for n in range(scg.num_nodes)]
                edge_rows = [EdgeContribution(
                    source=j + 1, target=ii + 1, class_graph=names[k], present=edge_present[i][k][e],
                    contribution=edge[i][c][k][e],
                    margin_contribution=None if why else edge[i][t][k][e] - edge[i][c][k][e])
                    for k in kk for e, (j, ii) in enumerate(edges)] if edges else []
                classes[cname] = ClassExplanation(
                    class_name=cname, kind=WHY if why else WHY_NOT, score=scores[c],
                    bias=None if bias is None else bias[c], residual=residual[i][c],
                    graph_contribution={names[k]: graph[i][c][k] for k in kk},
                    nodes=nodes, edges=edge_rows,
                    margin=None if why else scores[t] - scores[c],
                    margin_graph_contribution=None if why else {
                        names[k]: graph[i][t][k] - graph[i][c][k] for k in kk})
            expl = Explanation(class_names=names, predicted=names[predicted], target=names[t],
                               scores={n: scores[c] for c, n in enumerate(names)},
                               classes=classes, exact=bias is not None,
                               image_id=None if image_ids is None else str(image_ids[i]))
            result.append(add_sentences(expl, self.concept_names))
        return result

    @staticmethod
    def _targets(target: str | int | Sequence[str | int] | None, names: list[str],
                 b: int) -> list[int | None]:
        if target is None:
            return [None] * b
        many = isinstance(target, Sequence) and not isinstance(target, str)
        items = list(target) if many else [target] * b  # type: ignore[list-item]
        if len(items) != b:
            raise ConfigError(f"{len(items)} targets for {b} graphs")
        out: list[int | None] = []
        for t in items:
            if isinstance(t, str):
                if t not in names:
                    raise UnknownClassError(f"target class {t!r} is not a class of interest {names}")
                out.append(names.index(t))
            elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(names):
                out.append(t)
            else:
                raise UnknownClassError(f"target {t!r} is neither a class name nor an index "
                                        f"0..{len(names) - 1}")
        return out


def own_concepts_positive(grn: GRN, scg: SCGBatch, classes: Sequence[int]) -> float:
    """Share of images whose class ``classes[b]`` gets a positive summed contribution from its own
    graph's concepts (the "why c?" of a figure answered by c's concepts); NaN for no images."""
    if len(scg) == 0:
        return float("nan")
    c = torch.as_tensor(list(classes), dtype=torch.long)
    node = Interpreter(grn).contributions(scg).node          # [B, C, K, N]
    own = node[torch.arange(len(c)), c, c].sum(-1)
    return float((own > 0).float().mean())


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

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import ArtifactError, ConfigError, UnknownClassError
from ..graphs.scg import SCGBatch
from ..grn.model import GRN

FORMAT_VERSION = 1
WHY, WHY_NOT = "why", "why not"


@dataclass
class NodeContribution:
    """Contribution of one concept node of one class graph to one output (and to a margin)."""

    concept: int                          # 1-based rank of the concept within its class graph
    class_graph: str                      # the class graph the node belongs to
    present: bool                         # False: a dummy; its contribution is a learned constant
    position: list[float] | None          # [x, y] in [0, 1] of the image (y down); None when absent
    contribution: float                   # to the output of the class being explained
    margin_contribution: float | None = None  # to y_target - y_this; None for the target itself


@dataclass
class EdgeContribution:
    """Contribution of one directed relation source -> target of one class graph."""

    source: int                           # 1-based concept rank of the source node j
    target: int                           # 1-based concept rank of the target node i
    class_graph: str
    present: bool                         # both ends detected (otherwise the contribution is 0)
    contribution: float
    margin_contribution: float | None = None


@dataclass
class ClassExplanation:
    """Why (or why not) one class: its score split over every node and edge of every class graph.

    For a linear head ``score == bias + sum(node contributions) + sum(edge contributions)`` and
    ``residual`` is 0 up to rounding; for an MLP head ``bias`` is None and ``residual`` holds what
    gradient x embedding leaves unexplained. ``margin = scores[target] - score`` splits the same
    way with the ``margin_*`` fields (None for the target class itself).
    """

    class_name: str
    kind: str                             # "why" for the target class, "why not" for the others
    score: float
    bias: float | None
    residual: float
    graph_contribution: dict[str, float]  # the paper's s_k: one number per class graph k
    nodes: list[NodeContribution]
    edges: list[EdgeContribution]
    margin: float | None = None
    margin_graph_contribution: dict[str, float] | None = None
    sentence: str = ""

    def node(self, class_graph: str, concept: int) -> NodeContribution:
        """The node of ``class_graph`` with 1-based rank ``concept``."""
        for n in self.nodes:
            if n.class_graph == class_graph and n.concept == concept:
                return n
        raise KeyError(f"no concept {concept} in class graph {class_graph!r}")

    def edge(self, class_graph: str, source: int, target: int) -> EdgeContribution:
        """The relation source -> target (1-based ranks) of ``class_graph``."""
        for e in self.edges:
            if e.class_graph == class_graph and e.source == source and e.target == target:
                return e
        raise KeyError(f"no edge {source}->{target} in class graph {class_graph!r}")


@dataclass
class Explanation:
    """The interpretation of one image: scores, and a :class:`ClassExplanation` per class of interest."""

    class_names: list[str]
    predicted: str                        # argmax of the GRN's outputs
    target: str                           # the class asked "why?" (default: the predicted one)
    scores: dict[str, float]
    classes: dict[str, ClassExplanation]
    exact: bool                           # True with a linear head: contributions + bias == score
    image_id: str | None = None
    version: int = field(default=FORMAT_VERSION)

    @property
    def why(self) -> ClassExplanation:
        """The explanation of the target class."""
        return self.classes[self.target]

    @property
    def why_not(self) -> list[ClassExplanation]:
        """The explanations of every other class, highest score first."""
        others = [c for c in self.classes.values() if c.class_name != self.target]
        return sorted(others, key=lambda c: -c.score)

    @property
    def sentences(self) -> dict[str, str]:
        """Class name -> its why / why-not sentence."""
        return {name: c.sentence for name, c in self.classes.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (plain floats, lists and strings)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Explanation:
        """Inverse of :meth:`to_dict`; ArtifactError when keys are missing or malformed."""
        try:
            if d.get("version") != FORMAT_VERSION:
                raise ArtifactError(f"explanation version {d.get('version')!r}, this vrx reads "
                                    f"{FORMAT_VERSION}")
            classes = {}
            for name, c in d["classes"].items():
                c = dict(c)
                c["nodes"] = [NodeContribution(**n) for n in c["nodes"]]
                c["edges"] = [EdgeContribution(**e) for e in c["edges"]]
                classes[name] = ClassExplanation(**c)
            return cls(class_names=list(d["class_names"]), predicted=d["predicted"], target=d["target"],
                       scores=dict(d["scores"]), classes=classes, exact=bool(d["exact"]),
                       image_id=d.get("image_id"), version=d["version"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"not a vrx explanation: {type(exc).__name__} {exc}") from None


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
    """The Visual Decision Interpreter: ``Interpreter(grn).explain(scg)`` -> :class:`Explanation`.

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
                image_ids: Sequence[str] | None = None) -> Explanation | list[Explanation]:
        """Explain each image: one Explanation for a batch of one image, else a list.

        ``target`` is the class asked "why?" (name or index; one per image for a batch); by default
        each image's predicted class. Every other class gets a "why not?".
        """
        out = self.explain_batch(scg, target, image_ids)
        return out[0] if len(out) == 1 else out

    def explain_batch(self, scg: SCGBatch, target: str | int | Sequence[str | int] | None = None,
                      image_ids: Sequence[str] | None = None) -> list[Explanation]:
        """Like :meth:`explain`, always returning a list (one Explanation per image)."""
        from .sentences import add_sentences   # sentences builds on this module's types

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


def check_completeness(explanation: Explanation) -> float:
    """Largest |score - bias - sum of contributions| over classes (0 up to rounding for a linear head)."""
    worst = 0.0
    for c in explanation.classes.values():
        total = sum(n.contribution for n in c.nodes) + sum(e.contribution for e in c.edges)
        worst = max(worst, abs(c.score - (c.bias or 0.0) - total))
    return worst if math.isfinite(worst) else float("inf")

"""VRX's account of one misclassification from contributions alone: its type and its culprit.

The margin y_p - y_t between the wrongly predicted class p and the true class t splits, with a
linear GRN head, exactly over every node and edge of every class graph (+ bias). Summing the
detected concepts' margin contributions gives the concept part M_node, the relations' the structure
part M_edge. With the positive parts m_n = max(M_node, 0) and m_e = max(M_edge, 0), the structure
share is s = m_e / (m_n + m_e) and the error is

* ``concept`` when s <= ``low`` (1/3): the margin comes mostly from nodes;
* ``structure`` when s >= ``high`` (2/3): mostly from relations;
* ``both`` in between.

When neither part is positive (the GRN does not reproduce the error), s compares |M_edge| with
|M_node| the same way. The **culprit** is the detected concept or relation (both ends detected) with
the largest margin contribution, that is the most negative for t or the most positive for p, chosen
among nodes for a concept error, among relations for a structure error and among both for ``both``.
Dummy nodes (concepts not found) and padding slots are left out of the sums: they have no place in
the image, and their contribution is the same learned constant in every image. A concept of t that
was not found can still be the culprit (``missing``), blamed by how much more its dummy pushes the
margin than the concept itself does in t's images (``missing_blame``, from the run's graphs).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

ERROR_TYPES: tuple[str, ...] = ("concept", "structure", "both")


@dataclass(frozen=True)
class Culprit:
    """What VRX holds most responsible: a node (``target`` None) or a relation source -> target."""

    kind: str                     # "node", "missing" (a concept not detected) or "edge"
    class_graph: str
    concept: int                  # 1-based rank of the node (the source of an edge)
    target: int | None            # 1-based rank of the edge's target; None for a node
    margin_contribution: float    # to y_p - y_t

    @property
    def key(self) -> tuple:
        """What identifies the culprit across explanations of edited versions of an image."""
        return (self.kind, self.class_graph, self.concept, self.target)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Culprit:
        return cls(kind=str(d["kind"]), class_graph=str(d["class_graph"]), concept=int(d["concept"]),
                   target=None if d.get("target") is None else int(d["target"]),
                   margin_contribution=float(d["margin_contribution"]))


@dataclass(frozen=True)
class ErrorAccount:
    """An error's type, the margin's node and edge parts, the structure share and the culprit."""

    type: str
    node_margin: float
    edge_margin: float
    structure_share: float
    culprit: Culprit | None       # None only when nothing in either graph was detected

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "node_margin": self.node_margin, "edge_margin": self.edge_margin,
                "structure_share": self.structure_share,
                "culprit": None if self.culprit is None else self.culprit.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ErrorAccount:
        return cls(type=str(d["type"]), node_margin=float(d["node_margin"]), edge_margin=float(d["edge_margin"]),
                   structure_share=float(d["structure_share"]),
                   culprit=None if d.get("culprit") is None else Culprit.from_dict(d["culprit"]))


def classify_share(node_margin: float, edge_margin: float, low: float = 1 / 3, high: float = 2 / 3
                   ) -> tuple[str, float]:
    """(error type, structure share) of a margin split into its node and edge parts."""
    if not 0.0 <= low <= high <= 1.0:
        raise ConfigError(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    mn, me = max(node_margin, 0.0), max(edge_margin, 0.0)
    if mn + me <= 0.0:
        mn, me = abs(node_margin), abs(edge_margin)
    share = me / (mn + me) if mn + me > 0 else 0.0
    kind = "concept" if share <= low else "structure" if share >= high else "both"
    return kind, float(share)


def account_error(node_margin: np.ndarray, edge_margin: np.ndarray, node_present: np.ndarray,
                  edges: Sequence[tuple[int, int]], n_concepts: Sequence[int], class_names: Sequence[str],
                  *, missing_blame: np.ndarray | None = None, exclude: Collection[tuple] = (),
                  low: float = 1 / 3, high: float = 2 / 3) -> ErrorAccount:
    """Type and culprit of an error from margin contributions to y_p - y_t.

    ``node_margin`` [K, N] and ``edge_margin`` [K, E] are the contributions of every node and
    edge (``edges`` [(source j, target i)], 0-based) of every class graph to the margin;
    ``node_present`` [K, N] whether each node was detected; ``n_concepts[k]`` the real (non-padding)
    nodes of graph k. ``missing_blame`` [K, N] (NaN where none) blames concepts that were *not*
    detected: how much more the dummy pushes the margin than the concept does when present; such a
    concept (kind ``"missing"``) competes with the detected nodes for a concept culprit.
    Culprits whose :meth:`Culprit.key` is in ``exclude`` (already edited) are passed over.
    """
    node_margin, edge_margin = np.asarray(node_margin, float), np.asarray(edge_margin, float)
    present = np.asarray(node_present, bool)
    k_, n_ = node_margin.shape
    if present.shape != (k_, n_) or len(n_concepts) != k_ or len(class_names) != k_:
        raise ConfigError(f"shapes disagree: node margins {node_margin.shape}, present {present.shape}, "
                          f"{len(n_concepts)} concept counts, {len(class_names)} class names")
    if edge_margin.shape != (k_, len(edges)):
        raise ConfigError(f"edge margins {edge_margin.shape} do not fit {k_} graphs x {len(edges)} edges")
    real = np.arange(n_)[None, :] < np.asarray(n_concepts)[:, None]
    nodes_ok = present & real
    nodes = [(float(node_margin[k, n]), Culprit("node", class_names[k], int(n) + 1, None, float(node_margin[k, n])))
             for k, n in zip(*np.nonzero(nodes_ok))]
    rels = [(float(edge_margin[k, e]), Culprit("edge", class_names[k], int(j) + 1, int(i) + 1, float(edge_margin[k, e])))
            for k in range(k_) for e, (j, i) in enumerate(edges) if nodes_ok[k, j] and nodes_ok[k, i]]
    m_node = float(sum(v for v, _ in nodes))
    m_edge = float(sum(v for v, _ in rels))
    if missing_blame is not None:
        blame = np.asarray(missing_blame, float)
        nodes = nodes + [(float(blame[k, n]), Culprit("missing", class_names[k], int(n) + 1, None, float(blame[k, n])))
                         for k, n in zip(*np.nonzero(real & ~present & np.isfinite(blame)))]
    kind, share = classify_share(m_node, m_edge, low, high)
    pool = nodes if kind == "concept" else rels if kind == "structure" else nodes + rels
    pool = pool or nodes + rels   # a structure error without detected relations still names a node
    pool = [c for c in pool if c[1].key not in set(exclude)]
    culprit = max(pool, key=lambda c: c[0])[1] if pool else None
    return ErrorAccount(kind, m_node, m_edge, share, culprit)

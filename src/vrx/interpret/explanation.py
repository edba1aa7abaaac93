"""What the Visual Decision Interpreter says about one image, as plain data.

An :class:`Explanation` holds the GRN's scores and, per class of interest, a :class:`ClassExplanation`:
the contribution of every concept node (:class:`NodeContribution`) and relation
(:class:`EdgeContribution`) of every class graph, and its why / why-not sentence. These types are
shared by :mod:`vrx.interpret.contributions` (which computes them), :mod:`vrx.interpret.sentences`
and :mod:`vrx.interpret.figure` (which read them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ArtifactError
from ..store import check_format_version

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
            check_format_version(d, "version", FORMAT_VERSION, "explanation")
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


def check_completeness(explanation: Explanation) -> float:
    """Largest |score - bias - sum of contributions| over classes (0 up to rounding for a linear head)."""
    worst = 0.0
    for c in explanation.classes.values():
        total = sum(n.contribution for n in c.nodes) + sum(e.contribution for e in c.edges)
        worst = max(worst, abs(c.score - (c.bias or 0.0) - total))
    return worst if math.isfinite(worst) else float("inf")

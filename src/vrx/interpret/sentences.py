"""Why / why-not sentences from an :class:`~vrx.interpret.explanation.Explanation`.

"Why A?" ranks the detected concepts and relations of every class graph by their contribution to
y_A. "Why not B?" ranks them by their contribution to the margin y_A - y_B (A = the explained
class): positive favours A over B, negative favours B. That is the natural reading of "why A rather
than B"; the contributions to y_B alone are in the explanation (and in the figure) too.
Relations are named from the two positions: "below", "above", "left of", "right of" (image y
grows downwards).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .explanation import ClassExplanation, EdgeContribution, Explanation, NodeContribution

ConceptNames = Mapping[tuple[str, int], str]


def relation_word(source: list[float] | tuple[float, float],
                  target: list[float] | tuple[float, float]) -> str:
    """Where ``source`` (x, y) lies relative to ``target``, along the dominant axis; y points down."""
    dx, dy = source[0] - target[0], source[1] - target[1]
    if max(abs(dx), abs(dy)) < 1e-6:
        return "at the same place as"
    if abs(dx) >= abs(dy):
        return "right of" if dx > 0 else "left of"
    return "below" if dy > 0 else "above"


def names_from_purity(purity: Mapping[str, Any], min_purity: float = 0.0) -> dict[tuple[str, int], str]:
    """(class, rank) -> dominant ground-truth part type, from a ``concept_purity`` result (purity.json)."""
    out: dict[tuple[str, int], str] = {}
    for cls, rows in purity.get("classes", {}).items():
        for r in rows:
            if r.get("part") and (r.get("purity") or 0.0) >= min_purity:
                out[(cls, int(r["rank"]))] = str(r["part"])
    return out


@dataclass(frozen=True)
class Reason:
    """One ranked item of an explanation: a concept, a relation or a missing concept."""

    kind: str            # "concept", "relation" or "missing"
    class_graph: str
    text: str            # e.g. "concept 3 (wheel)" or "the relation 3→1 (wheel below ladder)"
    value: float         # contribution (why) or margin contribution (why not)


def _fmt(v: float) -> str:
    return f"{v:+.3g}"


def _concept_name(names: ConceptNames, graph: str, rank: int) -> str | None:
    return names.get((graph, rank))


def _node_text(n: NodeContribution, names: ConceptNames, prefix: bool) -> str:
    label = _concept_name(names, n.class_graph, n.concept)
    head = f"{n.class_graph} concept {n.concept}" if prefix else f"concept {n.concept}"
    return f"{head} ({label})" if label else head


def _edge_text(e: EdgeContribution, by_key: dict[tuple[str, int], NodeContribution],
               names: ConceptNames, prefix: bool) -> str:
    src, dst = by_key[(e.class_graph, e.source)], by_key[(e.class_graph, e.target)]
    arrow = f"{e.source}→{e.target}"
    head = f"the {e.class_graph} relation {arrow}" if prefix else f"the relation {arrow}"
    if src.position is None or dst.position is None:
        return head
    a = _concept_name(names, e.class_graph, e.source) or f"{e.source}"
    b = _concept_name(names, e.class_graph, e.target) or f"{e.target}"
    return f"{head} ({a} {relation_word(src.position, dst.position)} {b})"


def rank_reasons(ce: ClassExplanation, names: ConceptNames | None = None, *, own_graph: str | None = None,
                 min_share: float = 0.05) -> tuple[list[Reason], list[Reason], list[Reason], list[Reason]]:
    """(concepts, relations, missing, all) ranked by |value|, each with a signed value.

    The value is the margin contribution for a why-not (``ce.margin`` set), else the contribution.
    Items below ``min_share`` of the largest |value| are dropped as noise. Concepts of
    ``own_graph`` are named without their graph's prefix.
    """
    names = names or {}
    use_margin = ce.margin is not None

    def val(item: NodeContribution | EdgeContribution) -> float:
        v = item.margin_contribution if use_margin else item.contribution
        return float(v or 0.0)

    by_key = {(n.class_graph, n.concept): n for n in ce.nodes}
    concepts = [Reason("concept", n.class_graph, _node_text(n, names, n.class_graph != own_graph), val(n))
                for n in ce.nodes if n.present]
    missing = [Reason("missing", n.class_graph, _node_text(n, names, n.class_graph != own_graph), val(n))
               for n in ce.nodes if not n.present]
    relations = [Reason("relation", e.class_graph,
                        _edge_text(e, by_key, names, e.class_graph != own_graph), val(e))
                 for e in ce.edges if e.present]
    every = concepts + relations + missing
    top = max((abs(r.value) for r in every), default=0.0)
    keep = (lambda r: abs(r.value) > 0 and abs(r.value) >= min_share * top)

    def ranked(items: list[Reason]) -> list[Reason]:
        return sorted((r for r in items if keep(r)), key=lambda r: -abs(r.value))

    return ranked(concepts), ranked(relations), ranked(missing), ranked(every)


def _join(items: list[Reason]) -> str:
    """'concepts 1 (ladder, +1.2) and 3 (wheel, +0.8)' when all share one graph prefix, else a list."""
    heads = {r.text.split("concept ", 1)[0] for r in items}
    if len(items) > 1 and len(heads) == 1 and all("concept " in r.text for r in items):
        head = heads.pop()
        rest = [_with_value(r.text.split("concept ", 1)[1], r.value) for r in items]
        return f"{head}concepts " + _and(rest)
    return _and([_with_value(r.text, r.value) for r in items])


def _with_value(text: str, value: float) -> str:
    if text.endswith(")"):
        return f"{text[:-1]}, {_fmt(value)})"
    return f"{text} ({_fmt(value)})"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass(frozen=True)
class _Phrases:
    """The words of one kind of sentence: what a positive / negative item does to the class."""

    pro: tuple[str, str]      # concepts with a positive value: (one concept, several concepts)
    con: tuple[str, str]      # concepts with a negative value
    nothing: str              # when no concept is left after ranking
    rel_pro: str              # the strongest positive relation
    rel_con: str              # the strongest negative relation
    missing_pro: str          # a missing concept with a positive value
    missing_con: str


def _phrases(expl: Explanation, class_name: str, why: bool) -> _Phrases:
    if why:
        return _Phrases(("supports it", "support it"), ("speaks against it", "speak against it"),
                        "no detected concept contributes noticeably", "supports it most",
                        "speaks against it most", "helps it", "counts against it")
    a, b = expl.target, class_name
    return _Phrases((f"favours {a} over {b}", f"favour {a} over {b}"), (f"favours {b}", f"favour {b}"),
                    "no detected concept separates the two noticeably", f"favours {a} most",
                    f"favours {b} most", f"favours {a}", f"favours {b}")


def class_sentence(expl: Explanation, class_name: str, names: ConceptNames | None = None,
                   top: int = 2, *, why: bool | None = None) -> str:
    """The sentence of one class: "why A?" for the explained class A, else "why not B?".

    Why: the ``top`` concepts for and against A, its strongest relation each way, its missing
    concepts. Why not B: the same, ranked by the margin y_A - y_B (positive favours A over B).
    ``why`` chooses the kind (default: "why" exactly for ``expl.target``).
    """
    ce = expl.classes[class_name]
    why = class_name == expl.target if why is None else why
    concepts, relations, missing, _ = rank_reasons(ce, names, own_graph=ce.class_name if why else None)
    words = _phrases(expl, class_name, why)
    pro = [r for r in concepts if r.value > 0][:top]
    con = [r for r in concepts if r.value < 0][:top]
    clauses = [f"{_join(items)} {phrase[0] if len(items) == 1 else phrase[1]}"
               for items, phrase in ((pro, words.pro), (con, words.con)) if items]
    if not pro and not con:
        clauses.append(words.nothing)
    rel_pro = [r for r in relations if r.value > 0]
    rel_con = [r for r in relations if r.value < 0]
    for rel, phrase in ((rel_pro, words.rel_pro), (rel_con, words.rel_con)):
        if rel:
            clauses.append(f"{_with_value(rel[0].text, rel[0].value)} {phrase}")
    clauses += _missing_clauses(missing[:top], words.missing_pro, words.missing_con)
    if why:
        pred = "" if expl.target == expl.predicted else f", predicted {expl.predicted}"
        head = f"why {ce.class_name} (score {ce.score:.3g}{pred})? "
    else:
        a = expl.target
        ahead = "" if (ce.margin or 0.0) >= 0 else f"; {class_name} scores higher"
        head = f"why not {class_name} (score {ce.score:.3g} vs {a} {expl.scores[a]:.3g}{ahead})? "
    return head + "; ".join(clauses) + "."


def why_sentence(expl: Explanation, names: ConceptNames | None = None, top: int = 2) -> str:
    """'why fire_engine (score 4.2)? concepts 1 (ladder, +1.2) and 3 (wheel, +0.8) support it; ...'."""
    return class_sentence(expl, expl.target, names, top, why=True)


def why_not_sentence(expl: Explanation, class_name: str, names: ConceptNames | None = None,
                     top: int = 2) -> str:
    """'why not ambulance (score 0.5 vs fire_engine 4.2)? ... favour fire_engine over ambulance; ...'."""
    return class_sentence(expl, class_name, names, top, why=False)


def _missing_clauses(missing: list[Reason], pos: str, neg: str) -> list[str]:
    out = []
    for r in missing:
        out.append(f"{r.text} was not found, which {pos if r.value > 0 else neg} ({_fmt(r.value)})")
    return out


def add_sentences(expl: Explanation, names: ConceptNames | None = None, top: int = 2) -> Explanation:
    """Fill ``sentence`` of every class of ``expl`` (in place) and return it."""
    for cname, ce in expl.classes.items():
        ce.sentence = class_sentence(expl, cname, names, top)
    return expl

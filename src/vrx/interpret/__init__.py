"""Visual Decision Interpreter: contributions of concepts and relations, why / why-not, figures."""

from .contributions import (
    ClassExplanation, Contributions, EdgeContribution, Explanation, Interpreter, NodeContribution,
    check_completeness,
)
from .figure import draw_explanation, save_figure
from .sentences import (
    Reason, add_sentences, names_from_purity, rank_reasons, relation_word, why_not_sentence, why_sentence,
)

__all__ = [
    "ClassExplanation", "Contributions", "EdgeContribution", "Explanation", "Interpreter",
    "NodeContribution", "Reason", "add_sentences", "check_completeness", "draw_explanation",
    "names_from_purity", "rank_reasons", "relation_word", "save_figure", "why_not_sentence",
    "why_sentence",
]

"""Visual Decision Interpreter: contributions of concepts and relations, why / why-not, figures."""

from .contributions import Contributions, Interpreter
from .explanation import (
    ClassExplanation, EdgeContribution, Explanation, NodeContribution, check_completeness,
)
from .figure import draw_explanation, figure_png, save_figure
from .sentences import (
    Reason, add_sentences, class_sentence, names_from_purity, rank_reasons, relation_word, why_not_sentence,
    why_sentence,
)

__all__ = [
    "ClassExplanation", "Contributions", "EdgeContribution", "Explanation", "Interpreter",
    "NodeContribution", "Reason", "add_sentences", "check_completeness", "class_sentence",
    "draw_explanation", "figure_png", "names_from_purity", "rank_reasons", "relation_word", "save_figure",
    "why_not_sentence", "why_sentence",
]

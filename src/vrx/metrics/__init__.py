"""Metrics that check explanations against ground truth and against the model.

Modules (import what you use; this package imports none of them):

- :mod:`.purity`: concept purity, discovered concepts against toyworld part types.
- :mod:`.localization`: whether detected concept nodes sit on their ground-truth part.
- :mod:`.deletion`: deletion / insertion curves and AUCs of pixel saliency maps (RISE protocol).
- :mod:`.pointing`: pointing game, energy-based pointing game, their chance baseline, toyworld masks.
- :mod:`.concept_deletion`: C-Deletion / C-Insertion of ranked concept regions.
- :mod:`.dissection`: network dissection of layers against toyworld part maps.
- :mod:`.tradeoff`: amount kept against class re-identification (Kwon et al.).

See docs/metrics.md for each protocol and its defaults.
"""

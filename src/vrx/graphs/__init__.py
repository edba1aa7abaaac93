"""Structural concept graphs: the batch type and its shape (``scg``), the teacher's logits
(``teacher``), the graph dataset and its folder (``dataset``), and the builder that makes graphs
from images and a concept bank (``builder``). Nothing is imported here: import the module you need.
"""

"""``vrx compare``: every attribution method, VRX included, on the same images, in one table.

Apps layer (above the core; it may use :mod:`vrx.run` and :mod:`vrx.explain`):

- :mod:`.vrxmap`: VRX as a pixel map (the ``vrx`` attribution method) and its detected concepts;
- :mod:`.images`: which images are compared, and their ground-truth masks on toyworld;
- :mod:`.timing`: seconds per image, and the model's forward+backward as the unit;
- :mod:`.concept_orders`: C-Deletion / C-Insertion orders (VRX, TCAV, random, occlusion oracle);
- :mod:`.runner`: runs the methods and the metrics (:class:`~.runner.Comparison`);
- :mod:`.table`: ``compare.json`` and ``compare.md``; :mod:`.figures`: the PNG figures;
- :mod:`.report_section`: the section ``vrx report`` shows for a run's comparison.

Nothing heavy is imported here.
"""

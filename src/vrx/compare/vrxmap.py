"""VRX as a pixel map: each detected concept's contribution painted on the segment it was matched to.

For every image the run's :class:`~vrx.graphs.builder.SCGBuilder` builds the structural concept
graphs (segmentation, Grad-CAM filter and matching exactly as ``vrx explain`` does), the run's
:class:`~vrx.interpret.Interpreter` splits the GRN's output for the target class into node (and
edge) contributions, and each *detected* concept of *every* class graph adds its signed node
contribution to the pixels of its matched segment. Segments of different concepts may overlap
(a segment can be matched by concepts of several class graphs, and SLIC resolutions overlap): the
contributions then add. Dummy nodes (undetected concepts, padding) have no segment; their learned
constants stay outside the map, as does the GRN head's bias.

``edges="split"`` also paints each present relation's contribution, half on each end's segment;
the default ``"none"`` paints nodes only, so every pixel value is a sum of node contributions.

The target must be a class of interest of the run (UnknownClassError otherwise); without a target,
each image's classifier's best class among the classes of interest is explained. :meth:`VRXMap.concepts`
gives the same detections as data (segment masks, contributions, TCAV ranks) for concept-level
metrics. The method registers as ``vrx`` when this module is imported (``vrx.compare.runner`` does).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..attribution.base import Attribution, register
from ..errors import ConfigError, UnknownClassError
from ..models.adapter import ClassifierAdapter, Target
from ..models.inputs import Images
from ..progress import progress
from ..store import content_hash

if TYPE_CHECKING:
    from ..run import Run

__all__ = ["DetectedConcept", "ImageConcepts", "VRXMap"]

EDGE_MODES = ("none", "split")
#: Detections kept per method instance (keyed by the image's pixels): ``attribute`` then
#: ``concepts`` on the same images (as ``vrx compare`` does) build each image's graphs once.
MEMO_IMAGES = 64


@dataclass
class DetectedConcept:
    """One detected concept of one image: where it was found and what it contributes."""

    class_graph: str        # the class whose graph (and concept bank) it belongs to
    concept: int            # 1-based rank in that class's bank (the importance order)
    tcav: float             # its TCAV score in the bank
    mask: np.ndarray        # H×W bool, the matched segment at the image's resolution
    contribution: float     # node contribution to the target class's GRN output


@dataclass
class ImageConcepts:
    """The detected concepts of one image with their contributions to one target class."""

    target: str                         # the class of interest explained
    score: float                        # the GRN's output for it
    concepts: list[DetectedConcept] = field(default_factory=list)

    def of_class(self, class_name: str | None = None) -> list[DetectedConcept]:
        """The detected concepts of one class graph (default: the target's own)."""
        name = self.target if class_name is None else class_name
        return [c for c in self.concepts if c.class_graph == name]


@dataclass
class _Detection:
    """What one image's graphs give, for every output: node [C, K, N] and edge [C, K, E] contributions."""

    scores: np.ndarray
    node: np.ndarray
    edge: np.ndarray
    masks: dict[tuple[int, int], np.ndarray]   # (class graph k, node n) -> segment, detected nodes only


@register
class VRXMap(Attribution):
    """VRX's explanation of a run as a signed pixel map (see the module docstring)."""

    name = "vrx"
    signed = True
    #: Built with ``run=`` (a finished run folder), not from an adapter alone.
    needs_run = True

    def __init__(self, adapter: ClassifierAdapter, *, run: Run | str | os.PathLike | None = None,
                 edges: str = "none", use_cache: bool = False, seed: int = 0, batch_size: int | None = None):
        super().__init__(adapter, seed=seed, batch_size=batch_size)
        if run is None:
            raise ConfigError("attribution method 'vrx' needs run=RUN (a run folder with concepts/, "
                              "graphs/ and grn/, made by `vrx demo` or discover/graphs/train)")
        if edges not in EDGE_MODES:
            raise ConfigError(f"vrx: edges must be one of {EDGE_MODES}, got {edges!r}")
        if not isinstance(use_cache, bool):
            raise ConfigError(f"vrx: use_cache must be True or False, got {use_cache!r}")
        from ..concepts.features import PatchMemo
        from ..graphs.builder import SCGBuilder
        from ..interpret.contributions import Interpreter
        from ..run import Run

        self.run = run if isinstance(run, Run) else Run(run)
        self.edges = edges
        self.use_cache = use_cache
        self.bank, self.grn = self.run.bank_and_grn()
        self.class_names = self.bank.class_names
        self.interpreter = Interpreter(self.grn)
        self.match = self.run.match_config()
        # Without use_cache nothing is written into the run: the memo lets the masks be read back
        # right after matching without segmenting the image again.
        self.builder = SCGBuilder(adapter, self.bank, self.match,
                                  cache_dir=self.run.patch_cache_dir if use_cache else None,
                                  memo=PatchMemo(4), show_progress=False)
        self.class_ids = list(self.builder.class_ids)
        self.layout_edges = list(self.grn.layout.edges) if self.grn.layout.num_edges else []
        self._memo: OrderedDict[str, _Detection] = OrderedDict()

    def config(self) -> dict[str, Any]:
        return {"seed": self.seed, "run": str(self.run.path), "edges": self.edges,
                "use_cache": self.use_cache, "match": self.match.to_dict()}

    # ---- targets ----------------------------------------------------------------------------

    def targets(self, images: torch.Tensor, target: Target | None) -> torch.Tensor:
        """Model class ids, each a class of interest; None: the classifier's best class of interest."""
        if target is None:
            logits = self.adapter.logits(images, self.batch_size)[:, self.class_ids]
            return torch.tensor(self.class_ids, dtype=torch.long)[logits.argmax(1)]
        ids = super().targets(images, target)
        for t in ids.tolist():
            self._interest(t)
        return ids

    def _interest(self, class_id: int) -> int:
        """Index of model class ``class_id`` among the run's classes of interest."""
        if class_id not in self.class_ids:
            raise UnknownClassError(f"vrx explains only the run's classes of interest {self.class_names}; "
                                    f"class {self.adapter.class_name(class_id)!r} (id {class_id}) is not one")
        return self.class_ids.index(class_id)

    # ---- maps and concepts --------------------------------------------------------------------

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if kwargs:
            raise ConfigError(f"vrx: unknown attribute() options {sorted(kwargs)}")
        b, _, h, w = images.shape
        out = torch.zeros(b, h, w, dtype=torch.float32)
        for i in progress(range(b), desc="vrx maps", enabled=None if b > 1 else False):
            det = self._detection(images[i])
            t = self._interest(int(targets[i]))
            out[i] = torch.from_numpy(self._paint(det, t, (h, w)).astype(np.float32))
        return out

    def _paint(self, det: _Detection, t: int, shape: tuple[int, int]) -> np.ndarray:
        # float64 so that a pixel under several segments is their exact sum before the cast.
        canvas = np.zeros(shape, np.float64)
        for (k, n), mask in det.masks.items():
            canvas[mask] += det.node[t, k, n]
        if self.edges == "split":
            for k in range(det.edge.shape[1]):
                for e, (j, i) in enumerate(self.layout_edges):
                    if (k, j) in det.masks and (k, i) in det.masks:
                        half = det.edge[t, k, e] / 2.0
                        canvas[det.masks[(k, j)]] += half
                        canvas[det.masks[(k, i)]] += half
        return canvas

    def concepts(self, images: Images, target: Target | None = None) -> list[ImageConcepts]:
        """Per image, every detected concept (all class graphs) with its contribution to the target."""
        x = self.check_images(images)
        targets = self.targets(x, target)
        out = []
        for i in range(x.shape[0]):
            det = self._detection(x[i])
            t = self._interest(int(targets[i]))
            found = []
            for (k, n), mask in sorted(det.masks.items()):
                concept = self.bank[self.class_names[k]][n]
                found.append(DetectedConcept(class_graph=self.class_names[k], concept=n + 1,
                                             tcav=float(concept.tcav), mask=mask,
                                             contribution=float(det.node[t, k, n])))
            out.append(ImageConcepts(target=self.class_names[t], score=float(det.scores[t]), concepts=found))
        return out

    def _detection(self, image: torch.Tensor) -> _Detection:
        """The graphs, contributions and matched segments of one [3, H, W] image (memoised)."""
        array = np.ascontiguousarray(image.permute(1, 2, 0).numpy(), dtype=np.float32)
        key = content_hash(array)
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        dataset, matches = self.builder.transform([array], return_matches=True)
        con = self.interpreter.contributions(dataset.graphs)
        patch = matches.patch[0]
        segments = self.builder.featurizer(array).masks   # the memo's entry: no second segmentation
        masks = {(int(k), int(n)): segments[patch[k, n]] for k, n in zip(*np.nonzero(patch >= 0))}
        det = _Detection(scores=con.scores[0].double().numpy(), node=con.node[0].double().numpy(),
                         edge=con.edge[0].double().numpy(), masks=masks)
        self._memo[key] = det
        if len(self._memo) > MEMO_IMAGES:
            self._memo.popitem(last=False)
        return det

"""The edits of the consistency experiment, and the view of one error they work on.

:class:`GuidedEdits` is mixed into :class:`vrx.experiments.consistency.ConsistencyExperiment`: the
VRX-guided edit of one culprit (``replace``, ``fill``, ``move``, ``paste``), the random-patch and
good-concept controls and the Grad-CAM map. A concept's example patch is the nearest member of the
concept in the bank that comes from another image; with ``ConsistencyConfig.patch == "box"`` a
patch (pasted, filled or moved) is its segment's bounding box.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import load_image
from ..data.toyworld.render import render_layers
from ..errors import InvalidImageError
from .error_typing import Culprit, ErrorAccount
from .pixel_edits import centroid, fill, paste, place_elsewhere, transplant

@dataclass
class ErrorView:
    """One image seen through the run for one error: graphs, matches, contributions, VRX's account."""

    graphs: Any
    chosen: np.ndarray        # [K, N] patch index of each node (-1: not detected)
    patches: Any              # ImagePatches
    own: np.ndarray           # [N] contributions of t's nodes to y_t
    node_d: np.ndarray        # [K, N] margin contributions to y_p - y_t
    present: np.ndarray       # [K, N] bool
    pos: np.ndarray           # [K, N, 2] (x, y) in [0, 1]
    account: ErrorAccount | None
    box: bool = True          # a patch is its segment's bounding box (ConsistencyConfig.patch == "box")

    def mask(self, k: int, n: int) -> np.ndarray:
        """The patch of node n (1-based) of graph k: its segment, or the segment's box."""
        j = self.chosen[k, n - 1]
        if not self.box:
            return self.patches.masks[j].copy()
        out = np.zeros(self.patches.shape, bool)
        y0, x0, y1, x1 = (int(v) for v in self.patches.bboxes[j])
        out[y0:y1, x0:x1] = True
        return out




class GuidedEdits:
    """The edits and controls; expects the attributes ConsistencyExperiment sets."""

    @cached_property
    def expected_offsets(self) -> np.ndarray:
        """[K, N, N, 2] mean (x, y) offset of node n from node m of graph k (the relation n - m), over
        the run's graphs of images of class k where both are detected; NaN where never seen together."""
        ds = self.run_folder.graphs(self.class_names)
        pos, present = ds.graphs.pos.double().numpy(), ds.graphs.present.numpy() > 0
        labels = np.asarray(ds.labels)
        k_, n_ = present.shape[1:3]
        out = np.full((k_, n_, n_, 2), np.nan)
        for k in range(k_):
            rows = labels == k
            for n in range(self.n_concepts[k]):
                for m in range(self.n_concepts[k]):
                    both = rows & present[:, k, n] & present[:, k, m]
                    if m != n and both.any():
                        out[k, n, m] = (pos[both, k, n] - pos[both, k, m]).mean(0)
        return out

    def expected_position(self, look: ErrorView, k: int, n: int) -> np.ndarray | None:
        """(x, y) in [0, 1] where node n (1-based) of the true class's graph k belongs: from the
        detected concept of k that supports k most (the anchor), by their mean relation in images of
        k; None without an anchor."""
        off = self.expected_offsets[k, n - 1]
        anchors = [m for m in range(self.n_concepts[k]) if m != n - 1 and look.present[k, m]
                   and not np.isnan(off[m]).any()]
        if not anchors:
            return None
        m = max(anchors, key=lambda j: look.own[j])
        return look.pos[k, m] + off[m]

    def _member_patch(self, cls: str, concept: int, exclude: str) -> tuple[np.ndarray, np.ndarray, str] | None:
        """(source image, mask, path) of the nearest member patch of a concept from another image."""
        for m in self.bank[cls][concept - 1].members:
            if Path(m.image).resolve() == Path(exclude).resolve():
                continue
            try:
                src = load_image(m.image)
            except InvalidImageError:
                continue
            if src.shape[:2] == tuple(m.image_shape):
                mask = m.full_mask()
                if self.config.patch == "box":   # the patch's whole box, as a concept's examples are shown
                    y0, x0, y1, x1 = m.bbox
                    mask[y0:y1, x0:x1] = True
                return src, mask, str(m.image)
        return None

    def _replace(self, image: np.ndarray, mask: np.ndarray, cls: str, concept: int, path: str
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
        got = self._member_patch(cls, concept, path)
        if got is None or got[0].shape != image.shape:
            return None
        src, src_mask, src_path = got
        new, region = paste(image, src, src_mask, centroid(mask), clear=mask, value=self.fill_value)
        return new, region, {"source_image": src_path, "source_bbox": [int(v) for v in bbox_of(src_mask)],
                             "concept": f"{cls}/{concept}"}

    def _image_rng(self, path: str, salt: int) -> np.random.Generator:
        name = f"{Path(path).parent.name}/{Path(path).name}"
        return np.random.default_rng(np.random.SeedSequence([int(self.config.seed), salt,
                                                             zlib.crc32(name.encode())]))

    def _random_control(self, image: np.ndarray, masks: list[tuple[str, np.ndarray]], allowed: np.ndarray,
                        path: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | str:
        """The VRX edits' patches, each replaced by a random image's pixels there (a fill: the same
        shape filled elsewhere on the vehicle, where VRX edited nothing)."""
        rng = self._image_rng(path, 1)
        out, region, sources = image, np.zeros(image.shape[:2], bool), []
        for action, mask in masks:
            if action == "fill":
                other = place_elsewhere(mask, allowed & ~region, rng)
                if other is None:
                    return "no free place of that shape on the vehicle"
                out, reg = fill(out, other, self.fill_value)
                sources.append(None)
            else:
                src_path = self.random_pool[int(rng.integers(len(self.random_pool)))]
                src = load_image(src_path)
                if src.shape != image.shape:
                    return f"{src_path}: another image size"
                out, reg = transplant(out, src, mask)
                sources.append(str(src_path))
            region |= reg
        return out, region, {"action": "fill" if masks[0][0] == "fill" else "transplant", "sources": sources}

    def _good_control(self, image: np.ndarray, look: ErrorView, t: int, culprit: Culprit | None, ends: list[int],
                      n: int, path: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | str:
        """The ``n`` detected concepts of t that support it most (not the culprit) replaced by good patches."""
        blamed = set(ends) if culprit is not None and culprit.class_graph == self.class_names[t] else set()
        good = sorted(((float(look.own[j]), j) for j in range(self.n_concepts[t])
                       if look.present[t, j] and j + 1 not in blamed and look.own[j] > 0), reverse=True)[:n]
        if not good:
            return "no detected concept supports the true class"
        out, region, detail = image, np.zeros(image.shape[:2], bool), []
        for _, j in good:
            got = self._replace(out, look.mask(t, j + 1), self.class_names[t], j + 1, path)
            if got is None:
                return "no member patch to take"
            out, reg, d = got
            region |= reg
            detail.append(d)
        return out, region, {"action": "replace", "patches": detail}

    def _guided(self, image: np.ndarray, culprit: Culprit, k: int, t: int, look: ErrorView, path: str
                ) -> tuple[str, int, np.ndarray, np.ndarray, dict[str, Any]]:
        """(action, edited node's 1-based rank, image, region, detail) of one VRX-guided edit."""
        if culprit.kind == "missing":
            got = self._missing_paste(image, look, t, culprit.concept, path)
            if got is not None:
                return "paste", culprit.concept, got[0], got[1], got[2]
            return "none", culprit.concept, image, np.zeros(image.shape[:2], bool), {"reason": "no member patch"}
        if culprit.kind == "node":
            n = culprit.concept
            if k == t:
                got = self._replace(image, look.mask(k, n), self.class_names[t], n, path)
                if got is not None:
                    return "replace", n, got[0], got[1], got[2]
            new, reg = fill(image, look.mask(k, n), self.fill_value)
            return "fill", n, new, reg, {}
        ends = [culprit.concept, int(culprit.target)]
        if k != t:
            n = max(ends, key=lambda e: look.node_d[k, e - 1])
            new, reg = fill(image, look.mask(k, n), self.fill_value)
            return "fill", n, new, reg, {}
        # A relation of the true class: move its misplaced end to where t's images put it.
        h, w = image.shape[:2]
        best = None
        for n in ends:
            want = self.expected_position(look, k, n)
            if want is None:
                continue
            dev = float(np.linalg.norm(look.pos[k, n - 1] - want))
            if best is None or dev > best[0]:
                best = (dev, n, want)
        if best is None:
            n = max(ends, key=lambda e: look.node_d[k, e - 1])
            new, reg = fill(image, look.mask(k, n), self.fill_value)
            return "fill", n, new, reg, {"reason": "no reference position for either end"}
        dev, n, want = best
        center = (float(want[1]) * h - 0.5, float(want[0]) * w - 0.5)
        new, reg = paste(image, image, look.mask(k, n), center, clear=look.mask(k, n), value=self.fill_value)
        return "move", n, new, reg, {"to": [round(center[1], 1), round(center[0], 1)], "deviation": round(dev, 4)}

    def _missing_paste(self, image: np.ndarray, look: ErrorView, t: int, n: int, path: str
                       ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
        """A missing concept of t: its best member patch pasted where t's images put it."""
        want = self.expected_position(look, t, n)
        got = self._member_patch(self.class_names[t], n, path)
        if want is None or got is None or got[0].shape != image.shape:
            return None
        src, src_mask, src_path = got
        h, w = image.shape[:2]
        new, reg = paste(image, src, src_mask, (float(want[1]) * h - 0.5, float(want[0]) * w - 0.5))
        return new, reg, {"source_image": src_path, "source_bbox": [int(v) for v in bbox_of(src_mask)],
                          "concept": f"{self.class_names[t]}/{n}"}

    def _where(self, look: ErrorView, culprit: Culprit) -> list[np.ndarray]:
        """The culprit's matched segments (both ends' for a relation; a missing concept has none):
        the exact patches VRX matched, whatever shape the edits give them."""
        if culprit.kind == "missing":
            return []
        k = self.class_names.index(culprit.class_graph)
        ends = [culprit.concept] + ([culprit.target] if culprit.target else [])
        return [look.patches.masks[look.chosen[k, n - 1]] for n in ends]

    def _gradcam(self, image: np.ndarray, cls: int) -> np.ndarray:
        from ..attribution.gradcam import GradCAM

        cam = GradCAM(self.adapter)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
        return cam.attribute(x, [self.class_ids[cls]])[0].numpy()

    # ------------------------------------------------------------------ the experiment

def bbox_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def vehicle_mask(scene) -> np.ndarray:
    """Pixels of the vehicle's own parts (not loose parts, not background)."""
    inst = render_layers(scene, noise=False).instances
    own = np.array([not p.distractor for p in scene.parts] + [False])
    return own[inst.astype(np.int64)]   # instance -1 (background) indexes the trailing False

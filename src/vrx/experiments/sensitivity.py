"""Sensitivity of VRX's explanations to visual and structural edits (paper section 4.3, Figure 7).

On toyworld, where every pixel's part is known, each image (true class c) goes through:

1. render its scene, build its SCGs with the run's concept bank, explain with the run's GRN;
2. pick a concept k of class c's graph that is **detected** and whose matched patch lies **mostly on
   one vehicle part type** (the share of the patch's pixels on vehicle parts of that type, from the
   scene's instance map, is at least ``min_share``; background, loose distractor parts and the body
   do not count as a part to edit);
3. edit that part in the scene (every vehicle instance of its type, by default), re-render, rebuild
   the graphs with the same bank and builder settings, explain again;
4. compare, for output c and class graph c:

   * **structural** (edit ``move``): the part keeps its look and moves vertically to an implausible
     place: a part in the lower half of the body (wheels) goes onto the roof, its footprint's bottom
     ``gap`` pixels above the body's top; a part in the upper half (ladder, windows, siren) goes under
     the floor. Measure: the sum of the contributions of the directed edges j -> k and k -> j;
   * **visual** (edit ``swap``): the part is replaced, at the same centre and draw position, by a part
     of a type that another class of interest has and class c has not (a cross or a door instead of
     a wheel), sized as that type is in a vehicle; edit ``distort`` keeps the part's shape and inverts
     its colours. Measure: node k's contribution;
   * edit ``noise`` is the control for either measure: only the pixel noise is drawn anew, no part
     changes; its "fell" rate says how often the measure falls by chance.

The effect "held" when the measure after the edit is strictly below the one before. When concept k
is not detected after the edit, its edges have an embedding of zero, so their contribution is exactly
0, and the node is a dummy whose contribution is the GRN's learned constant for that slot: these are
the values VRX would report, and they are used as they are (no special case). Such images are
counted in ``n_vanished``, and ``rate_detected`` gives the rate over the others.

Choosing k (``pick``): ``"contribution"`` takes the eligible concept whose measure is largest before
the edit (the paper edits "a relatively good concept, with high positive contribution"), ``"rank"``
the best-ranked eligible concept. Picking the largest favours a fall a little (regression to the
mean), which the ``noise`` control measures. With ``positive_only`` (the default) a concept is
eligible only if its measure is positive before the edit: removing a relation that counted *against*
the class should raise the measure, so such an image says nothing about the effect; an image with no
such concept is skipped.

The settings, the per-image records and the results (with their JSON form) are in
:mod:`vrx.experiments.records`.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..concepts.features import PatchMemo
from ..concepts.inputs import resized_batch
from ..data.images import load_image
from ..data.toyworld.dataset import load_scene
from ..data.toyworld.render import render_layers
from ..data.toyworld.scene import Scene
from ..errors import ArtifactError, ConfigError, InvalidImageError
from ..graphs.builder import SCGBuilder
from ..graphs.scg import SCGBatch
from ..interpret.contributions import Interpreter
from ..progress import progress
from ..run import Run
from .records import DEFAULT_EDIT, EDITS, KINDS, SensitivityConfig, SensitivityRecord, SensitivityResult
from .scene_edits import (
    EditInfo, SkipImage, distort_edit, move_edit, noise_edit, replacement_types, swap_edit,
)

log = logging.getLogger(__name__)

#: Images whose patches are kept in memory: a scene's matched masks are read back right after
#: its graphs are built, without a disk cache and without segmenting it again.
MEMO_IMAGES = 4


@dataclass
class _State:
    """One rendered scene seen through the run: graphs, contributions for class c, patch masks."""

    graphs: SCGBatch
    node: np.ndarray                 # [N] contributions of class c's nodes to output c
    edge: np.ndarray                 # [E] contributions of class c's edges to output c
    masks: dict[int, np.ndarray]     # node -> matched patch mask, for detected nodes of graph c
    score: float
    logit: float
    instances: np.ndarray            # scene instance map (part index, -1 background)
    parts: np.ndarray                # scene part-type map (0 background)
    rgb: np.ndarray                  # the rendered image, uint8


def _to_float(rgb: np.ndarray) -> np.ndarray:
    # Exactly what load_image gives for the PNG, so the patch cache key and features agree.
    return np.ascontiguousarray(rgb.astype(np.float64) / 255.0, dtype=np.float32)


def _image_rng(seed: int, scene: Scene, image: str) -> np.random.Generator:
    # Keyed on class and file name, so an image gets the same edit wherever its folder is.
    name = f"{scene.cls}/{Path(image).name}"
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


class SensitivityExperiment:
    """Loads a run once (classifier, bank, GRN) and runs sensitivity experiments on toyworld images."""

    def __init__(self, run: Run | str | os.PathLike, config: SensitivityConfig | None = None, *,
                 show_progress: bool | None = None):
        self.run_folder = run if isinstance(run, Run) else Run(run)
        self.config = config or SensitivityConfig()
        self.show_progress = show_progress
        self.bank, self.grn = self.run_folder.bank_and_grn()
        self.class_names = self.bank.class_names
        self.adapter = self.run_folder.adapter()
        self.interpreter = Interpreter(self.grn)
        self.edges = list(self.grn.layout.edges) if self.grn.layout.num_edges else []
        # No disk cache: edited images would fill the run's patch cache; the memo serves the reads.
        self.builder = SCGBuilder(self.adapter, self.bank, self.run_folder.match_config(), cache_dir=None,
                                  memo=PatchMemo(MEMO_IMAGES), show_progress=False)
        self._before: dict[str, tuple[Scene, _State] | str] = {}

    # -------------------------------------------------------------- measuring one scene
    def _state(self, scene: Scene, cls: str) -> _State:
        layers = render_layers(scene)
        image = _to_float(layers.rgb)
        dataset, matches = self.builder.transform([image], return_matches=True)
        graphs, matched = dataset.graphs, matches.patch[0]
        k = self.class_names.index(cls)
        con = self.interpreter.contributions(graphs)
        patches = self.builder.featurizer(image)
        masks = {int(n): patches.masks[matched[k, n]] for n in np.flatnonzero(matched[k] >= 0)}
        with torch.no_grad():
            logits = self.adapter.logits(resized_batch([image], self.adapter.input_size))
        return _State(graphs=graphs, node=con.node[0, k, k].double().numpy(),
                      edge=con.edge[0, k, k].double().numpy(), masks=masks,
                      score=float(con.scores[0, k]), logit=float(logits[0, self.adapter.class_id(cls)]),
                      instances=layers.instances, parts=layers.parts, rgb=layers.rgb)

    def _measure(self, state: _State, kind: str, n: int) -> float:
        if kind == "visual":
            return float(state.node[n])
        return float(sum(state.edge[e] for e, (j, i) in enumerate(self.edges) if n in (j, i)))

    def _vehicle_types(self, scene: Scene, instances: np.ndarray) -> np.ndarray:
        """Per pixel, the type name index+1 of the vehicle part drawn there; 0 for anything else."""
        from ..data.toyworld.classes import PART_IDS

        lut = np.zeros(len(scene.parts) + 1, np.int64)   # slot 0 is background (instance -1)
        for i, p in enumerate(scene.parts):
            if not p.distractor and p.type != "body":
                lut[i + 1] = PART_IDS[p.type]
        return lut[instances.astype(np.int64) + 1]

    def candidates(self, scene: Scene, state: _State) -> list[tuple[int, str, float]]:
        """Eligible nodes of class c's graph: (node, part type, share), detected and mostly on one part type."""
        from ..data.toyworld.classes import PART_TYPES

        labels = self._vehicle_types(scene, state.instances)
        n_real = len(self.bank[scene.cls])   # slots beyond are padding, never concepts
        out = []
        for n, mask in sorted(state.masks.items()):
            if n >= n_real or not mask.any():
                continue
            counts = np.bincount(labels[mask], minlength=len(PART_TYPES) + 1)
            top = int(counts[1:].argmax()) + 1
            share = counts[top] / mask.sum()
            if share >= self.config.min_share:
                out.append((n, PART_TYPES[top - 1], float(share)))
        return out

    def _before_of(self, path: str) -> tuple[Scene, _State]:
        if path in self._before:
            got = self._before[path]
            if isinstance(got, str):
                raise SkipImage(got)
            return got
        try:
            p = Path(path)
            json_path = p.with_suffix(".json")
            if not json_path.exists():
                raise SkipImage(f"no scene JSON beside the image ({json_path.name}): not a toyworld image")
            scene = load_scene(json_path)
            if scene.cls not in self.class_names:
                raise SkipImage(f"class {scene.cls!r} is not a class of interest {self.class_names}")
            state = self._state(scene, scene.cls)
            if p.exists() and not np.array_equal(load_image(p), _to_float(state.rgb)):
                raise SkipImage("the scene JSON does not reproduce the image (edited or re-encoded?)")
        except SkipImage as exc:
            self._before[path] = str(exc)
            raise
        except (ArtifactError, InvalidImageError) as exc:
            self._before[path] = str(exc)
            raise SkipImage(str(exc)) from None
        self._before[path] = (scene, state)
        return scene, state

    # -------------------------------------------------------------- the experiment
    def edit(self, scene: Scene, kind: str, edit: str, part_type: str, part_indices: Sequence[int],
             rng: np.random.Generator) -> tuple[Scene, EditInfo]:
        """Apply ``edit`` to the parts ``part_indices`` (of ``part_type``) of ``scene``."""
        if edit == "noise":
            return noise_edit(scene, rng)
        if edit == "move":
            return move_edit(scene, part_indices, gap=int(self.config.gap), min_inside=self.config.min_inside)
        if edit == "swap":
            types = replacement_types(scene.cls, self.class_names)
            return swap_edit(scene, part_indices, types[int(rng.integers(len(types)))], rng)
        if edit == "distort":
            return distort_edit(scene, part_indices)
        raise ConfigError(f"unknown edit {edit!r} for {kind}; known: {', '.join(EDITS[kind])}")

    def _parts_to_edit(self, scene: Scene, state: _State, n: int, part_type: str) -> list[int]:
        same = [i for i in scene.find(part_type)]
        if self.config.all_instances:
            return same
        mask = state.masks[n]
        return [max(same, key=lambda i: int((state.instances[mask] == i).sum()))]

    def measure_image(self, image: str | os.PathLike, kind: str, edit: str | None = None) -> SensitivityRecord:
        """Edit one toyworld image and measure; raises SkipImage (a VRXError) when it cannot be used."""
        kind, edit = self._check(kind, edit)
        path = str(image)
        scene, before = self._before_of(path)
        cls = scene.cls
        cands = self.candidates(scene, before)
        if not cands:
            raise SkipImage(f"no detected {cls} concept lies mostly (>= {self.config.min_share:.0%}) on one "
                        "vehicle part other than the body")
        if self.config.positive_only:
            # An edit can only take away credit that is there: a concept whose measure counts
            # against the class would "fail" exactly when the edit removes that evidence.
            cands = [c for c in cands if self._measure(before, kind, c[0]) > self.config.tol]
            if not cands:
                raise SkipImage(f"no eligible {cls} concept has a positive {kind} measure before the edit")
        if self.config.pick == "rank":
            n, ptype, share = cands[0]
        else:
            n, ptype, share = max(cands, key=lambda c: self._measure(before, kind, c[0]))
        indices = self._parts_to_edit(scene, before, n, ptype)
        rng = _image_rng(self.config.seed, scene, path)
        new_scene, info = self.edit(scene, kind, edit, ptype, indices, rng)
        after = self._state(new_scene, cls)
        k = self.class_names.index(cls)
        detected = bool(after.graphs.present[0, k, n] > 0)
        share_after = None
        if detected and n in after.masks:
            region = np.zeros_like(after.instances, bool)
            for j in info.new_indices:
                region |= after.instances == j
            m = after.masks[n]
            share_after = float((m & region).sum() / max(m.sum(), 1))
        b, a = self._measure(before, kind, n), self._measure(after, kind, n)
        return SensitivityRecord(
            image=path, true_class=cls, kind=kind, edit=edit, concept=n + 1, part_type=ptype, share=share,
            edited_parts=list(info.old_indices), detail=dict(info.detail), before=b, after=a, held=a < b - self.config.tol,
            detected_after=detected, share_after=share_after,
            changed_pixels=int((before.parts != after.parts).sum()),
            score_before=before.score, score_after=after.score,
            logit_before=before.logit, logit_after=after.logit)

    def _check(self, kind: str, edit: str | None) -> tuple[str, str]:
        if kind not in KINDS:
            raise ConfigError(f"unknown sensitivity kind {kind!r}; known: {', '.join(KINDS)}")
        edit = DEFAULT_EDIT[kind] if edit is None else edit
        if edit not in EDITS[kind]:
            raise ConfigError(f"unknown edit {edit!r} for {kind}; known: {', '.join(EDITS[kind])}")
        if kind == "structural" and not self.edges:
            raise ConfigError(f"{self.run_folder.grn_dir}: this GRN has no edge embeddings "
                              "(use_edge_features=False), so relations have no contribution to measure")
        return kind, edit

    def run(self, images: Sequence[str | os.PathLike], kind: str, edit: str | None = None, *,
            limit: int | None = None) -> SensitivityResult:
        """Edit and measure the images in order (until ``limit`` records); unusable ones go to ``skipped``.

        It runs with the process's torch threads as they are (see :func:`vrx.runtime.threads`).
        """
        kind, edit = self._check(kind, edit)
        if not images:
            raise InvalidImageError("no images given to the sensitivity experiment")
        start = time.perf_counter()
        records, skipped = [], {}
        for image in progress(list(images), desc=f"{kind} sensitivity", enabled=self.show_progress):
            if limit is not None and len(records) >= limit:
                break
            try:
                records.append(self.measure_image(image, kind, edit))
            except SkipImage as exc:
                log.debug("%s: skipped (%s)", image, exc)
                skipped[str(image)] = str(exc)
        return SensitivityResult(kind=kind, edit=edit, records=records, skipped=skipped,
                                 config=self.config.to_dict(), run=str(self.run_folder.path),
                                 seconds=time.perf_counter() - start)


def interleaved_images(folder: str | os.PathLike, only: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """A toyworld folder's images with classes interleaved (1st of each class, 2nd of each, ...).

    With ``only``, just the images among those paths (e.g. ``Run.test_images()``). Interleaving
    keeps the classes balanced when an experiment stops after ``limit`` records.
    """
    from ..data.toyworld.dataset import list_images

    classes, items = list_images(folder)
    keep = None if only is None else {Path(p).resolve() for p in only}
    per_class: list[list[Path]] = [[] for _ in classes]
    for path, k in items:
        if keep is None or path.resolve() in keep:
            per_class[k].append(path)
    out = []
    for row in range(max((len(v) for v in per_class), default=0)):
        out += [v[row] for v in per_class if row < len(v)]
    return out

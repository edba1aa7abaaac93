"""The graph dataset: SCGs of a set of images with the teacher's logits, and its folder on disk.

:func:`save_graph_dataset` writes ``graphs.safetensors`` (graphs and teacher tensors) and
``graphs.json`` (class names, image ids, labels, paths, B/K/N/D, eps, builder settings, format
version) into the folder it is given; :func:`load_graph_dataset` reads them back.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError
from ..store import check_seal, content_hash, load_tensors, read_json, save_tensors, seal, write_json
from .scg import DUMMY_EPS, FORMAT_VERSION, SCGBatch, SCGShapeError, batch_from_tensors
from .teacher import Teacher

GRAPHS_TENSORS = "graphs.safetensors"
GRAPHS_META = "graphs.json"
REBUILD = "run `vrx graphs` again (and then `vrx train`)"


@dataclass
class GraphDataset:
    """SCGs of a set of images with the teacher's logits; ``labels`` are for reporting only."""

    graphs: SCGBatch
    teacher: Teacher
    image_ids: list[str]
    labels: list[int]
    image_paths: list[str] | None = None
    config: dict[str, Any] = field(default_factory=dict)  # how the graphs were built (builder settings)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise SCGShapeError when graphs, teacher, ids and labels disagree."""
        self.graphs.validate()
        self.teacher.validate(self.graphs)
        b = len(self.graphs)
        if len(self.image_ids) != b or len(self.labels) != b:
            raise SCGShapeError(f"{b} graphs but {len(self.image_ids)} image ids and "
                                f"{len(self.labels)} labels")
        if self.image_paths is not None and len(self.image_paths) != b:
            raise SCGShapeError(f"{b} graphs but {len(self.image_paths)} image paths")

    @property
    def class_names(self) -> list[str]:
        """The K classes of interest."""
        return self.graphs.class_names

    def __len__(self) -> int:
        return len(self.graphs)

    def subset(self, index: torch.Tensor | list[int]) -> GraphDataset:
        """The images at ``index`` (a list or LongTensor), in that order."""
        idx = torch.as_tensor(index, dtype=torch.long)
        ids = idx.tolist()
        return GraphDataset(self.graphs[idx], self.teacher[idx], [self.image_ids[i] for i in ids],
                            [self.labels[i] for i in ids],
                            None if self.image_paths is None else [self.image_paths[i] for i in ids],
                            dict(self.config))


def save_graph_dataset(folder: str | os.PathLike, ds: GraphDataset,
                       extra: dict[str, Any] | None = None) -> Path:
    """Write ``graphs.safetensors`` and ``graphs.json`` into ``folder`` (e.g. RUN/graphs); returns it.

    ``extra`` adds keys to ``graphs.json`` (the run adds ``made_from`` and ``image_paths_base``).
    """
    ds.validate()
    folder = Path(folder)
    tensors = ds.graphs.tensors()
    tensors["logits"] = ds.teacher.logits.float()
    tensors["masked_logits"] = ds.teacher.masked_logits.float()
    if ds.teacher.covered is not None:
        tensors["covered"] = ds.teacher.covered.to(torch.uint8)
    if ds.teacher.masked_x is not None:
        tensors["masked_x"] = ds.teacher.masked_x.float()
    meta = ds.graphs.meta()
    meta.update({"image_ids": [str(i) for i in ds.image_ids], "labels": [int(v) for v in ds.labels],
                 "image_paths": None if ds.image_paths is None else [str(p) for p in ds.image_paths],
                 "config": ds.config, **(extra or {})})
    # Tensors first, metadata last: a reader that finds the JSON finds matching tensors.
    save_tensors(folder / GRAPHS_TENSORS, tensors)
    write_json(folder / GRAPHS_META, seal(meta))
    return folder


def load_graph_dataset(folder: str | os.PathLike,
                       class_names: list[str] | None = None) -> GraphDataset:
    """Read a folder written by :func:`save_graph_dataset`; ArtifactError names a missing, corrupt or
    inconsistent file.

    With ``class_names`` given, the stored class list must equal it.
    """
    folder = Path(folder)
    meta_path, tensor_path = folder / GRAPHS_META, folder / GRAPHS_TENSORS
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: expected a JSON object")
    check_seal(meta, meta_path, REBUILD)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{meta_path}: format_version {meta.get('format_version')!r}, "
                            f"this vrx reads {FORMAT_VERSION}")
    tensors = load_tensors(tensor_path)
    graphs = batch_from_tensors(tensors, meta, tensor_path)
    if class_names is not None and list(class_names) != graphs.class_names:
        raise ArtifactError(f"{meta_path}: class list {graphs.class_names} does not match the "
                            f"expected {list(class_names)}")
    for key in ("logits", "masked_logits"):
        if key not in tensors:
            raise ArtifactError(f"{tensor_path}: tensor '{key}' missing")
    if not math.isclose(float(meta.get("eps", DUMMY_EPS)), DUMMY_EPS):
        raise ArtifactError(f"{meta_path}: dummy eps {meta.get('eps')} differs from this vrx's "
                            f"{DUMMY_EPS}")
    for key in ("image_ids", "labels"):
        if not isinstance(meta.get(key), list):
            raise ArtifactError(f"{meta_path}: '{key}' missing or not a list")
    try:
        covered = tensors["covered"].bool() if "covered" in tensors else None
        teacher = Teacher(tensors["logits"], tensors["masked_logits"], covered, tensors.get("masked_x"))
        return GraphDataset(graphs, teacher,
                            [str(i) for i in meta["image_ids"]], [int(v) for v in meta["labels"]],
                            meta.get("image_paths"), dict(meta.get("config") or {}))
    except SCGShapeError as exc:
        raise ArtifactError(f"{folder}: {exc}") from None


def graphs_fingerprint(folder: str | os.PathLike) -> str:
    """The content hash of the graph dataset saved in ``folder`` (both files, byte for byte)."""
    folder = Path(folder)
    parts = []
    for name in (GRAPHS_META, GRAPHS_TENSORS):
        try:
            parts.append((folder / name).read_bytes())
        except OSError as exc:
            raise ArtifactError(f"{folder / name}: cannot read ({exc.strerror or exc})") from None
    return content_hash(*parts)


def describe(ds: GraphDataset) -> str:
    """A one-line summary of a graph dataset (sizes and detection rate)."""
    b, _, n, d = ds.graphs.shape
    rate = float(ds.graphs.present.mean()) if b else 0.0
    return json.dumps({"images": b, "classes": ds.class_names, "N": n, "D": d,
                       "detected_fraction": round(rate, 3)})

"""ConceptBank: the discovered concepts of every class, saved as safetensors + ``bank.json``.

Each concept keeps its centre, TCAV statistics, and its members (image, resolution, bounding
box and exact segment mask), so anything about a concept can be recomputed from the bank alone.
Member masks are stored cropped to their box and bit-packed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, UnknownClassError
from ..store import content_hash, load_tensors, read_json, save_tensors, write_json
from .config import ConceptConfig

BANK_VERSION = 1
#: Statistics of how discovery ran (timings, cache hits), not of what it found: left out of the
#: bank's fingerprint, so a rerun that finds the same concepts has the same fingerprint.
_RUN_STATS = ("seconds", "cache")


@dataclass
class Member:
    """One example patch of a concept."""

    image: str                       # image path (or id) the patch comes from
    resolution: int                  # SLIC resolution index
    bbox: tuple[int, int, int, int]  # (y0, x0, y1, x1), end-exclusive
    mask: np.ndarray                 # bool, the segment inside bbox (shape y1-y0, x1-x0)
    image_shape: tuple[int, int]
    distance: float                  # L2 distance of its feature to the concept centre

    def full_mask(self) -> np.ndarray:
        """The segment mask at full image resolution."""
        out = np.zeros(self.image_shape, dtype=bool)
        y0, x0, y1, x1 = self.bbox
        out[y0:y1, x0:x1] = self.mask
        return out


@dataclass
class Concept:
    """A ranked visual concept of one class."""

    class_name: str
    rank: int                  # 1 = most important among the chosen (see ConceptConfig.tcav.rank_by)
    cluster: int               # k-means label it came from
    center: np.ndarray         # [C] mean channel feature
    tcav: float                # mean TCAV score over random sets
    tcav_std: float
    p_value: float             # corrected for multiple testing
    significant: bool
    cav_accuracy: float
    size: int                  # patches in the cluster
    importance: float = float("nan")  # mean class-logit drop when its patches are masked (NaN: not measured)
    members: list[Member] = field(default_factory=list)
    cluster_distances: np.ndarray | None = None  # sorted distances of all cluster patches to the centre
    thumbnails: np.ndarray | None = None   # [k, h, w, 3] uint8 best examples, nearest first
    # The concept's second centre, in one-forward ("map") feature space: the mean of its members'
    # segments pooled from their images' bottleneck maps, and the members' distances to it (sorted).
    # None until added (vrx.concepts.map_centres); they let a crop-mode bank be matched in one forward.
    map_center: np.ndarray | None = None
    map_distances: np.ndarray | None = None

    @property
    def name(self) -> str:
        """Stable display name, e.g. ``fire_engine/2``."""
        return f"{self.class_name}/{self.rank}"

    def radius(self, quantile: float) -> float:
        """The ``quantile`` of the cluster's distances to its centre: a calibrated detection threshold."""
        d = self.cluster_distances if self.cluster_distances is not None else self.member_distances
        return float(np.quantile(d, quantile))

    def map_radius(self, quantile: float) -> float:
        """The ``quantile`` of the members' distances to the map-space centre (needs :attr:`map_center`)."""
        if self.map_distances is None:
            raise ArtifactError(f"concept {self.name} has no map-space centre")
        return float(np.quantile(self.map_distances, quantile))

    @property
    def member_distances(self) -> np.ndarray:
        """Distances of the members to the centre, nearest first."""
        return np.array([m.distance for m in self.members], dtype=np.float32)


@dataclass
class ConceptBank:
    """Per class, its ranked concepts, plus what is needed to match them again."""

    concepts: dict[str, list[Concept]]
    model_id: str
    layer: str
    config: ConceptConfig   # the discovery settings (a dict, even a partial one, is read as one)
    stats: dict[str, Any] = field(default_factory=dict)   # per-class discovery statistics
    candidates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.config, ConceptConfig):
            self.config = ConceptConfig.from_dict(dict(self.config or {}))

    @property
    def class_names(self) -> list[str]:
        """The classes of interest, in discovery order."""
        return list(self.concepts)

    @property
    def n_concepts(self) -> int:
        """N, the most concepts any class has (graphs pad the rest with dummy nodes)."""
        return max((len(c) for c in self.concepts.values()), default=0)

    @property
    def feature_dim(self) -> int:
        """C, the size of a concept centre (the bottleneck's channel count)."""
        return next((len(c.center) for cs in self.concepts.values() for c in cs), 0)

    def __getitem__(self, class_name: str) -> list[Concept]:
        try:
            return self.concepts[class_name]
        except KeyError:
            raise UnknownClassError(f"class {class_name!r} is not in the concept bank "
                                    f"(it has {self.class_names})") from None

    def centers(self, class_name: str) -> np.ndarray:
        """[n, C] concept centres of a class, in rank order."""
        return np.stack([c.center for c in self[class_name]]) if self[class_name] else np.zeros((0, 0))

    @property
    def has_map_centres(self) -> bool:
        """Whether every concept has a map-space centre (see :mod:`vrx.concepts.map_centres`)."""
        every = [c for cs in self.concepts.values() for c in cs]
        return bool(every) and all(c.map_center is not None for c in every)

    def map_centers(self, class_name: str) -> np.ndarray:
        """[n, C] map-space concept centres of a class, in rank order (ArtifactError when missing)."""
        if not self.has_map_centres:
            raise ArtifactError("the concept bank has no map-space centres; add them with "
                                "`vrx map-centres --run RUN`")
        return np.stack([c.map_center for c in self[class_name]]) if self[class_name] else np.zeros((0, 0))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``bank.safetensors`` and ``bank.json`` into ``directory``."""
        directory = Path(directory)
        tensors: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"version": BANK_VERSION, "model_id": self.model_id, "layer": self.layer,
                                "config": self.config.to_dict(), "stats": self.stats,
                                "candidates": self.candidates, "classes": {}}
        for cls, concepts in self.concepts.items():
            entries = []
            for c in concepts:
                key = f"{cls}/{c.rank}"
                tensors[f"{key}/center"] = c.center.astype(np.float32)
                bits = [np.packbits(m.mask.ravel()) for m in c.members]
                tensors[f"{key}/masks"] = np.concatenate(bits) if bits else np.zeros(0, np.uint8)
                if c.cluster_distances is not None:
                    tensors[f"{key}/cluster_distances"] = c.cluster_distances.astype(np.float32)
                if c.thumbnails is not None:
                    tensors[f"{key}/thumbnails"] = c.thumbnails
                if c.map_center is not None:
                    tensors[f"{key}/map_center"] = c.map_center.astype(np.float32)
                    tensors[f"{key}/map_distances"] = np.asarray(c.map_distances, np.float32)
                entries.append({
                    "rank": c.rank, "cluster": c.cluster, "tcav": c.tcav, "tcav_std": c.tcav_std,
                    "p_value": c.p_value, "significant": c.significant, "cav_accuracy": c.cav_accuracy,
                    "size": c.size, "importance": None if np.isnan(c.importance) else c.importance, "n_members": len(c.members),
                    "members": [{"image": m.image, "resolution": m.resolution, "bbox": list(m.bbox),
                                 "image_shape": list(m.image_shape), "distance": m.distance,
                                 "n_bytes": int(b.size)} for m, b in zip(c.members, bits)]})
            meta["classes"][cls] = entries
        save_tensors(directory / "bank.safetensors", tensors)
        write_json(directory / "bank.json", meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ConceptBank:
        """Read a bank written by :meth:`save`; ArtifactError names what is missing or wrong."""
        directory = Path(directory)
        path = directory / "bank.json"
        meta = read_json(path)
        if not isinstance(meta, dict):
            raise ArtifactError(f"{path}: expected a JSON object")
        if meta.get("version") != BANK_VERSION:
            raise ArtifactError(f"{path}: bank version {meta.get('version')!r}, expected {BANK_VERSION}")
        for key, kind in (("model_id", str), ("layer", str), ("classes", dict), ("config", dict)):
            if not isinstance(meta.get(key), kind):
                raise ArtifactError(f"{path}: '{key}' missing or not a {kind.__name__}")
        tensors = {k: v.numpy() for k, v in load_tensors(directory / "bank.safetensors").items()}
        concepts: dict[str, list[Concept]] = {}
        try:
            for class_name, entries in meta["classes"].items():
                concepts[class_name] = [_concept_from(class_name, e, tensors) for e in entries]
        except KeyError as exc:
            raise ArtifactError(f"{directory}: bank.json and bank.safetensors disagree "
                                f"(missing {exc})") from None
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ArtifactError(f"{path}: malformed concept entry ({type(exc).__name__}: {exc})") from None
        try:  # an older bank.json may lack newer keys: they take their defaults
            config = ConceptConfig.from_dict(meta["config"], name="bank.json config")
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: bad discovery config ({exc})") from None
        stats, candidates = meta.get("stats", {}), meta.get("candidates", {})
        if not isinstance(stats, dict) or not isinstance(candidates, dict):
            raise ArtifactError(f"{path}: 'stats' and 'candidates' must be JSON objects")
        return cls(concepts=concepts, model_id=meta["model_id"], layer=meta["layer"],
                   config=config, stats=stats, candidates=candidates)


def bank_fingerprint(directory: str | Path) -> str:
    """The content hash of the bank saved in ``directory`` (its tensors and metadata, not its timings)."""
    import json

    directory = Path(directory)
    meta = read_json(directory / "bank.json")
    if isinstance(meta, dict) and isinstance(meta.get("stats"), dict):
        meta = {**meta, "stats": {k: v for k, v in meta["stats"].items() if k not in _RUN_STATS}}
    try:
        tensors = (directory / "bank.safetensors").read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{directory / 'bank.safetensors'}: cannot read ({exc.strerror or exc})") from None
    return content_hash(json.dumps(meta, sort_keys=True), tensors)


def _concept_from(class_name: str, e: dict[str, Any], tensors: dict[str, np.ndarray]) -> Concept:
    key = f"{class_name}/{e['rank']}"
    packed = tensors[f"{key}/masks"]
    members, offset = [], 0
    for m in e["members"]:
        y0, x0, y1, x1 = m["bbox"]
        n = m["n_bytes"]
        bits = np.unpackbits(packed[offset:offset + n], count=(y1 - y0) * (x1 - x0))
        offset += n
        members.append(Member(image=m["image"], resolution=m["resolution"], bbox=tuple(m["bbox"]),
                              mask=bits.astype(bool).reshape(y1 - y0, x1 - x0),
                              image_shape=tuple(m["image_shape"]), distance=float(m["distance"])))
    return Concept(class_name=class_name, rank=e["rank"], cluster=e["cluster"],
                   center=tensors[f"{key}/center"], tcav=e["tcav"], tcav_std=e["tcav_std"],
                   p_value=e["p_value"], significant=e["significant"], cav_accuracy=e["cav_accuracy"],
                   size=e["size"], members=members,
                   importance=float("nan") if e.get("importance") is None else float(e["importance"]), thumbnails=tensors.get(f"{key}/thumbnails"),
                   cluster_distances=tensors.get(f"{key}/cluster_distances"),
                   map_center=tensors.get(f"{key}/map_center"), map_distances=tensors.get(f"{key}/map_distances"))

"""Configuration of the Visual Concept Extractor (defaults follow the paper and ACE)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .segmentation import SegmentationConfig


@dataclass(frozen=True)
class GradCamConfig:
    """Grad-CAM foreground filter: keep the top ``keep_top`` of pixels, patches at least ``min_inside`` in."""

    enabled: bool = True
    keep_top: float = 0.5
    min_inside: float = 1.0


@dataclass(frozen=True)
class ClusterConfig:
    """k-means per class and ACE's cluster acceptance rules.

    ACE's absolute thresholds (min size 40 for 50 discovery images) are expressed here as
    fractions of the number of discovery images so they scale with the image count.
    """

    n_clusters: int = 25
    n_init: int = 10
    min_size_fraction: float = 0.8
    n_members: int = 50


@dataclass(frozen=True)
class TCAVConfig:
    """CAVs against random patch sets and the significance test that ranks concepts."""

    n_random_sets: int = 20
    random_set_size: int = 50
    alpha: float = 0.05
    correction: str = "holm"  # "holm" or "bonferroni"
    cav_alpha: float = 0.01
    n_concepts: int = 4
    # Which activations CAVs are trained on: "patch" (ACE: those of the features that were
    # clustered) or "context" (the image's own bottleneck map over the patch's segment, i.e. the
    # concept where and as the network saw it). The class gradients are always of whole images.
    activations: str = "patch"


@dataclass(frozen=True)
class ConceptConfig:
    """Everything that decides what ConceptExtractor.fit discovers."""

    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    gradcam: GradCamConfig = field(default_factory=GradCamConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tcav: TCAVConfig = field(default_factory=TCAVConfig)
    seed: int = 0
    batch_size: int = 64

    @classmethod
    def toyworld(cls, seed: int = 0) -> ConceptConfig:
        """Settings scaled to toyworld's 128 px scenes, where the vehicle covers about a fifth of the frame.

        ACE's defaults assume an object that fills an ImageNet photo. Here the same number of
        segments *per object* needs about three times as many per image (50, 80, 150), and SLIC's
        connectivity step must keep segments down to a tenth of the mean size (skimage's default
        half merges a stripe a few pixels tall into the body around it), with less smoothing
        (sigma 0.5). The Grad-CAM foreground is the top 30% of pixels rather than half (half the
        frame is mostly background); a patch must lie wholly inside it, the paper's rule. With
        fewer patches per class, 20 clusters and a minimum cluster size of 0.4 x the images keep
        ACE's acceptance rules meaningful, and each concept is its 20 members nearest the centre
        (the smallest acceptable cluster's size), so every concept is its cluster's core. Patches
        are clustered on ACE's crop features (the purest clusters), but CAVs are trained on their
        context activations: a crop of an 8 px part blown up to 128 px is far from what the CNN
        saw, and its TCAV test is rarely significant. Measured in docs/concepts.md.
        """
        return cls(segmentation=SegmentationConfig(n_segments=(50, 80, 150), sigma=0.5, min_size_factor=0.1),
                   gradcam=GradCamConfig(keep_top=0.3, min_inside=1.0),
                   cluster=ClusterConfig(n_clusters=20, min_size_fraction=0.4, n_members=20),
                   tcav=TCAVConfig(activations="context"), seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the configuration."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConceptConfig:
        """Build a configuration from (possibly partial) nested dicts; unknown keys are errors."""
        parts = {"segmentation": SegmentationConfig, "gradcam": GradCamConfig,
                 "cluster": ClusterConfig, "tcav": TCAVConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts:
                kwargs[key] = _build(parts[key], value, key)
            elif key in ("seed", "batch_size"):
                kwargs[key] = int(value)
            else:
                raise ConfigError(f"unknown concept configuration key {key!r}")
        config = cls(**kwargs)
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path) -> ConceptConfig:
        """Read a JSON configuration file."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read configuration ({exc})") from None

    def validate(self) -> None:
        """Raise ConfigError for out-of-range values."""
        g, c, t = self.gradcam, self.cluster, self.tcav
        checks = [
            (0 < g.keep_top <= 1, "gradcam.keep_top must be in (0, 1]"),
            (0 <= g.min_inside <= 1, "gradcam.min_inside must be in [0, 1]"),
            (c.n_clusters >= 1, "cluster.n_clusters must be >= 1"),
            (c.n_members >= 2, "cluster.n_members must be >= 2"),
            (t.n_random_sets >= 2, "tcav.n_random_sets must be >= 2"),
            (t.random_set_size >= 2, "tcav.random_set_size must be >= 2"),
            (0 < t.alpha < 1, "tcav.alpha must be in (0, 1)"),
            (t.correction in ("holm", "bonferroni"), "tcav.correction must be 'holm' or 'bonferroni'"),
            (t.n_concepts >= 1, "tcav.n_concepts must be >= 1"),
            (t.activations in ("patch", "context"), "tcav.activations must be 'patch' or 'context'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def _build(kind: type, value: Any, name: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"unknown {name} keys: {sorted(unknown)}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return kind(**fixed)

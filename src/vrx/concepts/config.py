"""Configuration of the Visual Concept Extractor (defaults follow the paper and ACE).

Frozen settings dataclasses (:class:`vrx.config.Config`): each checks its own values when it is
made, and all share one dict form (``to_dict`` / ``from_dict`` / ``load``). ``from_dict`` takes
partial dicts, so an old ``bank.json`` without newer keys reads back with their defaults.
Importing this module imports no heavy library (the CLI reads configuration files with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral

from ..config import Config, check
from ..errors import ConfigError


@dataclass(frozen=True)
class SegmentationConfig(Config):
    """SLIC resolutions and parameters, and the rules that prune the resulting segments."""

    n_segments: tuple[int, ...] = (15, 50, 80)
    compactness: float = 20.0
    sigma: float = 1.0
    min_area: float = 0.001        # drop segments under this fraction of the image (ACE kept > 0.001)
    max_jaccard: float = 0.5       # drop a segment whose Jaccard with an already-kept one exceeds this
    start_label: int = 1           # passed to slic explicitly; has no effect on the segments returned
    max_num_iter: int = 10         # skimage's default k-means iterations, written down for the cache key
    enforce_connectivity: bool = True
    # slic's connectivity step merges segments under this fraction of the mean segment area into a
    # neighbour (slic's default 0.5). A thin part (a stripe a third of a segment tall) is such a
    # segment: a smaller factor keeps it on its own. See docs/concepts.md.
    min_size_factor: float = 0.5
    # How a patch becomes a feature: "crop" (ACE) crops its box, fills the rest and resizes it to
    # the model input; "map" pools the whole image's bottleneck map over the segment (one forward
    # per image, and the patch keeps its context and scale). See docs/concepts.md.
    features: str = "crop"

    def __post_init__(self) -> None:
        # JSON gives lists; a tuple keeps the frozen config hashable.
        object.__setattr__(self, "n_segments", tuple(self.n_segments))
        super().__post_init__()
        # Plain ints, so dataclasses.asdict(config) stays JSON-able for cache keys.
        object.__setattr__(self, "n_segments", tuple(int(n) for n in self.n_segments))

    def validate(self) -> None:
        """Raise ConfigError for out-of-range values."""
        check((bool(self.n_segments), "segmentation.n_segments must list at least one resolution"))
        for n in self.n_segments:
            check((not isinstance(n, bool) and isinstance(n, Integral) and n >= 1,
                   f"segmentation.n_segments must hold positive integers, got {n!r}"))
        check((self.compactness > 0, "segmentation.compactness must be > 0"),
              (self.sigma >= 0, "segmentation.sigma must be >= 0"),
              (0 <= self.min_area < 1, "segmentation.min_area must be in [0, 1)"),
              (0 <= self.max_jaccard <= 1, "segmentation.max_jaccard must be in [0, 1]"),
              (self.start_label in (0, 1), "segmentation.start_label must be 0 or 1"),
              (self.max_num_iter >= 1, "segmentation.max_num_iter must be >= 1"),
              (0 <= self.min_size_factor <= 1, "segmentation.min_size_factor must be in [0, 1]"),
              (self.features in ("crop", "map"), "segmentation.features must be 'crop' or 'map'"))


@dataclass(frozen=True)
class GradCamConfig(Config):
    """Grad-CAM foreground filter: keep the top ``keep_top`` of pixels, patches at least ``min_inside`` in."""

    enabled: bool = True
    keep_top: float = 0.5
    min_inside: float = 1.0

    def validate(self) -> None:
        """Raise ConfigError for out-of-range values."""
        check((0 < self.keep_top <= 1, "gradcam.keep_top must be in (0, 1]"),
              (0 <= self.min_inside <= 1, "gradcam.min_inside must be in [0, 1]"))


@dataclass(frozen=True)
class ClusterConfig(Config):
    """k-means per class and ACE's cluster acceptance rules.

    ACE's absolute thresholds (min size 40 for 50 discovery images) are expressed here as
    fractions of the number of discovery images so they scale with the image count.
    """

    n_clusters: int = 25
    n_init: int = 10
    min_size_fraction: float = 0.8
    n_members: int = 50

    def validate(self) -> None:
        """Raise ConfigError for out-of-range values."""
        check((self.n_clusters >= 1, "cluster.n_clusters must be >= 1"),
              (self.n_members >= 2, "cluster.n_members must be >= 2"))


@dataclass(frozen=True)
class TCAVConfig(Config):
    """CAVs against random patch sets, the significance test, and how significant clusters are ranked.

    ``rank_by="importance"`` orders them by their masking effect (the class-logit drop when the
    concept's patches are removed, :mod:`vrx.concepts.importance`), ``"tcav"`` by TCAV score (ACE;
    it saturates at 1.0 on many networks). A cluster whose footprint overlaps an already chosen one by
    more than ``max_overlap`` is skipped as its duplicate (:mod:`vrx.concepts.selection`; 1 keeps all).
    """

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
    rank_by: str = "importance"
    max_overlap: float = 0.5

    def validate(self) -> None:
        """Raise ConfigError for out-of-range values."""
        check((self.n_random_sets >= 2, "tcav.n_random_sets must be >= 2"),
              (self.random_set_size >= 2, "tcav.random_set_size must be >= 2"),
              (0 < self.alpha < 1, "tcav.alpha must be in (0, 1)"),
              (self.correction in ("holm", "bonferroni"), "tcav.correction must be 'holm' or 'bonferroni'"),
              (self.n_concepts >= 1, "tcav.n_concepts must be >= 1"),
              (self.activations in ("patch", "context"), "tcav.activations must be 'patch' or 'context'"),
              (self.rank_by in ("importance", "tcav"), "tcav.rank_by must be 'importance' or 'tcav'"),
              (0 <= self.max_overlap <= 1, "tcav.max_overlap must be in [0, 1]"))


@dataclass(frozen=True)
class ConceptConfig(Config):
    """Everything that decides what ConceptExtractor.fit discovers."""

    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    gradcam: GradCamConfig = field(default_factory=GradCamConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tcav: TCAVConfig = field(default_factory=TCAVConfig)
    seed: int = 0
    batch_size: int | None = None   # images per forward; None: sized by the model's memory budget

    def __post_init__(self) -> None:
        for key in ("seed", "batch_size"):  # plain ints (JSON and old callers may give "3" or 3.0)
            value = getattr(self, key)
            if value is None and key == "batch_size":
                continue
            try:
                object.__setattr__(self, key, int(value))
            except (TypeError, ValueError):
                raise ConfigError(f"{key} must be an integer, got {value!r}") from None
        super().__post_init__()

    def validate(self) -> None:
        """Raise ConfigError for parts of the wrong type (each part checks its own values)."""
        parts = {"segmentation": SegmentationConfig, "gradcam": GradCamConfig, "cluster": ClusterConfig,
                 "tcav": TCAVConfig}
        for key, kind in parts.items():
            check((isinstance(getattr(self, key), kind), f"{key} must be a {kind.__name__}"))
        check((self.batch_size is None or self.batch_size >= 1,
               f"batch_size must be a positive integer or None (memory-sized), got {self.batch_size!r}"))

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

"""Records of the sensitivity experiments: settings, one record per edited image, one result per run.

:class:`SensitivityConfig` says how concepts are chosen and parts edited; a
:class:`SensitivityRecord` is one edited image (concept, part, the measure before and after);
a :class:`SensitivityResult` holds the records of one experiment (kind + edit), the images skipped,
the rates, and its JSON form (``to_dict`` / ``from_dict``). The experiment itself is
:class:`vrx.experiments.sensitivity.SensitivityExperiment`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..config import Config, check
from ..errors import ArtifactError
from ..store import check_format_version

KINDS: tuple[str, ...] = ("structural", "visual")
EDITS: dict[str, tuple[str, ...]] = {"structural": ("move", "noise"), "visual": ("swap", "distort", "noise")}
DEFAULT_EDIT: dict[str, str] = {"structural": "move", "visual": "swap"}
PICKS: tuple[str, ...] = ("contribution", "rank")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SensitivityConfig(Config):
    """How concepts are chosen and parts edited."""

    min_share: float = 0.5        # share of the matched patch's pixels on one vehicle part type
    pick: str = "contribution"    # "contribution": largest measure before the edit; "rank": best rank
    positive_only: bool = True    # only concepts whose measure is > tol before the edit (the paper's)
    all_instances: bool = True    # edit every vehicle part of that type (else only the most covered one)
    gap: int = 2                  # pixels between a moved part's footprint and the body
    min_inside: float = 0.9       # share of a moved part's footprint that must stay inside the image
    seed: int = 0                 # seeds the replacement type and colours (with the image's name)
    tol: float = 1e-6             # a fall must exceed this: smaller changes are float rounding

    def validate(self) -> None:
        check((0.0 < self.min_share <= 1.0, f"min_share must be in (0, 1], got {self.min_share}"),
              (self.pick in PICKS, f"pick must be one of {', '.join(PICKS)}, got {self.pick!r}"),
              (0.0 < self.min_inside <= 1.0, f"min_inside must be in (0, 1], got {self.min_inside}"),
              (self.tol >= 0.0, f"tol must be >= 0, got {self.tol}"),
              (int(self.gap) >= 0, f"gap must be >= 0 pixels, got {self.gap}"))


@dataclass
class SensitivityRecord:
    """One edited image: which concept and part, the measure before and after, and whether it fell."""

    image: str
    true_class: str
    kind: str                        # "structural" or "visual"
    edit: str                        # "move", "swap", "distort" or "noise"
    concept: int                     # 1-based rank of concept k in class c's graph
    part_type: str                   # the part type its patch lies on (and that was edited)
    share: float                     # share of the patch's pixels on that part type
    edited_parts: list[int]          # indices of the edited parts in the original scene
    detail: dict[str, Any]           # edit parameters (dy, replacement type, noise seed, ...)
    before: float                    # the measure (edge sum or node contribution) before the edit
    after: float
    held: bool                       # after < before - tol
    detected_after: bool             # concept k still detected after the edit
    share_after: float | None        # share of its new patch on the edited parts' new footprint
    changed_pixels: int              # pixels whose part label changed
    score_before: float              # the GRN's output for c
    score_after: float
    logit_before: float              # the classifier's logit for c
    logit_after: float


@dataclass
class SensitivityResult:
    """The records of one experiment (kind + edit) over a set of images, and the images skipped."""

    kind: str
    edit: str
    records: list[SensitivityRecord]
    skipped: dict[str, str]          # image -> why it was not used
    config: dict[str, Any]
    run: str
    seconds: float = 0.0

    @property
    def n(self) -> int:
        """Images edited and measured."""
        return len(self.records)

    @property
    def n_held(self) -> int:
        """Images where the measure fell."""
        return sum(r.held for r in self.records)

    @property
    def rate(self) -> float | None:
        """Share of images where the measure fell (None without records)."""
        return self.n_held / self.n if self.n else None

    @property
    def n_vanished(self) -> int:
        """Images where concept k was no longer detected after the edit."""
        return sum(not r.detected_after for r in self.records)

    @property
    def rate_detected(self) -> float | None:
        """The rate over images where concept k was still detected after the edit."""
        kept = [r for r in self.records if r.detected_after]
        return sum(r.held for r in kept) / len(kept) if kept else None

    def by_class(self) -> dict[str, dict[str, int]]:
        """Per true class: records and how many held."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            row = out.setdefault(r.true_class, {"n": 0, "n_held": 0, "n_vanished": 0})
            row["n"] += 1
            row["n_held"] += int(r.held)
            row["n_vanished"] += int(not r.detected_after)
        return out

    def by_part(self) -> dict[str, dict[str, int]]:
        """Per edited part type: records and how many held."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            row = out.setdefault(r.part_type, {"n": 0, "n_held": 0})
            row["n"] += 1
            row["n_held"] += int(r.held)
        return out

    def summary(self) -> str:
        """One line: the rate, counts and the rate without vanished concepts."""
        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"
        return (f"{self.kind} ({self.edit}): fell in {self.n_held}/{self.n} = {fmt(self.rate)}; "
                f"concept lost after the edit in {self.n_vanished}, rate without those "
                f"{fmt(self.rate_detected)}; skipped {len(self.skipped)} image(s)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts, rates, config and every record."""
        return {"format_version": FORMAT_VERSION, "kind": self.kind, "edit": self.edit, "run": self.run,
                "n": self.n, "n_held": self.n_held, "rate": self.rate, "n_vanished": self.n_vanished,
                "rate_detected": self.rate_detected, "n_skipped": len(self.skipped),
                "by_class": self.by_class(), "by_part": self.by_part(),
                "seconds": self.seconds, "config": dict(self.config),
                "records": [asdict(r) for r in self.records], "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensitivityResult:
        """Inverse of :meth:`to_dict`; ArtifactError on a malformed dict."""
        try:
            check_format_version(d, "format_version", FORMAT_VERSION, "sensitivity result")
            return cls(kind=d["kind"], edit=d["edit"], run=d["run"], seconds=float(d["seconds"]),
                       config=dict(d["config"]), skipped=dict(d["skipped"]),
                       records=[SensitivityRecord(**r) for r in d["records"]])
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"not a sensitivity result: {type(exc).__name__}: {exc}") from None

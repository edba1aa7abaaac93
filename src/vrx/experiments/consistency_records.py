"""Records of the consistency experiment: settings, one record per error, the result and its tables.

The paper's Table 1 counts, per error type, the images still misclassified after each edit; here
the same table, plus the rates the targets are stated in (errors corrected by each edit, culprit on
the planted cause, VRX's type equal to the planted type).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import Config, check
from ..errors import ArtifactError
from ..store import check_format_version
from .error_typing import ERROR_TYPES

FORMAT_VERSION = 1
#: The edits, in the table's row order: two controls, the pixel method, VRX's own.
EDITS: tuple[str, ...] = ("random", "good_concept", "gradcam", "vrx")
EDIT_LABELS: dict[str, str] = {"random": "random patch (control)", "good_concept": "good concept (control)",
                               "gradcam": "Grad-CAM region", "vrx": "VRX-guided"}


@dataclass(frozen=True)
class ConsistencyConfig(Config):
    """How errors are produced, typed and edited."""

    n_per_class: int = 200        # shifted images rendered per class (when the command renders them)
    seed: int = 0                 # seeds the shifted split and the random controls
    low: float = 1 / 3            # structure share at or below which an error is "concept"
    high: float = 2 / 3           # at or above which it is "structure"
    overlap: float = 0.5          # culprit on the planted cause: this share of its patch in the planted region
    gradcam: bool = True          # also the Grad-CAM row
    patch: str = "box"            # what is pasted from a concept's example: its "box" or its "segment"
    max_steps: int = 5            # VRX-guided edits per error: re-explain and edit while still wrong

    def validate(self) -> None:
        check((int(self.n_per_class) >= 1, f"n_per_class must be >= 1, got {self.n_per_class}"),
              (0.0 <= self.low <= self.high <= 1.0, f"need 0 <= low <= high <= 1, got {self.low}, {self.high}"),
              (self.patch in ("box", "segment"), f"patch must be 'box' or 'segment', got {self.patch!r}"),
              (int(self.max_steps) >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
              (0.0 < self.overlap <= 1.0, f"overlap must be in (0, 1], got {self.overlap}"))


@dataclass
class EditOutcome:
    """One edit of one error: what was done, how many pixels, and the classifier's new prediction."""

    action: str                   # "replace", "fill", "move", "transplant" or "none" (no edit possible)
    predicted: str
    corrected: bool
    region_pixels: int
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConsistencyRecord:
    """One misclassified image: planted cause, VRX's account, and every edit's outcome."""

    image: str
    true_class: str
    predicted: str                # the classifier's class (the error)
    grn_predicted: str
    planted: dict[str, Any]       # kind, type, part, detail (the region's parts are left out)
    account: dict[str, Any]       # ErrorAccount.to_dict()
    culprit_overlap: float | None  # share of the culprit's patch inside the planted region
    culprit_on_cause: bool
    type_agrees: bool
    sentences: dict[str, str]     # why the predicted class, why not the true one
    edits: dict[str, EditOutcome]

    @property
    def vrx_type(self) -> str:
        return str(self.account["type"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["edits"] = {k: asdict(v) for k, v in self.edits.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConsistencyRecord:
        d = dict(d)
        d["edits"] = {k: EditOutcome(**v) for k, v in d["edits"].items()}
        return cls(**d)


@dataclass
class ConsistencyResult:
    """All errors of a shifted split with VRX's account and the edits' outcomes."""

    records: list[ConsistencyRecord]
    n_images: int
    accuracy: float               # the classifier's accuracy on the shifted split
    test_accuracy: float | None   # on its own test set (toy CNN metrics), when known
    config: dict[str, Any]
    run: str
    images: str
    seconds: float
    version: int = FORMAT_VERSION

    @property
    def n_errors(self) -> int:
        return len(self.records)

    def edits_run(self) -> list[str]:
        return [e for e in EDITS if any(e in r.edits for r in self.records)]

    def rate(self, edit: str) -> float:
        """Share of the errors the edit corrected."""
        rs = [r for r in self.records if edit in r.edits]
        return sum(r.edits[edit].corrected for r in rs) / len(rs) if rs else float("nan")

    @property
    def culprit_rate(self) -> float:
        return sum(r.culprit_on_cause for r in self.records) / self.n_errors if self.records else float("nan")

    @property
    def type_rate(self) -> float:
        return sum(r.type_agrees for r in self.records) / self.n_errors if self.records else float("nan")

    def counts(self) -> dict[str, dict[str, int]]:
        """Row -> error type -> images still wrong: the paper's Table 1 (``before`` = all errors)."""
        def row(keep) -> dict[str, int]:
            out = {"total": sum(1 for r in self.records if keep(r))}
            out |= {t: sum(1 for r in self.records if r.vrx_type == t and keep(r)) for t in ERROR_TYPES}
            return out
        table = {"before": row(lambda r: True)}
        for e in self.edits_run():
            table[e] = row(lambda r, e=e: e in r.edits and not r.edits[e].corrected)
        return table

    def planted_vs_vrx(self) -> dict[str, dict[str, int]]:
        """Planted type -> VRX's type -> errors."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            row = out.setdefault(r.planted["type"], {t: 0 for t in ERROR_TYPES})
            row[r.vrx_type] += 1
        return out

    def markdown(self) -> str:
        """The paper-form table, the rates and the planted-vs-VRX type table, as markdown."""
        counts = self.counts()
        lines = [f"{self.n_errors} errors of {self.n_images} shifted images (classifier accuracy on them "
                 f"{self.accuracy:.3f}" + ("" if self.test_accuracy is None else
                                           f", on its own test set {self.test_accuracy:.3f}") + ")", "",
                 "| images still wrong | total | concept | structure | both |", "|---|---|---|---|---|"]
        for name, row in counts.items():
            label = "before the edit" if name == "before" else EDIT_LABELS[name]
            lines.append(f"| {label} | {row['total']} | {row['concept']} | {row['structure']} | {row['both']} |")
        lines += ["", "| edit | corrected | rate |", "|---|---|---|"]
        for e in self.edits_run():
            n = sum(1 for r in self.records if e in r.edits and r.edits[e].corrected)
            lines.append(f"| {EDIT_LABELS[e]} | {n}/{self.n_errors} | {self.rate(e):.3f} |")
        lines += ["", f"culprit on the planted cause: {sum(r.culprit_on_cause for r in self.records)}/"
                      f"{self.n_errors} ({self.culprit_rate:.3f}); VRX's type = planted type: "
                      f"{sum(r.type_agrees for r in self.records)}/{self.n_errors} ({self.type_rate:.3f})", "",
                  "| planted type | VRX: concept | structure | both |", "|---|---|---|---|"]
        for planted, row in sorted(self.planted_vs_vrx().items()):
            lines.append(f"| {planted} | {row['concept']} | {row['structure']} | {row['both']} |")
        return "\n".join(lines) + "\n"

    def summary(self) -> dict[str, Any]:
        return {"n_images": self.n_images, "n_errors": self.n_errors, "accuracy": self.accuracy,
                "test_accuracy": self.test_accuracy,
                "corrected": {e: self.rate(e) for e in self.edits_run()},
                "culprit_on_cause": self.culprit_rate, "type_agrees": self.type_rate,
                "table": self.counts(), "planted_vs_vrx": self.planted_vs_vrx()}

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "run": self.run, "images": self.images, "n_images": self.n_images,
                "accuracy": self.accuracy, "test_accuracy": self.test_accuracy, "config": self.config,
                "seconds": self.seconds, "summary": self.summary(),
                "records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConsistencyResult:
        try:
            check_format_version(d, "version", FORMAT_VERSION, "consistency result")
            return cls(records=[ConsistencyRecord.from_dict(r) for r in d["records"]], n_images=int(d["n_images"]),
                       accuracy=float(d["accuracy"]), test_accuracy=d.get("test_accuracy"),
                       config=dict(d["config"]), run=str(d["run"]), images=str(d["images"]),
                       seconds=float(d["seconds"]), version=int(d["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"not a vrx consistency result: {type(exc).__name__} {exc}") from None

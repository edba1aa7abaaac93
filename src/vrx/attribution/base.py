"""The one shape every attribution method has: ``Method(adapter, **config).attribute(images, target)``.

Images are [0, 1] NCHW tensors (or anything :func:`vrx.models.inputs.to_tensor` takes) at any
size; the map comes back as a float32 tensor ``[B, H, W]`` at the input's own resolution, on the
CPU. ``target`` is a class id or name, one per image, or ``None`` for the class the model predicts.
Methods are registered by name so the command line and :mod:`vrx.metrics` can list and build them.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..models.adapter import ClassifierAdapter, Target
from ..models.inputs import Images, image_batch, validate_images

__all__ = ["Attribution", "METHODS", "register", "get", "method_names"]

METHODS: dict[str, type[Attribution]] = {}


def register(cls: type[Attribution]) -> type[Attribution]:
    """Class decorator: make ``cls`` available as ``get(cls.name)``."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ConfigError(f"attribution method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    """Names of every registered method, in registration order."""
    _load_all()
    return list(METHODS)


def get(name: str) -> type[Attribution]:
    """The method class registered as ``name``; ConfigError with close matches otherwise."""
    _load_all()
    key = name.strip().lower().replace("-", "_")
    if key not in METHODS:
        close = difflib.get_close_matches(key, list(METHODS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        extra = "; VRX itself ('vrx') needs a run and registers when vrx.compare is imported" \
            if key == "vrx" else ""
        raise ConfigError(f"unknown attribution method {name!r}{hint} (known: {', '.join(METHODS)}){extra}")
    return METHODS[key]


def _load_all() -> None:
    # Importing the package registers every method module it lists.
    import vrx.attribution  # noqa: F401


class Attribution:
    """Base of every method: input checks, targets, batching and the output contract.

    Subclasses set ``name`` (registry key) and ``signed`` (whether the map has meaningful negative
    values), take their settings as keyword arguments in ``__init__`` (validated there), and
    implement :meth:`_attribute` on a checked batch with one target id per image.
    """

    name: ClassVar[str] = ""
    signed: ClassVar[bool] = False

    def __init__(self, adapter: ClassifierAdapter, *, seed: int = 0, batch_size: int | None = None):
        if not isinstance(adapter, ClassifierAdapter):
            raise ConfigError(f"{type(self).__name__} needs a vrx ClassifierAdapter, got {type(adapter).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.adapter = adapter
        self.seed = int(seed)
        self.batch_size = int(batch_size or adapter.batch_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(adapter={self.adapter.name!r})"

    def config(self) -> dict[str, Any]:
        """The settings that define this method's maps (for compare.json)."""
        return {"seed": self.seed}

    def attribute(self, images: Images, target: Target | None = None, **kwargs: Any) -> torch.Tensor:
        """Attribution maps ``[B, H, W]`` (float32, CPU) of ``images`` for ``target``."""
        x = self.check_images(images)
        targets = self.targets(x, target)
        out = self._attribute(x, targets, **kwargs)
        expected = (x.shape[0], x.shape[2], x.shape[3])
        if tuple(out.shape) != expected:  # a bug in the method, not bad input
            raise RuntimeError(f"{self.name} returned maps of shape {tuple(out.shape)}, expected {expected}")
        return out.detach().float().cpu()

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    # ---- shared helpers ---------------------------------------------------------------------

    @staticmethod
    def check_images(images: Images) -> torch.Tensor:
        """A float32 NCHW batch in [0, 1]; InvalidImageError names what is wrong."""
        x = image_batch(images)
        validate_images(x, channels=3)
        return x.float()

    def targets(self, images: torch.Tensor, target: Target | None) -> torch.Tensor:
        """One class id per image: given ones checked against the model, else the predicted class."""
        if target is None:
            return self.adapter.logits(images, self.batch_size).argmax(1)
        return torch.tensor(self.adapter.classes.targets(target, images.shape[0]), dtype=torch.long)

    def generator(self) -> torch.Generator:
        """A CPU generator seeded from ``seed``: methods draw all randomness from it."""
        return torch.Generator().manual_seed(self.seed)

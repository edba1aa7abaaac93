"""ClassifierAdapter: the one object through which vrx talks to an image classifier.

It wraps any ``torch.nn.Module`` and owns what the rest of vrx must not know about the model:
input size and normalisation, class names, and how to read a named layer. Images come in as
NCHW float32 tensors in [0, 1] of any size (or NumPy HWC arrays through :func:`to_tensor`).
Results (logits, activations, gradients) come back on the CPU; the model runs on ``device``.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InvalidImageError, ModelSpecError, UnknownClassError
from ..progress import progress

# Images a little outside [0, 1] come from resampling; anything further out is a scaling mistake.
RANGE_TOLERANCE = 1e-3

Images = Union[torch.Tensor, np.ndarray, Sequence[Any]]
Target = Union[int, str, Sequence[Union[int, str]], torch.Tensor]


class LayerGradients(NamedTuple):
    """Activations at a layer, gradients of the target logits w.r.t. them, and the logits."""

    activations: torch.Tensor
    gradients: torch.Tensor
    logits: torch.Tensor


class Prediction(NamedTuple):
    """One ranked class of a prediction."""

    class_id: int
    class_name: str
    probability: float


class _StopForward(BaseException):
    """Raised by a forward hook to end the forward pass once the wanted layer has run.

    A BaseException, so a model whose forward has ``except Exception`` cannot swallow it.
    """


def normalize_class_name(name: str) -> str:
    """Case-, space-, underscore- and hyphen-insensitive key of a class name."""
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


# ---------------------------------------------------------------------------------------------
# Turning user input into an NCHW float tensor in [0, 1]


def to_tensor(images: Images, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Images (tensor NCHW/CHW, NumPy HWC/NHWC, PIL image, or a list of these) as NCHW float32.

    uint8 values are divided by 255 and uint16 by 65535; grey images get three channels.
    ``size`` resizes every image to (height, width), which lets a list mix image sizes.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidImageError("no images given (empty list)")
        parts = [to_tensor(im, size=size) for im in images]
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise InvalidImageError(f"images differ in shape {sorted(shapes)}; pass size=(H, W) "
                                    "or give them to the adapter, which resizes them")
        return torch.cat(parts)
    if isinstance(images, torch.Tensor):
        x = _tensor_as_float(images)
    elif isinstance(images, np.ndarray):
        x = _array_as_nchw(images)
    elif _is_pil(images):
        x = _array_as_nchw(np.asarray(images.convert("RGB")))
    else:
        raise InvalidImageError(f"cannot use a {type(images).__name__} as images; expected a "
                                "tensor N×3×H×W in [0, 1], a NumPy H×W×3 array or a list of them")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if size is not None and x.ndim == 4 and tuple(x.shape[-2:]) != tuple(size):
        x = resize(x, size)
    return x


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of an NCHW batch to (height, width), no crop."""
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=True)


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(obj, Image.Image)


def _tensor_as_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise InvalidImageError(f"image tensor has dtype {x.dtype}; expected float in [0, 1] or uint8")
    if x.ndim == 3:  # one CHW image
        x = x.unsqueeze(0)
    return x.float()


def _array_as_nchw(a: np.ndarray) -> torch.Tensor:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise InvalidImageError(f"image array has shape {a.shape}; expected H×W×3 or N×H×W×3")
    channels = a.shape[-1]
    if channels == 4:
        raise InvalidImageError(f"image array has shape {a.shape} with an alpha channel; load the "
                                "file with vrx.data.load_image, which composites it")
    if channels not in (1, 3):
        raise InvalidImageError(f"image array has shape {a.shape}; expected channels last (H×W×3)")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif a.dtype == np.bool_ or np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    else:
        raise InvalidImageError(f"image array has dtype {a.dtype}; expected uint8, uint16 or float")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def validate_images(x: torch.Tensor, channels: int = 3) -> None:
    """Raise InvalidImageError unless ``x`` is a non-empty N×C×H×W float batch in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise InvalidImageError(f"images must be a tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise InvalidImageError(f"images must be a batch N×{channels}×H×W; got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise InvalidImageError(f"images must have {channels} channels (N×{channels}×H×W); "
                                f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise InvalidImageError(f"images batch is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InvalidImageError(f"images must be float in [0, 1]; got dtype {x.dtype}")
    lo, hi = (float(v) for v in torch.aminmax(x))  # one pass; NaN and inf show up in lo or hi
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidImageError("images contain NaN or infinite values")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        hint = " (they look like 0–255 values: divide by 255)" if hi > 2 else ""
        raise InvalidImageError(f"images must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]{hint}")


# ---------------------------------------------------------------------------------------------
# The model with its preprocessing, as one module (what Captum methods receive)


class PreprocessedModel(nn.Module):
    """Resize + normalise + the wrapped model: takes [0, 1] images, returns logits."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_size: tuple[int, int]):
        super().__init__()
        self.model = model
        self.input_size = tuple(input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """The model input for [0, 1] images: resized to input_size, then (x - mean) / std."""
        if tuple(images.shape[-2:]) != self.input_size:
            images = resize(images, self.input_size)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of [0, 1] images (no range check here: attribution methods add noise)."""
        return self.model(self.normalise(images))


@dataclass
class _Capture:
    output: torch.Tensor | None = None
    calls: int = 0


@contextmanager
def _hooked(module: nn.Module, layer: str, *, stop: bool, for_grad: bool) -> Iterator[_Capture]:
    """Capture ``module``'s output; optionally stop the forward there, or make it a grad leaf."""
    cap = _Capture()

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> Any:
        cap.calls += 1
        if cap.calls > 1:
            raise ModelSpecError(f"layer {layer!r} runs more than once in one forward pass (a reused "
                                 "module such as a shared activation), so its output is ambiguous; "
                                 "pick another layer")
        if not isinstance(out, torch.Tensor):
            raise ModelSpecError(f"layer {layer!r} returns a {type(out).__name__}, not a tensor; "
                                 "pick a layer whose output is a single tensor")
        if for_grad:
            # Cut the graph here: gradients are wanted w.r.t. this output only, which also works
            # for frozen weights. Grad is switched on from here on (the part before ran without).
            out = out.detach().requires_grad_(True)
            torch.set_grad_enabled(True)
        cap.output = out
        if stop:
            raise _StopForward
        return out if for_grad else None

    handle = module.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------


class ClassifierAdapter:
    """A classifier with its preprocessing, class names and layer access, for the rest of vrx."""

    def __init__(self, model: nn.Module, *, input_size: int | Sequence[int], mean: float | Sequence[float],
                 std: float | Sequence[float], bottleneck: str, class_names: Sequence[str],
                 name: str = "model", batch_size: int = 32, device: str | torch.device = "cpu",
                 aliases: Mapping[str, int] | None = None):
        if not isinstance(model, nn.Module):
            raise ModelSpecError(f"model {name!r} is a {type(model).__name__}, not a torch.nn.Module")
        self.name = str(name)
        self.input_size = _size_pair(input_size, self.name)
        self.mean = _channel_values(mean, "mean", self.name)
        self.std = _channel_values(std, "std", self.name)
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"model {self.name!r}: std must be positive, got {self.std}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"model {self.name!r}: batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = tuple(str(c) for c in class_names)
        if not self.class_names:
            raise ConfigError(f"model {self.name!r}: class_names is empty")
        self._index = _name_index(self.class_names, self.name)
        self._aliases = {normalize_class_name(a): int(i) for a, i in (aliases or {}).items()
                         if normalize_class_name(a) not in self._index and 0 <= int(i) < len(self.class_names)}
        self.forward_module = PreprocessedModel(self.model, self.mean, self.std, self.input_size).to(self.device)
        self.bottleneck = str(bottleneck)
        self.layer_module(self.bottleneck)  # fail now, not in the middle of a run
        self._call_counts: dict[str, int] | None = None
        self._call_order: list[str] = []
        self._aliases_given = dict(aliases or {})

    def __repr__(self) -> str:
        return (f"ClassifierAdapter(name={self.name!r}, input_size={self.input_size}, "
                f"classes={self.num_classes}, bottleneck={self.bottleneck!r}, device={str(self.device)!r})")

    def replace(self, **changes: Any) -> ClassifierAdapter:
        """A new adapter sharing this model, with some constructor arguments changed."""
        args = dict(input_size=self.input_size, mean=self.mean, std=self.std, bottleneck=self.bottleneck,
                    class_names=self.class_names, name=self.name, batch_size=self.batch_size,
                    device=self.device, aliases=self._aliases_given)
        unknown = set(changes) - set(args)
        if unknown:
            raise ConfigError(f"unknown adapter option(s) {sorted(unknown)}; valid: {sorted(args)}")
        args.update(changes)
        return ClassifierAdapter(self.model, **args)

    # ---- identity ---------------------------------------------------------------------------

    @cached_property
    def model_id(self) -> str:
        """``name-<16 hex>``: a stable cache key from the weights, preprocessing and class names.

        Computed once; changing the weights afterwards is not noticed.
        """
        h = hashlib.blake2b(digest_size=8)
        h.update(repr((self.input_size, self.mean, self.std, self.class_names)).encode())
        for key, tensor in self.model.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
            # Bytes through a uint8 view, so bfloat16 and other dtypes NumPy lacks hash too.
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("_") or "model"
        return f"{safe}-{h.hexdigest()}"

    # ---- classes -----------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Number of classes (length of the logits)."""
        return len(self.class_names)

    def class_name(self, class_id: int) -> str:
        """The name of class ``class_id``."""
        return self.class_names[self.class_id(class_id)]

    def class_id(self, name_or_id: int | str) -> int:
        """The id of a class given by id, name (case/space/underscore-insensitive) or alias."""
        if isinstance(name_or_id, (int, np.integer)) and not isinstance(name_or_id, bool):
            i = int(name_or_id)
            if 0 <= i < self.num_classes:
                return i
            raise UnknownClassError(f"class id {i} is out of range for model {self.name!r} "
                                    f"({self.num_classes} classes: 0..{self.num_classes - 1})")
        if isinstance(name_or_id, str):
            key = normalize_class_name(name_or_id)
            if key in self._index:
                return self._index[key]
            if key in self._aliases:
                return self._aliases[key]
            if key.isdigit():
                return self.class_id(int(key))
            keys = list(self._index) + list(self._aliases)
            close = difflib.get_close_matches(key, keys, n=8, cutoff=0.6)
            ids = list(dict.fromkeys(self._index.get(k, self._aliases.get(k)) for k in close))[:5]
            hint = (f"; did you mean {', '.join(repr(self.class_names[i]) for i in ids)}?" if ids else
                    f"; known classes include {', '.join(map(repr, self.class_names[:5]))}, ...")
            raise UnknownClassError(f"unknown class {name_or_id!r} for model {self.name!r}{hint}")
        raise UnknownClassError(f"class must be a name or an integer id, got {type(name_or_id).__name__}")

    def _targets(self, target: Target, n: int) -> torch.Tensor:
        if isinstance(target, torch.Tensor):
            target = target.item() if target.ndim == 0 else target.tolist()
        if isinstance(target, np.ndarray):
            target = target.tolist()
        if isinstance(target, (int, np.integer, str)):
            return torch.full((n,), self.class_id(target), dtype=torch.long)
        ids = [self.class_id(t) for t in target]
        if len(ids) != n:
            raise ConfigError(f"{len(ids)} targets given for {n} images; give one class or one per image")
        return torch.tensor(ids, dtype=torch.long)

    # ---- preprocessing -----------------------------------------------------------------------

    @property
    def fill_value(self) -> torch.Tensor:
        """The [0, 1] pixel value (per channel) that becomes exactly 0 after normalisation."""
        return torch.tensor(self.mean, dtype=torch.float32)

    def preprocess(self, images: Images) -> torch.Tensor:
        """The model input for [0, 1] images: resized to input_size and normalised (on device)."""
        return self.forward_module.normalise(self._as_batch(images).to(self.device))

    def _as_batch(self, images: Images) -> torch.Tensor:
        # A list may mix sizes, so each is resized on the way in; a tensor is resized per batch.
        x = to_tensor(images, size=self.input_size if isinstance(images, (list, tuple)) else None)
        validate_images(x, channels=len(self.mean))
        return x

    def _batches(self, x: torch.Tensor, batch_size: int | None, desc: str) -> Iterator[torch.Tensor]:
        bs = int(batch_size or self.batch_size)
        if bs < 1:
            raise ConfigError(f"batch_size must be positive, got {bs}")
        starts = range(0, x.shape[0], bs)
        for s in progress(starts, desc=f"{self.name} {desc}", total=len(starts),
                          enabled=None if len(starts) > 1 else False):
            yield x[s:s + bs].to(self.device)

    # ---- outputs -----------------------------------------------------------------------------

    def _check_logits(self, out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != self.num_classes:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelSpecError(f"model {self.name!r} returned {shape}; expected logits of shape "
                                 f"N×{self.num_classes} (one per class name)")
        return out

    def logits(self, images: Images, batch_size: int | None = None) -> torch.Tensor:
        """Logits N×C of [0, 1] images, computed in batches without autograd."""
        x = self._as_batch(images)
        self.model.eval()
        outs = []
        with torch.inference_mode():
            for xb in self._batches(x, batch_size, "logits"):
                outs.append(self._check_logits(self.forward_module(xb)).float().cpu())
        return torch.cat(outs)  # outside inference mode: a normal tensor, usable in autograd later

    def probabilities(self, images: Images, batch_size: int | None = None) -> torch.Tensor:
        """Softmax probabilities N×C."""
        return torch.softmax(self.logits(images, batch_size), dim=1)

    def predict(self, images: Images, top: int = 5, batch_size: int | None = None) -> list[list[Prediction]]:
        """The ``top`` most probable classes of each image, best first."""
        probs = self.probabilities(images, batch_size)
        p, idx = probs.topk(min(int(top), self.num_classes), dim=1)
        return [[Prediction(int(i), self.class_names[int(i)], float(q)) for q, i in zip(pr, ir)]
                for pr, ir in zip(p, idx)]

    # ---- layers ------------------------------------------------------------------------------

    def layer_module(self, name: str | None = None) -> nn.Module:
        """The module at dotted path ``name`` (default: the bottleneck) inside the model."""
        name = self.bottleneck if name is None else name
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            names = [n for n, _ in self.model.named_modules() if n]
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ModelSpecError(f"model {self.name!r} has no layer {name!r}{hint} "
                                 f"(layers are dotted module paths, e.g. {names[:3]})") from None

    def layer_call_counts(self) -> dict[str, int]:
        """How often each named module runs in one forward pass (probed once on a blank image)."""
        if self._call_counts is None:
            counts: dict[str, int] = {}
            order: list[str] = []
            handles = []

            def counter(name: str):
                def hook(*_: Any) -> None:
                    counts[name] += 1
                    order.append(name)
                return hook

            try:
                for name, module in self.model.named_modules():
                    counts[name] = 0
                    handles.append(module.register_forward_hook(counter(name)))
                blank = self.fill_value.view(1, -1, 1, 1).expand(1, -1, *self.input_size)
                with torch.inference_mode():
                    self.forward_module(blank.to(self.device))
            finally:
                for h in handles:
                    h.remove()
            self._call_counts, self._call_order = counts, order
        return dict(self._call_counts)

    def hookable_layers(self) -> list[str]:
        """Dotted names of the modules that run exactly once per forward (valid layers)."""
        return [n for n, c in self.layer_call_counts().items() if c == 1 and n]

    def _require_single_call(self, name: str) -> None:
        calls = self.layer_call_counts().get(name, 0)
        if calls == 1:
            return
        if calls == 0:
            options = difflib.get_close_matches(name, self.hookable_layers(), n=4, cutoff=0.0)
            raise ModelSpecError(f"layer {name!r} of model {self.name!r} never runs in a forward pass; "
                                 f"pick another layer, e.g. {', '.join(map(repr, options))}")
        # Hooks fire when a module finishes, so the single-call module finishing just before each
        # call is usually the one that feeds it: its output is what the user most likely wanted.
        feeders = []
        for pos, n in enumerate(self._call_order):
            if n == name:
                before = [m for m in self._call_order[:pos] if self._call_counts[m] == 1]
                if before and before[-1] not in feeders:
                    feeders.append(before[-1])
        raise ModelSpecError(f"layer {name!r} of model {self.name!r} runs {calls} times in one forward "
                             "pass (a reused module, e.g. a shared activation), so its output is "
                             f"ambiguous; pick another layer, e.g. the one feeding each call: "
                             f"{', '.join(map(repr, feeders))}")

    def activations(self, images: Images, layer: str | None = None,
                    batch_size: int | None = None) -> torch.Tensor:
        """Outputs of ``layer`` (default: the bottleneck) for [0, 1] images; the head is not run."""
        name = self.bottleneck if layer is None else layer
        module = self.layer_module(name)
        x = self._as_batch(images)
        self._require_single_call(name)
        self.model.eval()
        outs = []
        with torch.inference_mode():
            for xb in self._batches(x, batch_size, f"activations {name}"):
                with _hooked(module, name, stop=True, for_grad=False) as cap:
                    try:
                        self.forward_module(xb)
                    except _StopForward:
                        pass
                if cap.output is None:
                    raise ModelSpecError(f"layer {name!r} of model {self.name!r} did not run")
                outs.append(cap.output.float().cpu())
        return torch.cat(outs)

    def layer_gradients(self, images: Images, target: Target, layer: str | None = None,
                        batch_size: int | None = None) -> LayerGradients:
        """Activations at ``layer``, d(logit[target]) / d(activations), and the logits."""
        name = self.bottleneck if layer is None else layer
        module = self.layer_module(name)
        x = self._as_batch(images)
        targets = self._targets(target, x.shape[0])
        self.model.eval()
        acts, grads, logits = [], [], []
        bs = int(batch_size or self.batch_size)
        for i, xb in enumerate(self._batches(x, bs, f"gradients {name}")):
            tb = targets[i * bs:i * bs + xb.shape[0]].to(self.device)
            # no_grad until the layer (the hook switches grad on), so no graph is kept for the
            # backbone below it; inference_mode(False) in case the caller is in inference mode.
            with torch.inference_mode(False):
                with torch.no_grad(), _hooked(module, name, stop=False, for_grad=True) as cap:
                    out = self._check_logits(self.forward_module(xb.clone()))
                if cap.output is None:
                    raise ModelSpecError(f"layer {name!r} of model {self.name!r} did not run")
                if not out.requires_grad:
                    raise ModelSpecError(f"the logits of model {self.name!r} do not depend on layer {name!r}")
                with torch.enable_grad():
                    chosen = out.gather(1, tb.clone().view(-1, 1)).sum()  # images are independent in eval mode
                    (grad,) = torch.autograd.grad(chosen, cap.output)
            acts.append(cap.output.detach().float().cpu())
            grads.append(grad.float().cpu())
            logits.append(out.detach().float().cpu())
        return LayerGradients(torch.cat(acts), torch.cat(grads), torch.cat(logits))

    def bottleneck_gradients(self, images: Images, target: Target, layer: str | None = None,
                             batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(activations, gradient of the target logit w.r.t. them) at ``layer`` (default bottleneck)."""
        res = self.layer_gradients(images, target, layer, batch_size)
        return res.activations, res.gradients


# ---------------------------------------------------------------------------------------------


def _size_pair(size: int | Sequence[int], model: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if isinstance(size, (list, tuple)) and len(size) == 1:
        size = (size[0], size[0])
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"model {model!r}: input_size must be an int or (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"model {model!r}: input_size must be positive, got {(h, w)}")
    return (h, w)


def _channel_values(values: float | Sequence[float], what: str, model: str) -> tuple[float, ...]:
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if isinstance(values, (int, float, np.number)):
        values = [float(values)] * 3
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"model {model!r}: {what} must be a number or 3 numbers, got {values!r}") from None
    if len(out) == 1:
        out = out * 3
    if len(out) != 3:
        raise ConfigError(f"model {model!r}: {what} must have 3 values (R, G, B), got {list(out)}")
    return out


def _name_index(names: Sequence[str], model: str) -> dict[str, int]:
    index: dict[str, int] = {}
    dupes = []
    for i, n in enumerate(names):
        key = normalize_class_name(n)
        if key in index:
            dupes.append(f"{names[index[key]]!r} ({index[key]}) and {n!r} ({i})")
        index[key] = index.get(key, i)
    if dupes:
        raise ConfigError(f"model {model!r}: class names must be unique (ignoring case, spaces and "
                          f"underscores); clashes: {'; '.join(dupes[:5])}")
    return index

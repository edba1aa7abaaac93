"""ClassifierAdapter: the one object through which vrx talks to an image classifier.

It wraps any ``torch.nn.Module`` and owns what the rest of vrx must not know about the model:
input size and normalisation, class names, and how to read a named layer. Images come in as
NCHW float32 tensors in [0, 1] of any size, or as anything :func:`~vrx.models.inputs.to_tensor`
takes (NumPy H×W×3 arrays, PIL images, lists of them). Results (logits, activations, gradients)
come back on the CPU; the model runs on ``device`` in eval mode, and is left as it was found
(training flags and device) after every call (see :mod:`vrx.models.hooks`).

The pieces live beside it: input coercion in :mod:`.inputs`, preprocessing in :mod:`.preprocess`,
hooks and eval mode in :mod:`.hooks`, class names in :mod:`.class_index`, the weight hash in
:mod:`.identity`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any, NamedTuple, Union

import torch
from torch import nn

from ..errors import ConfigError, InvalidImageError, ModelSpecError
from ..progress import progress
from . import identity
from .batching import BatchSizer, MemoryBudget, checked_batch_size
from .class_index import ClassIndex, normalize_class_name
from .hooks import StopForward, capture, count_calls, evaluating
from .inputs import Images, to_tensor, validate_images
from .preprocess import PreprocessedModel, channel_values, size_pair

__all__ = ["ClassifierAdapter", "Images", "LayerGradients", "Prediction", "Target", "normalize_class_name",
           "to_tensor", "validate_images"]

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


class ClassifierAdapter:
    """A classifier with its preprocessing, class names and layer access, for the rest of vrx."""

    def __init__(self, model: nn.Module, *, input_size: int | Sequence[int], mean: float | Sequence[float],
                 std: float | Sequence[float], bottleneck: str, class_names: Sequence[str],
                 name: str = "model", batch_size: int | None = None, device: str | torch.device = "cpu",
                 aliases: Mapping[str, int] | None = None,
                 memory_budget: MemoryBudget | str | float | int | None = None):
        if not isinstance(model, nn.Module):
            raise ModelSpecError(f"model {name!r} is a {type(model).__name__}, not a torch.nn.Module")
        self.name = str(name)
        self.input_size = size_pair(input_size, self.name)
        self.mean = channel_values(mean, "mean", self.name)
        self.std = channel_values(std, "std", self.name)
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"model {self.name!r}: std must be positive, got {self.std}")
        # None: sized from the memory budget per input shape (see .batching); a number always wins.
        self.fixed_batch_size = checked_batch_size(batch_size, f"model {self.name!r}: batch_size")
        self.sizer = BatchSizer(memory_budget)
        self.device = torch.device(device)
        self.model = model  # not moved, not switched to eval: each call does that and undoes it
        self.classes = ClassIndex(class_names, aliases, model=self.name)
        self.class_names = self.classes.names
        self.forward_module = PreprocessedModel(self.model, self.mean, self.std, self.input_size, self.device)
        self.bottleneck = str(bottleneck)
        self.layer_module(self.bottleneck)  # fail now, not in the middle of a run
        self._call_counts: dict[str, int] | None = None
        self._call_order: list[str] = []

    def __repr__(self) -> str:
        return (f"ClassifierAdapter(name={self.name!r}, input_size={self.input_size}, "
                f"classes={self.num_classes}, bottleneck={self.bottleneck!r}, device={str(self.device)!r})")

    def replace(self, **changes: Any) -> ClassifierAdapter:
        """A new adapter sharing this model, with some constructor arguments changed."""
        args = dict(input_size=self.input_size, mean=self.mean, std=self.std, bottleneck=self.bottleneck,
                    class_names=self.class_names, name=self.name, batch_size=self.fixed_batch_size,
                    device=self.device, aliases=self.classes.aliases_given, memory_budget=self.sizer.budget)
        unknown = set(changes) - set(args)
        if unknown:
            raise ConfigError(f"unknown adapter option(s) {sorted(unknown)}; valid: {sorted(args)}")
        args.update(changes)
        return ClassifierAdapter(self.model, **args)

    @contextmanager
    def evaluating(self) -> Iterator[nn.Module]:
        """The model in eval mode on ``device`` inside the block, restored afterwards.

        Every method of the adapter runs the model this way; code that calls ``forward_module``
        itself (e.g. a Captum method) on another device than the model's wraps it in this block.
        """
        with evaluating(self.model, self.device) as model:
            yield model

    # ---- identity ---------------------------------------------------------------------------

    @cached_property
    def model_id(self) -> str:
        """``name-<16 hex>``: a stable cache key from the weights, preprocessing and class names.

        Computed once; changing the weights afterwards is not noticed.
        """
        return identity.model_id(self.name, self.model, (self.input_size, self.mean, self.std, self.class_names))

    # ---- classes -----------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Number of classes (length of the logits)."""
        return len(self.class_names)

    def class_name(self, class_id: int) -> str:
        """The name of class ``class_id``."""
        return self.classes.name(class_id)

    def class_id(self, name_or_id: int | str) -> int:
        """The id of a class given by id, name (case/space/underscore-insensitive) or alias."""
        return self.classes.id(name_or_id)

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

    @property
    def batch_size(self) -> int:
        """Images per forward at the model's input size: the explicit batch size, else memory-sized."""
        return self.batch_size_for((len(self.mean), *self.input_size))

    def batch_size_for(self, shape: Sequence[int], batch_size: int | None = None) -> int:
        """Images of ``shape`` (C, H, W) per forward: ``batch_size`` if given, else the adapter's
        explicit one, else as many as fit the memory budget (measured once per shape)."""
        explicit = checked_batch_size(batch_size) or self.fixed_batch_size
        return explicit or self.sizer.batch_size(tuple(shape), self._probe, self.model, self.fill_value, self.device)

    def _probe(self, x: torch.Tensor) -> None:
        with self.evaluating(), torch.inference_mode():
            self.forward_module(x)

    def _batches(self, x: torch.Tensor, batch_size: int | None, desc: str) -> Iterator[torch.Tensor]:
        bs = self.batch_size_for(x.shape[1:], batch_size)
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
        outs = []
        with self.evaluating(), torch.inference_mode():
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
            blank = self.fill_value.view(1, -1, 1, 1).expand(1, -1, *self.input_size).to(self.device)

            def forward() -> None:
                with self.evaluating(), torch.inference_mode():
                    self.forward_module(blank)

            self._call_counts, self._call_order = count_calls(self.model, forward)
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
        outs = []
        with self.evaluating(), torch.inference_mode():
            for xb in self._batches(x, batch_size, f"activations {name}"):
                with capture(module, name, stop=True, for_grad=False) as cap:
                    try:
                        self.forward_module(xb)
                    except StopForward:
                        pass
                if cap.output is None:
                    raise ModelSpecError(f"layer {name!r} of model {self.name!r} did not run")
                outs.append(cap.output.float().cpu())
        return torch.cat(outs)

    def logits_and_activations(self, images: Images, layer: str | None = None,
                               batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits N×C, outputs of ``layer``) of [0, 1] images from one forward pass each, no autograd."""
        name = self.bottleneck if layer is None else layer
        module = self.layer_module(name)
        x = self._as_batch(images)
        self._require_single_call(name)
        logits, acts = [], []
        with self.evaluating(), torch.inference_mode():
            for xb in self._batches(x, batch_size, f"logits and {name}"):
                with capture(module, name, stop=False, for_grad=False) as cap:
                    logits.append(self._check_logits(self.forward_module(xb)).float().cpu())
                acts.append(cap.output.float().cpu())
        return torch.cat(logits), torch.cat(acts)

    def layer_gradients(self, images: Images, target: Target, layer: str | None = None,
                        batch_size: int | None = None) -> LayerGradients:
        """Activations at ``layer``, d(logit[target]) / d(activations), and the logits."""
        name = self.bottleneck if layer is None else layer
        module = self.layer_module(name)
        x = self._as_batch(images)
        targets = torch.tensor(self.classes.targets(target, x.shape[0]), dtype=torch.long)
        acts, grads, logits = [], [], []
        bs = self.batch_size_for(x.shape[1:], batch_size)
        with self.evaluating():
            for i, xb in enumerate(self._batches(x, bs, f"gradients {name}")):
                a, g, o = self._gradient_batch(module, name, xb, targets[i * bs:i * bs + xb.shape[0]])
                acts.append(a)
                grads.append(g)
                logits.append(o)
        return LayerGradients(torch.cat(acts), torch.cat(grads), torch.cat(logits))

    def _gradient_batch(self, module: nn.Module, name: str, xb: torch.Tensor,
                        targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(activations, gradients, logits) of one batch on the device, returned on the CPU."""
        tb = targets.to(self.device)
        # no_grad until the layer (the hook switches grad on), so no graph is kept for the
        # backbone below it; inference_mode(False) in case the caller is in inference mode.
        with torch.inference_mode(False):
            with torch.no_grad(), capture(module, name, stop=False, for_grad=True) as cap:
                out = self._check_logits(self.forward_module(xb.clone()))
            if cap.output is None:
                raise ModelSpecError(f"layer {name!r} of model {self.name!r} did not run")
            if not out.requires_grad:
                raise ModelSpecError(f"the logits of model {self.name!r} do not depend on layer {name!r}")
            with torch.enable_grad():
                chosen = out.gather(1, tb.clone().view(-1, 1)).sum()  # images are independent in eval mode
                (grad,) = torch.autograd.grad(chosen, cap.output)
        return cap.output.detach().float().cpu(), grad.float().cpu(), out.detach().float().cpu()

    def class_gradients(self, image: Images, class_ids: Sequence[int], layer: str | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """For one image: activations [1, C, h, w] at ``layer`` and the gradient of each listed
        class logit w.r.t. them, [len(class_ids), C, h, w], from one forward (one backward each,
        through the layers after ``layer`` only). Equals ``layer_gradients`` class by class."""
        name = self.bottleneck if layer is None else layer
        module = self.layer_module(name)
        x = self._as_batch(image)
        if x.shape[0] != 1:
            raise InvalidImageError(f"class_gradients takes one image, got {x.shape[0]}")
        ids = [self.classes.targets(int(c), 1)[0] for c in class_ids]
        with self.evaluating(), torch.inference_mode(False):
            with torch.no_grad(), capture(module, name, stop=False, for_grad=True) as cap:
                out = self._check_logits(self.forward_module(x.to(self.device).clone()))
            if cap.output is None or not out.requires_grad:
                raise ModelSpecError(f"the logits of model {self.name!r} do not depend on layer {name!r}")
            with torch.enable_grad():
                grads = [torch.autograd.grad(out[0, c], cap.output, retain_graph=k + 1 < len(ids))[0]
                         for k, c in enumerate(ids)]
        return cap.output.detach().float().cpu(), torch.cat(grads).float().cpu()

    def bottleneck_gradients(self, images: Images, target: Target, layer: str | None = None,
                             batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(activations, gradient of the target logit w.r.t. them) at ``layer`` (default bottleneck)."""
        res = self.layer_gradients(images, target, layer, batch_size)
        return res.activations, res.gradients

"""The inverse-based attribution of Kwon, Koo, Soh & Cho (IEEE TNNLS 2021), for sequential ReLU CNNs.

The network is inverted layer by layer, from the class score back to the image. Each inverse
feature x̂ must keep the forward pass's internal activations consistent (it is a per-element
attenuation of the forward feature x: x̂ lies between 0 and x) and should carry little activation.
With y the forward output of a layer and ŷ its inverse (the inverse of the next layer's input):

* start: ŷ = one-hot(target); before each layer, ŷ ← ŷ · ‖y‖ / ‖ŷ‖ (per image);
* the last linear layer (logits z): x̂ = argmin max_{j≠c} z_j(x̂) − z_c(x̂), with no regulariser;
* every other linear layer L (conv, BN, linear, avg-pool, flatten and dropout in a row, up to a
  ReLU or a max-pool) with activation σ (ReLU or none):
  x̂ = argmin ‖ŷ − σ(L(x̂))‖₂ + λ ‖m ⊙ x̂‖₂, where, when L maps a feature map to a feature map,
  m = 1 − Σ_ch |ŷ| / max Σ_ch |ŷ| (resized to x̂'s size, nearest) puts more weight where the
  output is weak; otherwise m = 1;
* max-pooling: ŷ is put back at the forward pass's argmax positions (max-unpooling);
  a ReLU without a linear layer before it: x̂ = ŷ ⊙ [x > 0];
* every argmin is taken under the box min(0, x) ≤ x̂ ≤ max(0, x) (0 ≤ x̂ ≤ x after a ReLU; at the
  image the inverse keeps each value's sign), by accelerated projected gradient, as the authors
  do: x_{n+1} = P(x_n + β_n (x_n − x_{n−1}) − η_n ∇f(x_n)), β_n = (n − 1)/(n + 2), step η_n at most
  ½ · 0.5 / (2 max|∇f| + 1e-6) and halved whenever it exceeds that bound, start x_0 = 5 × 5
  average pool of x, stopped when the standard deviation of the last ``window`` (10) objective
  values is below ``tol`` (0.1) or after ``max_iter`` (3000) iterations.

The map is Σ_ch |x̂| / (|x| + 1e-6) at the model input (normalised image), divided by its maximum:
the fraction of each input value that the inverse keeps. Defaults from the authors' code:
λ = ``mask_weight`` = 0.7, ``max_iter`` 3000, ``tol`` 0.1, ``window`` 10. Batch norm (eval mode)
is part of the linear layer before it (the authors' code skips it). Cost: for each linear layer
up to ``max_iter`` forward + backward passes of that layer alone, per image batch.

Supported models are chains (traceable by ``torch.fx``) of Conv2d, BatchNorm2d, Linear, ReLU,
MaxPool2d, AdaptiveMaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout and Identity, ending in
a linear layer: VGG-style networks and vrx's toy CNN. Networks with residual connections or other
activations (EfficientNet, ResNet) raise ConfigError: the inversion has no rule for splitting ŷ
between a skip path and a branch, and their linear bottlenecks have signed features that break
the 0 ≤ x̂ ≤ x consistency the method is built on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.inputs import resize
from ..progress import progress
from .base import Attribution, register

__all__ = ["Inverse", "Step", "plan_steps"]

_LINEAR_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                   nn.Flatten, nn.Dropout, nn.Dropout2d, nn.Identity)
_POOL_MODULES = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)
SUPPORTED = ("Conv2d, BatchNorm2d, Linear, ReLU, MaxPool2d, AdaptiveMaxPool2d, AvgPool2d, "
             "AdaptiveAvgPool2d, Flatten, Dropout, Identity")


@dataclass
class Step:
    """One invertible layer: a run of linear ops (``kind="linear"``, with ``relu`` after it or not),
    a max-pool (``"maxpool"``) or a lone ReLU (``"relu"``)."""

    kind: str
    ops: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    relu: bool = False
    pool: nn.Module | None = None

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op(x)
        return x


def plan_steps(model: nn.Module, model_name: str = "model") -> list[Step]:
    """The model as invertible steps; ConfigError naming the first layer the method cannot invert."""
    where = f"inverse: model {model_name!r}"
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # tracing runs the user's forward: any error means "not traceable"
        raise ConfigError(f"{where} cannot be traced by torch.fx ({type(exc).__name__}: {exc}); the "
                          f"inverse method needs a plain sequential CNN of {SUPPORTED}") from None
    modules = dict(model.named_modules())
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConfigError(f"{where} takes {len(placeholders)} inputs; the inverse method needs one image input")
    # First the shape of the graph (a chain), then the layers: a residual network is named as such.
    chain, prev = [], placeholders[0]
    for node in nodes:
        if _is_size(node) and node.args[0] is prev:
            continue  # x.size(0) for a following x.view(n, -1)
        tensor_args = [a for a in list(node.args) + list(node.kwargs.values())
                       if isinstance(a, torch.fx.Node) and not _is_size(a) and a.op != "get_attr"]
        if tensor_args != [prev]:
            kind = ("a residual connection or a merge of branches" if len(tensor_args) > 1
                    else "an operation that does not take the previous layer's output")
            raise ConfigError(f"{where} is not a sequential CNN: {node.name!r} is {kind}; the inverse "
                              f"method supports chains of {SUPPORTED} (e.g. VGG or vrx's toy CNN), "
                              "not networks with residual connections such as EfficientNet or ResNet")
        chain.append(node)
        prev = node
    if not any(u.op == "output" for u in prev.users):
        raise ConfigError(f"{where}: its last operation {prev.name!r} is not what it returns")
    return _group([_classify(node, modules, where) for node in chain], where)


def _is_size(node: torch.fx.Node) -> bool:
    return node.op == "call_method" and node.target == "size"


def _classify(node: torch.fx.Node, modules: dict[str, nn.Module], where: str) -> tuple[str, Any, str]:
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.ReLU):
            return ("relu", None, node.target)
        if isinstance(module, _POOL_MODULES):
            return ("maxpool", module, node.target)
        if isinstance(module, _LINEAR_MODULES):
            return ("linear", module, node.target)
        raise ConfigError(f"{where}: layer {node.target!r} is a {type(module).__name__}, which the "
                          f"inverse method cannot invert; supported layers: {SUPPORTED}")
    if node.target in (torch.relu, F.relu, "relu"):
        return ("relu", None, node.name)
    if node.target in (torch.flatten, "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return ("linear", lambda x, s=start: torch.flatten(x, s), node.name)
    if node.target in ("view", "reshape") and len(node.args) == 3 and node.args[2] == -1:
        return ("linear", lambda x: x.flatten(1), node.name)  # x.view(x.size(0), -1)
    raise ConfigError(f"{where}: operation {node.name!r} ({node.target}) cannot be inverted; "
                      f"supported layers: {SUPPORTED}")


def _group(ops: list[tuple[str, Any, str]], where: str) -> list[Step]:
    steps: list[Step] = []
    current = Step("linear")
    for kind, op, name in ops:
        if kind == "linear":
            current.ops.append(op)
            current.names.append(name)
            continue
        if current.ops:
            current.relu = kind == "relu"
            steps.append(current)
            current = Step("linear")
            if kind == "relu":
                continue
        steps.append(Step(kind, names=[name], pool=op))
    if not current.ops:
        raise ConfigError(f"{where}: it must end in a linear layer that gives the logits; it ends in "
                          f"{steps[-1].kind if steps else 'nothing'}")
    steps.append(current)
    return steps


@register
class Inverse(Attribution):
    """Layer-wise inverse of a sequential ReLU CNN (Kwon et al. 2021); see the module docstring.

    Settings: ``mask_weight`` (λ, default 0.7), ``max_iter`` (3000), ``tol`` (0.1), ``window``
    (10), ``seed`` (unused: the method is deterministic), ``batch_size``.
    """

    name = "inverse"

    def __init__(self, adapter, *, mask_weight: float = 0.7, max_iter: int = 3000, tol: float = 0.1,
                 window: int = 10, seed: int = 0, batch_size: int | None = None):
        super().__init__(adapter, seed=seed, batch_size=batch_size)
        self.mask_weight, self.tol = _number(mask_weight, "mask_weight"), _number(tol, "tol")
        self.max_iter, self.window = _integer(max_iter, "max_iter", 1), _integer(window, "window", 2)
        self.steps = plan_steps(adapter.model, adapter.name)

    def config(self) -> dict[str, Any]:
        """The settings that define the maps."""
        return {**super().config(), "mask_weight": self.mask_weight, "max_iter": self.max_iter,
                "tol": self.tol, "window": self.window}

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if kwargs:
            raise ConfigError(f"inverse: unknown option(s) {sorted(kwargs)}; settings are given when "
                              "the method is created")
        out = torch.cat([self._chunk(images[s:s + self.batch_size], targets[s:s + self.batch_size])
                         for s in range(0, images.shape[0], self.batch_size)])
        size = tuple(images.shape[-2:])
        return out if tuple(out.shape[-2:]) == size else resize(out.unsqueeze(1), size)[:, 0]

    def inverse_image(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂, x): the inverse at the model input and the normalised input, on the adapter's device."""
        adapter = self.adapter
        x = adapter.preprocess(images)
        with adapter.evaluating(), torch.inference_mode(False):
            # Clones: the caller may be in inference mode, whose tensors cannot enter autograd.
            tb = targets.to(x.device).clone()
            record = self._forward(x.clone())
            y_hat = F.one_hot(tb, adapter.num_classes).to(x.dtype)
            bar = progress(list(enumerate(reversed(self.steps))), desc=f"{adapter.name} inverse")
            for k, step in bar:
                index = len(self.steps) - 1 - k
                x_in, y_out, extra = record[index]
                if step.kind == "relu":
                    y_hat = y_hat * (x_in > 0)
                    continue
                y_hat = y_hat * (_norms(y_out) / (_norms(y_hat) + 1e-10)).view(-1, *[1] * (y_hat.ndim - 1))
                if step.kind == "maxpool":
                    y_hat = _unpool(y_hat, extra, x_in.shape)
                else:
                    y_hat = self._invert_linear(step, x_in, y_hat, tb, last=k == 0)
        return y_hat.detach(), x

    def _chunk(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x_hat, x = self.inverse_image(images, targets)
        heat = (x_hat.abs() / (x.abs() + 1e-6)).sum(dim=1)
        peak = heat.flatten(1).amax(dim=1)
        bad = ~torch.isfinite(peak) | (peak <= 0)
        if bad.any():
            warnings.warn(f"inverse: the inverse of image(s) {bad.nonzero().flatten().tolist()} of this "
                          "batch is zero or not finite; their maps are all zero", RuntimeWarning, stacklevel=4)
        heat = torch.where(bad.view(-1, 1, 1), torch.zeros_like(heat), heat / peak.clamp(min=1e-30).view(-1, 1, 1))
        return heat.cpu()

    def _forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, Any]]:
        """(input, output, max-pool indices) of every step in the forward pass."""
        record = []
        with torch.no_grad():
            for step in self.steps:
                extra = None
                if step.kind == "relu":
                    y = torch.relu(x)
                elif step.kind == "maxpool":
                    y, extra = _pool_with_indices(step.pool, x)
                else:
                    y = step.linear(x)
                    if step.relu:
                        y = torch.relu(y)
                record.append((x, y, extra))
                x = y
        return record

    def _invert_linear(self, step: Step, x_in: torch.Tensor, y_hat: torch.Tensor, targets: torch.Tensor,
                       last: bool) -> torch.Tensor:
        lower, upper = x_in.clamp(max=0), x_in.clamp(min=0)
        rows = torch.arange(x_in.shape[0], device=x_in.device)
        if last:
            def objective(v: torch.Tensor) -> torch.Tensor:
                z = step.linear(v)
                chosen = z[rows, targets]
                others = z.scatter(1, targets.view(-1, 1), float("-inf"))
                return others.amax(dim=1) - chosen
        else:
            weight = _activity_mask(y_hat, x_in) if (x_in.ndim == 4 and y_hat.ndim == 4) else None

            def objective(v: torch.Tensor) -> torch.Tensor:
                out = step.linear(v)
                if step.relu:
                    out = torch.relu(out)
                data = (y_hat - out).flatten(1).norm(dim=1)
                reg = (v if weight is None else weight * v).flatten(1).norm(dim=1)
                return data + self.mask_weight * reg
        return _projected_gradient(objective, _average_init(x_in), lower, upper, self.max_iter,
                                   self.tol, self.window)


def _projected_gradient(objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                        lower: torch.Tensor, upper: torch.Tensor, max_iter: int, tol: float,
                        window: int) -> torch.Tensor:
    """Accelerated projected gradient, one step size and one stopping test per image."""
    n_img = x.shape[0]
    shape = (-1,) + (1,) * (x.ndim - 1)
    prev = x
    step = torch.zeros(n_img, device=x.device)
    active = torch.ones(n_img, dtype=torch.bool, device=x.device)
    history = torch.zeros(n_img, window, device=x.device)
    for n in range(max_iter):
        with torch.enable_grad():
            v = x.detach().requires_grad_(True)
            f = objective(v)
            (grad,) = torch.autograd.grad(f.sum(), [v])
        history[:, n % window] = f.detach()
        if n + 1 >= window:
            active &= ~(history.std(dim=1) < tol)
            if not active.any():
                break
        # The authors' step rule: at most a quarter over the largest gradient entry, never growing.
        bound = 0.5 / (2 * grad.abs().flatten(1).amax(dim=1) + 1e-6)
        step = 0.5 * bound if n == 0 else torch.where(step > bound, 0.5 * bound, step)
        beta = max(0.0, (n - 1) / (n + 2))
        with torch.no_grad():
            moved = torch.maximum(torch.minimum(x + beta * (x - prev) - step.view(shape) * grad, upper), lower)
            new = torch.where(active.view(shape), moved, x)
        prev, x = x, new
    return x.detach()


def _average_init(x: torch.Tensor) -> torch.Tensor:
    """The authors' start: a 5-wide average pool (stride 1) of the forward feature."""
    if x.ndim == 4:
        return F.avg_pool2d(x, 5, stride=1, padding=2)
    if x.ndim == 2:
        return F.avg_pool1d(x.unsqueeze(1), 5, stride=1, padding=2).squeeze(1)
    return x.clone()


def _activity_mask(y_hat: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
    """m = 1 − Σ_ch |ŷ| / max, at x̂'s spatial size: penalise input where the output is weak."""
    strength = y_hat.abs().sum(dim=1, keepdim=True)
    peak = strength.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    m = torch.where(peak > 0, 1 - strength / peak.clamp(min=1e-30), torch.ones_like(strength))
    if m.shape[-2:] != x_in.shape[-2:]:
        m = F.interpolate(m, size=x_in.shape[-2:], mode="nearest")
    return m


def _pool_with_indices(pool: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(pool, nn.AdaptiveMaxPool2d):
        return F.adaptive_max_pool2d(x, pool.output_size, return_indices=True)
    return F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                        ceil_mode=pool.ceil_mode, return_indices=True)


def _unpool(y_hat: torch.Tensor, indices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Max-unpooling: each value back at its forward argmax (the largest where windows overlap)."""
    n, c = shape[0], shape[1]
    out = torch.zeros(n, c, math.prod(shape[2:]), dtype=y_hat.dtype, device=y_hat.device)
    out.scatter_reduce_(2, indices.flatten(2), y_hat.reshape(n, c, -1), reduce="amax", include_self=False)
    return out.view(shape)


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _integer(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"inverse: {what} must be an integer ≥ {low}, got {value!r}")
    return int(value)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value) \
            or value < 0:
        raise ConfigError(f"inverse: {what} must be a number ≥ 0, got {value!r}")
    return float(value)

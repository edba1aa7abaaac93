"""Running a user's model for vrx without leaving a trace: eval mode, device, forward hooks.

:func:`evaluating` puts a module in eval mode on a device for the duration of a block and puts
back every submodule's ``training`` flag and every parameter's and buffer's device afterwards.
:func:`capture` records one layer's output during a forward, optionally stops the forward there
(the head is not run) or cuts the graph there (gradients w.r.t. that output only).
:func:`count_calls` probes how often each module runs in one forward. Every hook is removed when
its block ends, also on errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ModelSpecError


class StopForward(BaseException):
    """Raised by a forward hook to end the forward pass once the wanted layer has run.

    A BaseException, so a model whose forward has ``except Exception`` cannot swallow it.
    """


@dataclass
class Capture:
    """The output a :func:`capture` hook saw (None until the layer runs), and how often it ran."""

    output: torch.Tensor | None = None
    calls: int = 0


def _slots(module: nn.Module) -> Iterator[tuple[dict[str, Any], str, torch.Tensor]]:
    """(owning dict, name, tensor) of every parameter and buffer of ``module`` and its submodules."""
    for m in module.modules():
        for slots in (m._parameters, m._buffers):
            for name, t in slots.items():
                if t is not None:
                    yield slots, name, t


@contextmanager
def evaluating(module: nn.Module, device: torch.device | str | None = None) -> Iterator[nn.Module]:
    """``module`` in eval mode (and on ``device``) inside the block; its own state restored after.

    Each submodule gets its ``training`` flag back, and parameters and buffers that had to move
    go back to the device they were on. A module already in eval mode on ``device`` is untouched.
    """
    flags = [(m, m.training) for m in module.modules()]
    target = None if device is None else torch.device(device)
    moved: list[tuple[dict[str, Any], str, torch.device]] = []
    if target is not None:
        moved = [(slots, name, t.device) for slots, name, t in _slots(module) if not _on(t.device, target)]
        if moved:
            with torch.inference_mode(False):  # moved weights must stay usable by autograd
                module.to(target)
    module.eval()
    try:
        yield module
    finally:
        for m, was_training in flags:
            m.training = was_training
        with torch.inference_mode(False), torch.no_grad():
            for slots, name, home in moved:  # only those that moved; the rest were on the target
                t = slots[name]
                if isinstance(t, nn.Parameter):
                    t.data = t.data.to(home)  # the same Parameter object, as Module.to keeps it
                else:
                    slots[name] = t.to(home)


def _on(device: torch.device, target: torch.device) -> bool:
    """Whether a tensor on ``device`` is on ``target`` ("cuda" means the current CUDA device)."""
    if device.type != target.type:
        return False
    return target.index is None or device.index == target.index


@contextmanager
def capture(module: nn.Module, layer: str, *, stop: bool, for_grad: bool) -> Iterator[Capture]:
    """Capture ``module``'s output; optionally stop the forward there, or make it a grad leaf.

    With ``stop``, the forward raises :class:`StopForward` right after the layer; the caller
    catches it. With ``for_grad``, the output is detached and made a leaf that requires grad, and
    grad mode is switched on from there (the part of the model before it can run without).
    """
    cap = Capture()

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
            raise StopForward
        return out if for_grad else None

    handle = module.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


def count_calls(model: nn.Module, run: Callable[[], Any]) -> tuple[dict[str, int], list[str]]:
    """Call ``run()`` (one forward of ``model``) and count each named module's calls.

    Returns (calls per dotted name, the names in the order the modules finished).
    """
    counts: dict[str, int] = {}
    order: list[str] = []
    handles = []

    def counter(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            counts[name] += 1
            order.append(name)
        return hook

    try:
        for name, module in model.named_modules():
            counts[name] = 0
            handles.append(module.register_forward_hook(counter(name)))
        run()
    finally:
        for h in handles:
            h.remove()
    return counts, order

"""Grad-CAM (Selvaraju et al. 2017) at any layer, through Captum's ``LayerGradCam``.

The layer's channels are weighted by the spatial mean of the target logit's gradient, summed,
passed through a ReLU (``relu=True``, the paper's choice: only evidence *for* the class), and
upsampled bilinearly from the layer's grid to the image's own H × W. One forward + backward.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LayerAttribution, LayerGradCam

from ..config import check
from ..errors import ModelSpecError
from .base import Attribution, register
from .gradients import run_batches

__all__ = ["GradCAM"]


@register
class GradCAM(Attribution):
    """Grad-CAM at ``layer`` (a dotted module path, default the adapter's bottleneck).

    With ``relu=False`` the map keeps its negative part and is signed. The layer must run exactly
    once per forward pass (a reused module has no single output); ModelSpecError otherwise.
    """

    name = "gradcam"
    signed = False

    def __init__(self, adapter, *, layer: str | None = None, relu: bool = True, **kwargs: Any):
        super().__init__(adapter, **kwargs)
        check((isinstance(relu, bool), f"relu must be True or False, got {relu!r}"))
        self.layer = adapter.bottleneck if layer is None else str(layer)
        self.module = adapter.layer_module(self.layer)  # ModelSpecError naming close layer names
        calls = adapter.layer_call_counts().get(self.layer, 0)
        if calls != 1:
            raise ModelSpecError(f"Grad-CAM layer {self.layer!r} of model {adapter.name!r} runs {calls} times "
                                 "per forward pass; pick a layer that runs once (adapter.hookable_layers())")
        self.relu = relu
        self.signed = not relu  # the map is signed exactly when the ReLU is off

    def config(self) -> dict[str, Any]:
        return {**super().config(), "layer": self.layer, "relu": self.relu}

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        cam = LayerGradCam(self.adapter.forward_module, self.module)
        size = tuple(images.shape[-2:])

        def one(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            attr = cam.attribute(x, target=t, relu_attributions=self.relu)
            return LayerAttribution.interpolate(attr, size, interpolate_mode="bilinear")[:, 0]

        return run_batches(self, images, targets, one)

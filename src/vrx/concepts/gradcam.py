"""Grad-CAM foreground masks at the bottleneck, used to keep concept proposals on the object."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam

from ..models.adapter import ClassifierAdapter

log = logging.getLogger(__name__)


def gradcam(adapter: ClassifierAdapter, images: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """Grad-CAM of the class logit ``target`` at the adapter's bottleneck: [N, h, w], ReLU'd.

    ``images`` are [0,1] NCHW; the adapter's own preprocessing is applied inside the forward,
    so the CAM is computed on the input distribution the model was trained on.
    """
    method = LayerGradCam(adapter.forward_module, adapter.layer_module())
    with torch.enable_grad():
        cam = method.attribute(images.to(adapter.device), target=target, relu_attributions=True)
    return cam[:, 0].detach().cpu()


def foreground_mask(cam: torch.Tensor | np.ndarray, size: tuple[int, int], keep_top: float) -> np.ndarray:
    """Upsample one CAM to ``size`` (H, W) and keep its top ``keep_top`` fraction of pixels.

    Pixels where the CAM is exactly zero are never foreground, so the mask can hold fewer than
    ``keep_top`` of the pixels. An all-zero CAM (the class has no positive evidence anywhere)
    keeps the whole image rather than dropping it silently.
    """
    cam = torch.as_tensor(cam, dtype=torch.float32)
    up = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    if not np.any(up > 0):
        # Common when building the graph of a class the image shows no evidence for.
        log.debug("Grad-CAM is zero everywhere; keeping the whole image as foreground")
        return np.ones(size, dtype=bool)
    threshold = np.quantile(up, 1.0 - keep_top)
    return (up >= threshold) & (up > 0)


def class_foreground(adapter: ClassifierAdapter, image: np.ndarray, class_id: int, keep_top: float) -> np.ndarray:
    """Binary Grad-CAM foreground (HxW bool) of ``class_id`` for one HxWx3 image in [0,1]."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return foreground_mask(gradcam(adapter, x, class_id)[0], image.shape[:2], keep_top)

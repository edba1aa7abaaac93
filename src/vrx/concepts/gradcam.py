"""Grad-CAM foreground masks at the bottleneck, used to keep concept proposals on the object."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..models.adapter import ClassifierAdapter, Images, Target

log = logging.getLogger(__name__)


def gradcam(adapter: ClassifierAdapter, images: Images, target: Target) -> torch.Tensor:
    """Grad-CAM of the class logit ``target`` at the adapter's bottleneck: [N, h, w], ReLU'd.

    ``images`` are [0,1] NCHW (or anything the adapter takes); the adapter's own preprocessing is
    applied inside the forward, so the CAM is computed on the input distribution the model was
    trained on. The gradients come from ``adapter.layer_gradients``, the one gradient path that
    TCAV uses too; the arithmetic is Captum's ``LayerGradCam`` (same values, bit for bit): the
    gradients averaged over space weight the activations' channels, summed, then ReLU.
    """
    acts, grads, _ = adapter.layer_gradients(images, target, batch_size=_one_batch(images))
    cam = torch.sum(torch.mean(grads, dim=(2, 3), keepdim=True) * acts, dim=1, keepdim=True)
    return F.relu(cam)[:, 0]


def _one_batch(images: Images) -> int:
    """A batch size that puts all ``images`` into one forward, as Captum ran them."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        return int(images.shape[0]) if images.ndim == 4 and images.shape[0] > 0 else 1
    return max(len(images), 1) if isinstance(images, (list, tuple)) else 1


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
    return foreground_mask(gradcam(adapter, image, class_id)[0], image.shape[:2], keep_top)


def class_foregrounds(adapter: ClassifierAdapter, image: np.ndarray, class_ids: list[int],
                      keep_top: float) -> list[np.ndarray]:
    """:func:`class_foreground` of every class in ``class_ids``, from one forward of the image.

    The same masks as calling it class by class (one backward per class, through the layers
    after the bottleneck only), for the graph builder, which needs every class's on each image.
    """
    acts, grads = adapter.class_gradients(image, class_ids)
    cams = F.relu(torch.sum(torch.mean(grads, dim=(2, 3), keepdim=True) * acts, dim=1))  # [K, h, w]
    return [foreground_mask(cam, image.shape[:2], keep_top) for cam in cams]

"""The two speed-ups of patching give the same results as the plain computations they replace.

- slic_labels shares SLIC's preprocessing across resolutions: its maps must equal plain
  ``skimage.segmentation.slic`` calls bit for bit (and the plain path must still work);
- extract_patches resizes with banded matrix products: they must equal F.interpolate's antialiased
  bicubic resize, when upscaling and downscaling, in either product order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data, transform
from skimage.segmentation import slic

from vrx.concepts import fastpaths
from vrx.concepts.patches import _plan, crop_patch, extract_patches, resize_bands, resize_matrix, resize_patch
from vrx.concepts.segmentation import Segment, SegmentationConfig, segment_image, slic_labels

FILL = (0.25, 0.5, 0.75)
CONFIGS = [SegmentationConfig(),
           SegmentationConfig(n_segments=(4, 30), compactness=5.0, sigma=0.0, start_label=0,
                              enforce_connectivity=False, max_num_iter=4),
           SegmentationConfig(n_segments=(20, 60), sigma=0.5, min_size_factor=0.1)]


def _photo(name: str, size: tuple[int, int], dtype=np.float32) -> np.ndarray:
    img = getattr(data, name)().astype(np.float64) / 255.0
    return transform.resize(img, size, anti_aliasing=True).clip(0, 1).astype(dtype)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [_photo("chelsea", (72, 96)), _photo("coffee", (64, 64), np.float64),
            _photo("astronaut", (80, 80)) * 0.5 + 0.2]  # not full range: slic's rescaling matters


def _plain(image: np.ndarray, config: SegmentationConfig) -> list[np.ndarray]:
    return [slic(image, n_segments=n, compactness=config.compactness, sigma=config.sigma,
                 max_num_iter=config.max_num_iter, enforce_connectivity=config.enforce_connectivity,
                 min_size_factor=config.min_size_factor, start_label=config.start_label, channel_axis=-1) - config.start_label
            for n in config.n_segments]


def test_shared_preprocessing_is_in_use_and_equals_plain_slic(images):
    assert fastpaths.shared_slic_matches()  # else the comparison below would test plain slic twice
    for config in CONFIGS:
        for image in images:
            for got, want in zip(slic_labels(image, config), _plain(image, config), strict=True):
                assert got.dtype == np.int64
                np.testing.assert_array_equal(got, want)


def test_plain_slic_fallback_gives_the_same_segments(images, monkeypatch):
    fast = segment_image(images[0])
    monkeypatch.setattr(fastpaths, "shared_slic_matches", lambda: False)
    plain = segment_image(images[0])
    assert [(s.resolution, s.label, s.bbox) for s in fast] == [(s.resolution, s.label, s.bbox) for s in plain]


def test_resize_bands_reassemble_the_resize_matrix():
    for n_in, n_out in [(40, 224), (224, 224), (300, 128), (13, 90), (200, 20)]:
        full = resize_matrix(n_in, n_out)
        blocks = resize_bands(n_in, n_out)
        assert [b[0] for b in blocks][0] == 0 and blocks[-1][1] == n_out
        rebuilt = torch.zeros_like(full)
        for o0, o1, i0, i1, w, wt in blocks:
            rebuilt[o0:o1, i0:i1] = w
            assert torch.equal(wt, w.T)
        torch.testing.assert_close(rebuilt, full, atol=0, rtol=0)  # nothing outside a band is non-zero
    assert len(resize_bands(40, 224)) > 1 and len(resize_bands(40, 224, banded=False)) == 1


@pytest.mark.parametrize("size", [(224, 224), (112, 84), (24, 40)])
def test_banded_patches_match_antialiased_bicubic(size):
    image = _photo("chelsea", (150, 200))  # big segments are downscaled to (24, 40), small ones upscaled
    segments = segment_image(image)
    patches = extract_patches(image, segments, FILL, size)
    assert patches.shape == (len(segments), 3, *size)
    plans = [_plan(s.bbox[2] - s.bbox[0], s.bbox[3] - s.bbox[1], 3, *size) for s in segments]
    if size == (224, 224):  # the banded products are what is being checked
        assert any(len(first) > 1 or len(second) > 1 for _, first, second in plans)
    for i in range(0, len(segments), max(1, len(segments) // 8)):
        crop = torch.from_numpy(crop_patch(image, segments[i], FILL)).permute(2, 0, 1)[None]
        want = F.interpolate(crop, size=size, mode="bicubic", align_corners=False, antialias=True)[0]
        torch.testing.assert_close(patches[i], want.clamp(0, 1), atol=2e-6, rtol=0)
        torch.testing.assert_close(resize_patch(crop[0].contiguous(), size), want, atol=2e-6, rtol=0)


def test_both_product_orders_match():
    """A tall and a wide box: the cheaper order differs between them, the result must not."""
    image = _photo("coffee", (120, 160))
    for y0, x0, y1, x1 in [(5, 40, 115, 52), (50, 3, 58, 150)]:
        mask = np.zeros(image.shape[:2], bool)
        mask[y0:y1, x0:x1] = True
        segment = Segment(mask=mask, bbox=(y0, x0, y1, x1), resolution=0)
        crop = torch.from_numpy(crop_patch(image, segment, FILL)).permute(2, 0, 1)[None]
        want = F.interpolate(crop, size=(112, 112), mode="bicubic", align_corners=False, antialias=True)[0]
        got = extract_patches(image, [segment], FILL, (112, 112))[0]
        torch.testing.assert_close(got, want.clamp(0, 1), atol=2e-6, rtol=0)

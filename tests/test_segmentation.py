"""Multi-resolution segmentation and patch extraction (vrx.concepts.segmentation / .patches)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data, transform

from vrx.concepts.patches import crop_patch, extract_patches, resize_matrix
from vrx.concepts.segmentation import Segment, SegmentationConfig, segment_image, slic_labels
from vrx.errors import ConfigError, InvalidImageError

FILL = np.array([0.25, 0.5, 0.75], np.float32)


def _photo(name: str, size: int) -> np.ndarray:
    img = getattr(data, name)().astype(np.float32) / 255.0
    return transform.resize(img, (size, size), anti_aliasing=True).astype(np.float32).clip(0, 1)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return _photo("astronaut", 96)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return _photo("chelsea", 80)


def _noise(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (8, 8, 3))
    img = transform.resize(coarse, (size, size), order=1) + rng.normal(0, 0.05, (size, size, 3))
    return img.clip(0, 1).astype(np.float32)


def _blocks() -> np.ndarray:
    """A 64x64 image of four flat colour quadrants: SLIC with 4 segments returns exactly them."""
    img = np.zeros((64, 64, 3), np.float32)
    img[:32, :32] = (1.0, 0.0, 0.0)
    img[:32, 32:] = (0.0, 1.0, 0.0)
    img[32:, :32] = (0.0, 0.0, 1.0)
    img[32:, 32:] = (1.0, 1.0, 0.0)
    return img


def _reference(image, config, keep_mask=None, min_inside=1.0):
    """ACE's rule written the slow way: full masks, greedy Jaccard against every accepted mask."""
    kept = []  # (resolution, label, mask)
    h, w = image.shape[:2]
    for r, labels in enumerate(slic_labels(image, config)):
        for label in range(int(labels.max()) + 1):  # every label, including the highest
            mask = labels == label
            area = mask.sum()
            if area == 0 or area < config.min_area * h * w:
                continue
            if keep_mask is not None and (mask & keep_mask).sum() / area < min_inside:
                continue
            if all((m & mask).sum() / (m | mask).sum() <= config.max_jaccard for _, _, m in kept):
                kept.append((r, label, mask))
    return kept


def _same_as_reference(segments, reference):
    assert [(s.resolution, s.label) for s in segments] == [(r, lab) for r, lab, _ in reference]
    for s, (_, _, mask) in zip(segments, reference):
        assert np.array_equal(s.mask, mask)
        ys, xs = np.nonzero(mask)
        assert s.bbox == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        assert s.area == ys.size
        assert s.centroid == pytest.approx((ys.mean(), xs.mean()))


# ---------------------------------------------------------------- segmentation


def test_every_slic_label_is_used():
    img = _blocks()
    config = SegmentationConfig(n_segments=(4,), min_area=0.0)
    labels = slic_labels(img, config)[0]
    assert labels.max() == 3 and len(np.unique(labels)) == 4
    segments = segment_image(img, config)
    # ACE's range(labels.max()) would return 3 segments and leave a quadrant uncovered.
    assert len(segments) == 4
    assert sorted(s.label for s in segments) == [0, 1, 2, 3]
    last = next(s for s in segments if s.label == 3)
    assert np.array_equal(last.mask, labels == 3)
    assert np.logical_or.reduce([s.mask for s in segments]).all()


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "noise"])
@pytest.mark.parametrize("min_area,max_jaccard", [(0.001, 0.5), (0.01, 0.3), (0.0, 0.8)])
def test_dedup_equals_greedy_reference(name, min_area, max_jaccard, request):
    img = _noise() if name == "noise" else request.getfixturevalue(name)
    config = SegmentationConfig(min_area=min_area, max_jaccard=max_jaccard)
    segments = segment_image(img, config)
    reference = _reference(img, config)
    assert len(reference) > 10
    _same_as_reference(segments, reference)
    # The rule did something: some SLIC segments were rejected as duplicates or tiny.
    n_slic = sum(int(m.max()) + 1 for m in slic_labels(img, config))
    assert len(segments) < n_slic


def test_tiny_segments_dropped(astronaut):
    config = SegmentationConfig(min_area=0.01)
    h, w = astronaut.shape[:2]
    areas = np.concatenate([np.bincount(m.ravel()) for m in slic_labels(astronaut, config)])
    assert (areas < 0.01 * h * w).any()  # there are tiny SLIC segments to drop
    segments = segment_image(astronaut, config)
    assert segments and all(s.area >= 0.01 * h * w for s in segments)
    assert len(segment_image(astronaut, SegmentationConfig(min_area=0.0))) > len(segments)


def test_repeated_resolution_is_all_duplicates(chelsea):
    once = segment_image(chelsea, SegmentationConfig(n_segments=(30,)))
    twice = segment_image(chelsea, SegmentationConfig(n_segments=(30, 30)))
    assert [s.label for s in twice] == [s.label for s in once]
    assert all(s.resolution == 0 for s in twice)


@pytest.mark.parametrize("min_inside", [1.0, 0.5])
def test_keep_mask_filter(astronaut, min_inside):
    h, w = astronaut.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    keep = (yy - 40) ** 2 + (xx - 50) ** 2 < 30 ** 2
    config = SegmentationConfig()
    segments = segment_image(astronaut, config, keep_mask=keep, min_inside=min_inside)
    assert segments
    for s in segments:
        assert (s.mask & keep).sum() / s.area >= min_inside
    # Filter first, then de-duplicate among the kept segments only (ACE/VRX order).
    _same_as_reference(segments, _reference(astronaut, config, keep, min_inside))


def test_keep_mask_half_keeps_more_than_full(astronaut):
    h, w = astronaut.shape[:2]
    keep = np.zeros((h, w), bool)
    keep[:, : w // 2] = True
    strict = segment_image(astronaut, keep_mask=keep, min_inside=1.0)
    loose = segment_image(astronaut, keep_mask=keep, min_inside=0.5)
    assert all(s.mask[:, w // 2:].sum() == 0 for s in strict)
    straddling = [s for s in loose if 0 < s.mask[:, w // 2:].sum() <= s.area / 2]
    assert straddling  # segments across the border, at least half inside, are kept only at 0.5


def test_keep_mask_errors(astronaut):
    with pytest.raises(ConfigError, match="shape"):
        segment_image(astronaut, keep_mask=np.ones((5, 5), bool))
    with pytest.raises(ConfigError, match="boolean"):
        segment_image(astronaut, keep_mask=np.full(astronaut.shape[:2], 0.3))
    with pytest.raises(ConfigError, match="min_inside"):
        segment_image(astronaut, keep_mask=np.ones(astronaut.shape[:2], bool), min_inside=1.5)


def test_config_not_mutated_and_output_deterministic(chelsea):
    config = SegmentationConfig(n_segments=[15, 50, 80])  # a JSON list becomes a tuple
    assert config.n_segments == (15, 50, 80)
    before = dataclasses.asdict(config)
    first = segment_image(chelsea, config)
    second = segment_image(chelsea, config)
    assert dataclasses.asdict(config) == before
    assert hash(config) == hash(SegmentationConfig())
    assert [(s.resolution, s.label, s.bbox) for s in first] == [(s.resolution, s.label, s.bbox) for s in second]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(first, second))
    assert [s.resolution for s in first] == sorted(s.resolution for s in first)


@pytest.mark.parametrize("kwargs", [dict(n_segments=()), dict(n_segments=(0, 5)), dict(n_segments=(2.5,)),
                                    dict(compactness=0), dict(min_area=1.0), dict(max_jaccard=1.5),
                                    dict(start_label=2), dict(sigma=-1)])
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        SegmentationConfig(**kwargs)


@pytest.mark.parametrize("image,match", [
    (np.zeros((32, 32), np.float32), "HxWx3"),
    (np.zeros((32, 32, 3), np.uint8), "float"),
    (np.full((32, 32, 3), 2.0, np.float32), r"\[0, 1\]"),
    (np.full((32, 32, 3), np.nan, np.float32), "finite"),
])
def test_bad_image(image, match):
    with pytest.raises(InvalidImageError, match=match):
        segment_image(image)


def test_segment_computes_area_and_centroid():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    s = Segment(mask=mask, bbox=(2, 3, 5, 9), resolution=0)
    assert s.area == 18 and s.centroid == pytest.approx((3.0, 5.5))


# ---------------------------------------------------------------- patches


def test_crop_fills_background_and_includes_last_row_and_column(chelsea):
    segments = segment_image(chelsea)
    for s in segments:
        y0, x0, y1, x1 = s.bbox
        sub = s.mask[y0:y1, x0:x1]
        # Tight, end-exclusive box: the segment touches all four sides, nothing lies outside.
        assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
        assert sub.sum() == s.mask.sum()
        crop = crop_patch(chelsea, s, FILL)
        assert crop.shape == (y1 - y0, x1 - x0, 3)
        assert np.array_equal(crop[~sub], np.broadcast_to(FILL, crop[~sub].shape))
        assert np.array_equal(crop[sub], chelsea[y0:y1, x0:x1][sub])


def test_patch_without_resampling_is_the_exact_crop(chelsea):
    segments = segment_image(chelsea)
    s = max(segments, key=lambda t: t.area)
    y0, x0, y1, x1 = s.bbox
    patch = extract_patches(chelsea, [s], FILL, (y1 - y0, x1 - x0))
    assert patch.shape == (1, 3, y1 - y0, x1 - x0) and patch.dtype == torch.float32
    crop = crop_patch(chelsea, s, FILL)
    assert torch.equal(patch[0], torch.from_numpy(crop).permute(2, 0, 1))
    outside = ~torch.from_numpy(s.mask[y0:y1, x0:x1])
    assert outside.any()
    for c in range(3):
        assert torch.all(patch[0, c][outside] == float(FILL[c]))


@pytest.mark.parametrize("size", [(32, 32), (40, 24)])
def test_patches_match_antialiased_bicubic_resize(chelsea, size):
    segments = segment_image(chelsea)
    patches = extract_patches(chelsea, segments, FILL, size)
    assert patches.shape == (len(segments), 3, *size) and patches.dtype == torch.float32
    assert patches.min() >= 0 and patches.max() <= 1
    for i in (0, len(segments) // 2, len(segments) - 1):
        crop = torch.from_numpy(crop_patch(chelsea, segments[i], FILL)).permute(2, 0, 1)[None]
        want = F.interpolate(crop, size=size, mode="bicubic", align_corners=False, antialias=True)
        torch.testing.assert_close(patches[i], want[0].clamp(0, 1), atol=2e-6, rtol=0)


def test_uniform_fill_stays_uniform():
    """Resize weights sum to one: a segment-free crop region resizes to exactly the fill colour."""
    mask = np.zeros((64, 64), bool)
    mask[10:30, 20:26] = True
    mask[10:12, 20:22] = False  # a box corner outside the segment
    s = Segment(mask=mask, bbox=(10, 20, 30, 26), resolution=0)
    img = np.full((64, 64, 3), 0.9, np.float32)
    patch = extract_patches(img, [s], FILL, (60, 18))
    assert torch.allclose(patch[0, :, 25:35, 5:13], torch.full((3, 10, 8), 0.9), atol=1e-6)
    assert abs(patch[0, 0, 0, 0].item() - 0.25) < 0.05  # the corner keeps (mostly) the fill


def test_empty_segment_list(chelsea):
    out = extract_patches(chelsea, [], FILL, (48, 40))
    assert out.shape == (0, 3, 48, 40) and out.dtype == torch.float32


def test_patch_errors(chelsea):
    s = segment_image(chelsea)[0]
    with pytest.raises(ConfigError, match="fill"):
        extract_patches(chelsea, [s], [0.5, 0.5], (8, 8))
    with pytest.raises(ConfigError, match="fill"):
        extract_patches(chelsea, [s], [117.0, 117.0, 117.0], (8, 8))
    with pytest.raises(ConfigError, match="size"):
        extract_patches(chelsea, [s], FILL, (0, 8))
    bad = Segment(mask=np.ones((5, 5), bool), bbox=(0, 0, 5, 5), resolution=0)
    with pytest.raises(InvalidImageError, match="segment 1"):
        extract_patches(chelsea, [s, bad], FILL, (8, 8))


def test_resize_matrix_rows_sum_to_one_and_thread_count_untouched(chelsea, monkeypatch):
    for n_in, n_out in [(7, 224), (300, 224), (224, 224)]:
        w = resize_matrix(n_in, n_out)
        assert w.shape == (n_out, n_in)
        torch.testing.assert_close(w.sum(1), torch.ones(n_out), atol=1e-6, rtol=0)
    # Thread counts are process-wide: patching leaves them to the caller (vrx.runtime.threads).
    before = torch.get_num_threads()

    def refuse(_n: int) -> None:
        raise AssertionError("extract_patches changed torch's thread count")

    monkeypatch.setattr(torch, "set_num_threads", refuse)
    extract_patches(chelsea, segment_image(chelsea), FILL, (24, 24))
    assert torch.get_num_threads() == before

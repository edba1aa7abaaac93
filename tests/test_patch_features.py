"""Patch features: "crop" (ACE) and "map" mode, and the context features every patch carries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vrx.concepts.features import PatchFeaturizer
from vrx.concepts.segmentation import Segment, SegmentationConfig
from vrx.errors import ConfigError


def _halves(h: int = 128, w: int = 128) -> list[Segment]:
    left = np.zeros((h, w), bool)
    left[:, : w // 2] = True
    return [Segment(mask=left, bbox=(0, 0, h, w // 2), resolution=0),
            Segment(mask=~left, bbox=(0, w // 2, h, w), resolution=0)]


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((128, 128, 3)).astype(np.float32)


def test_map_features_are_the_segment_means_of_the_image_map(toy_adapter):
    image, segments = _image(), _halves()
    feat = PatchFeaturizer(toy_adapter, SegmentationConfig(features="map"))
    act = toy_adapter.activations(torch.from_numpy(image).permute(2, 0, 1)[None])[0]  # [C, 16, 16]
    features, context = feat._features_of(image, segments)
    assert np.array_equal(features, context)  # in map mode the patch feature *is* the context
    # Each half covers whole cells of the 16 x 16 map, so the pooled feature is a plain mean.
    np.testing.assert_allclose(features[0], act[:, :, :8].mean((1, 2)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features[1], act[:, :, 8:].mean((1, 2)).numpy(), rtol=1e-5, atol=1e-6)
    full = feat.full_activations(image, segments)
    assert full.shape == (2, *act.shape)
    assert torch.equal(full[0, :, :, 8:], torch.zeros_like(full[0, :, :, 8:]))
    torch.testing.assert_close(full[0, :, :, :8], act[:, :, :8])


def test_crop_and_map_modes_differ_and_are_cached_apart(toy_adapter, tmp_path):
    image = _image(1)
    crop = PatchFeaturizer(toy_adapter, SegmentationConfig(n_segments=(6,)), tmp_path)
    mapped = PatchFeaturizer(toy_adapter, SegmentationConfig(n_segments=(6,), features="map"), tmp_path)
    a, b = crop(image), mapped(image)
    assert np.array_equal(a.masks, b.masks)          # same segments
    assert not np.allclose(a.features, b.features)   # different features
    np.testing.assert_array_equal(a.context, b.context)  # the same context features in both modes
    np.testing.assert_array_equal(a.context, b.features)
    assert mapped.misses == 1 and mapped.hits == 0   # the crop entry was not mistaken for it


def test_unknown_feature_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="crop' or 'map"):
        SegmentationConfig(features="pixels")


def test_context_activations_in_crop_mode_are_the_map_ones(toy_adapter):
    image, segments = _image(2), _halves()
    crop = PatchFeaturizer(toy_adapter, SegmentationConfig())
    mapped = PatchFeaturizer(toy_adapter, SegmentationConfig(features="map"))
    torch.testing.assert_close(crop.full_activations(image, segments, "context"),
                               mapped.full_activations(image, segments))
    # "patch" in crop mode: the activations of the resized crops, a different thing.
    assert not torch.allclose(crop.full_activations(image, segments), mapped.full_activations(image, segments))


def test_unknown_tcav_activations_is_a_config_error():
    from vrx.concepts.config import ConceptConfig

    with pytest.raises(ConfigError, match="tcav.activations"):
        ConceptConfig.from_dict({"tcav": {"activations": "pixels"}})


def _images_through_model(adapter, fn) -> int:
    """How many images ``fn()`` runs through the adapter's network (batch sizes of its forwards summed)."""
    seen = []
    handle = adapter.model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    try:
        fn()
    finally:
        handle.remove()
    return sum(seen)


def test_map_mode_runs_one_forward_of_the_image_crop_mode_one_per_patch_more(toy_adapter):
    image = _image(4)
    mapped = PatchFeaturizer(toy_adapter, SegmentationConfig(n_segments=(6, 12), features="map"))
    crop = PatchFeaturizer(toy_adapter, SegmentationConfig(n_segments=(6, 12)), batch_size=4)
    n_patches = len(crop.compute(image))
    assert n_patches > 4
    assert _images_through_model(toy_adapter, lambda: mapped.compute(image)) == 1
    assert _images_through_model(toy_adapter, lambda: crop.compute(image)) == n_patches + 1

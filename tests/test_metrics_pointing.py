"""Pointing games, their chance baseline and toyworld's ground-truth masks, on hand-made maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vrx.data.toyworld import DEFAULT_CLASSES, PART_IDS, STRUCTURE_PAIR
from vrx.errors import ConfigError, InvalidImageError, UnknownClassError
from vrx.metrics.pointing import (
    default_tolerance, distinctive_mask, distinctive_parts, energy_pointing_game, pointing_game,
    random_baseline, vehicle_mask,
)


def peak_map(h: int, w: int, r: int, c: int) -> np.ndarray:
    s = np.zeros((h, w))
    s[r, c] = 1.0
    return s


def test_hit_within_tolerance_miss_beyond():
    h = w = 64
    mask = np.zeros((h, w), bool)
    mask[30:34, 40:44] = True  # nearest mask pixel to (30, 30) is (30, 40): distance 10
    maps = np.stack([peak_map(h, w, 31, 42), peak_map(h, w, 30, 31), peak_map(h, w, 30, 30),
                     peak_map(h, w, 5, 5)])
    res = pointing_game(maps, np.stack([mask] * 4), tolerance=10)
    # inside; distance 9 < 10; distance exactly 10 is not below the tolerance (TorchRay's strict <); far
    assert res.hits.tolist() == [True, True, False, False]
    assert res.valid.all() and res.accuracy == 0.5 and res.tolerance == 10
    assert res.points.tolist() == [[31, 42], [30, 31], [30, 30], [5, 5]]
    assert pointing_game(maps[2:3], mask[None], tolerance=10.5).hits.tolist() == [True]


def test_default_tolerance_scales_with_the_smaller_side():
    assert default_tolerance(224, 224) == 15
    assert default_tolerance(112, 300) == 7.5
    mask = np.zeros((112, 300), bool)
    mask[50, 100] = True
    near, far = peak_map(112, 300, 50, 107), peak_map(112, 300, 50, 108)  # distance 7 and 8
    res = pointing_game(np.stack([near, far]), np.stack([mask, mask]))
    assert res.tolerance == 7.5 and res.hits.tolist() == [True, False]


def test_ties_point_at_the_first_maximum_in_raster_order():
    s = np.zeros((1, 10, 10))
    s[0, 2, 7] = s[0, 5, 1] = s[0, 9, 9] = 3.0
    assert pointing_game(s, np.ones((1, 10, 10), bool), tolerance=1).points.tolist() == [[2, 7]]


def test_empty_masks_are_left_out():
    maps = np.stack([peak_map(20, 20, 3, 3)] * 3)
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 3, 3] = True
    masks[2, 15, 15] = True
    res = pointing_game(torch.from_numpy(maps), torch.from_numpy(masks), tolerance=2)
    assert res.valid.tolist() == [True, False, True] and res.hits.tolist() == [True, False, False]
    assert res.accuracy == 0.5
    assert math.isnan(pointing_game(maps[1:2], masks[1:2]).accuracy)


def test_class_accuracy_is_the_mean_over_classes():
    maps = np.stack([peak_map(8, 8, 0, 0)] * 4)
    masks = np.zeros((4, 8, 8), bool)
    masks[[0, 1, 2], 0, 0] = True  # images 0-2 hit; image 3 misses
    masks[3, 7, 7] = True
    res = pointing_game(maps, masks, tolerance=1)
    # class a: 3 of 3 (but image 3 is b), class b: 0 of 1 -> (1 + 0) / 2, not 3 / 4
    assert res.class_accuracy(["a", "a", "a", "b"]) == 0.5 and res.accuracy == 0.75
    with pytest.raises(ConfigError, match="labels"):
        res.class_accuracy(["a"])


def test_energy_share_clips_negative_values():
    s = np.zeros((3, 4, 4))
    s[0, 0, 0], s[0, 3, 3], s[0, 1, 1] = 3.0, 1.0, -5.0  # the -5 counts as 0
    s[1] = -1.0  # no positive energy at all
    s[2, 0, 0] = 2.0
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2, :2] = True
    masks[1, 0, 0] = True  # image 2's mask stays empty
    out = energy_pointing_game(s, masks)
    assert out[0] == pytest.approx(0.75) and math.isnan(out[1]) and math.isnan(out[2])


def test_random_baseline_is_the_mean_over_every_possible_peak():
    h, w = 12, 15
    masks = np.zeros((2, h, w), bool)
    masks[0, 6, 7] = True
    masks[1, 2:4, 10:14] = True
    for tol in (1.0, 1.5, 3.2):
        chance = random_baseline(masks, tolerance=tol)
        for i in range(2):
            # A uniformly random map peaks at each pixel with equal probability: average all of them.
            peaks = np.stack([peak_map(h, w, r, c) for r in range(h) for c in range(w)])
            exact = pointing_game(peaks, np.repeat(masks[i:i + 1], h * w, 0), tolerance=tol).hits.mean()
            assert chance[i] == pytest.approx(exact, abs=1e-12)
    assert random_baseline(masks[:1], tolerance=1.5)[0] == pytest.approx(9 / (h * w))  # the 3x3 block
    assert random_baseline(masks, tolerance=1).tolist() == pytest.approx([1 / (h * w), 8 / (h * w)])
    assert math.isnan(random_baseline(np.zeros((1, 4, 4), bool))[0])


def test_bad_input_is_named():
    s = np.zeros((2, 8, 8))
    with pytest.raises(InvalidImageError, match="masks have shape"):
        pointing_game(s, np.zeros((2, 8, 9), bool))
    with pytest.raises(InvalidImageError, match=r"\[B, H, W\]"):
        pointing_game(np.zeros((8, 8)), np.zeros((8, 8), bool))
    with pytest.raises(InvalidImageError, match="boolean"):
        energy_pointing_game(s, np.full((2, 8, 8), 0.5))
    with pytest.raises(InvalidImageError, match="NaN"):
        pointing_game(np.full((2, 8, 8), np.nan), np.zeros((2, 8, 8), bool))
    with pytest.raises(ConfigError, match="tolerance"):
        pointing_game(s, np.zeros((2, 8, 8), bool), tolerance=0)


def test_toyworld_masks():
    pm = np.zeros((6, 6), np.uint8)
    pm[1, :] = PART_IDS["body"]
    pm[2, 0] = PART_IDS["ladder"]
    pm[2, 1] = PART_IDS["cross"]
    pm[3, 2] = PART_IDS["door"]
    pm[3, 3] = PART_IDS["stop_sign"]
    pm[4, 4] = PART_IDS["wheel"]
    np.testing.assert_array_equal(vehicle_mask(pm), pm > 0)
    assert vehicle_mask(pm).sum() == 11
    classes = list(DEFAULT_CLASSES)  # fire_engine, ambulance, school_bus
    assert distinctive_parts("fire_engine", classes) == ["ladder"]
    assert distinctive_parts("ambulance", classes) == ["cross"]
    assert sorted(distinctive_parts("school_bus", classes)) == ["door", "stop_sign"]
    expected = np.zeros((6, 6), bool)
    expected[3, 2] = expected[3, 3] = True
    np.testing.assert_array_equal(distinctive_mask(pm, "school_bus", classes), expected)
    ladder = distinctive_mask(pm, "fire_engine", classes)
    assert ladder.sum() == 1 and ladder[2, 0]
    # Against the ambulance alone the fire engine's ladder is still its own, and the body never is.
    assert distinctive_parts("fire_engine", ["ambulance"]) == ["ladder"]
    assert distinctive_parts(STRUCTURE_PAIR[0], list(STRUCTURE_PAIR)) == []
    assert not distinctive_mask(pm, STRUCTURE_PAIR[0], list(STRUCTURE_PAIR)).any()
    with pytest.raises(UnknownClassError, match="submarine"):
        distinctive_mask(pm, "submarine", classes)
    with pytest.raises(InvalidImageError, match="part map"):
        vehicle_mask(np.zeros((2, 6, 6), np.uint8))


def test_masks_of_a_rendered_fire_engine():
    from vrx.data.toyworld import render, sample_scene

    _, pm = render(sample_scene("fire_engine", np.random.default_rng(3), n_distractors=0))
    ladder = distinctive_mask(pm, "fire_engine", list(DEFAULT_CLASSES))
    assert ladder.any() and (pm[ladder] == PART_IDS["ladder"]).all()
    assert ladder.sum() == (pm == PART_IDS["ladder"]).sum()
    assert vehicle_mask(pm).sum() > ladder.sum() and not vehicle_mask(pm)[0, 0]

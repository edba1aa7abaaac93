"""C-Deletion / C-Insertion on a tiny model for which one concept region is all that matters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vrx.errors import ConfigError, InvalidImageError
from vrx.metrics.concept_deletion import concept_deletion, orders_from_scores, random_orders
from vrx.models.adapter import ClassifierAdapter


class RegionReader(nn.Module):
    """Class 0's logit is 4 × the mean normalised value of the top-left 6×6 block; class 1's is 1."""

    def __init__(self) -> None:
        super().__init__()
        self.probe = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = self.probe(x)[:, :, :6, :6].mean((1, 2, 3))
        return torch.stack([4 * region, torch.ones_like(region)], 1)


@pytest.fixture(scope="module")
def adapter() -> ClassifierAdapter:
    return ClassifierAdapter(RegionReader(), input_size=16, mean=0.5, std=0.25, bottleneck="probe",
                             class_names=["region", "other"], name="reader", batch_size=3)


def box(r0: int, r1: int, c0: int, c1: int, size: int = 16) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[r0:r1, c0:c1] = True
    return m


def p0(logit0: float) -> float:
    return float(torch.softmax(torch.tensor([logit0, 1.0]), 0)[0])


FULL, HALF, GONE = p0(8.0), p0(4.0), p0(0.0)  # block intact (normalised 2), half filled, all filled


def scene() -> torch.Tensor:
    x = torch.full((1, 3, 16, 16), 0.3)
    x[:, :, :6, :6] = 1.0
    return x


def test_the_concept_that_matters_first_gives_the_better_curves(adapter):
    images = scene().repeat(2, 1, 1, 1)
    masks = [box(0, 6, 0, 6), box(8, 12, 8, 12), box(10, 14, 10, 16)]  # the block; two overlapping others
    good, bad = [0, 1, 2], [1, 2, 0]
    d = concept_deletion(adapter, images, [masks, masks], [good, bad], target=0)
    np.testing.assert_allclose(d.scores, [[FULL, GONE, GONE, GONE], [FULL, FULL, FULL, GONE]], atol=1e-6)
    i = concept_deletion(adapter, images, [masks, masks], [good, bad], target="region", mode="insertion")
    np.testing.assert_allclose(i.scores, [[GONE, FULL, FULL, FULL], [GONE, GONE, GONE, FULL]], atol=1e-6)
    np.testing.assert_allclose(d.auc, [(FULL / 2 + 2 * GONE + GONE / 2) / 3, (FULL / 2 + 2 * FULL + GONE / 2) / 3],
                               atol=1e-6)
    assert d.auc[0] < d.auc[1] and i.auc[0] > i.auc[1]
    assert d.mean_auc == pytest.approx(d.auc.mean())
    np.testing.assert_allclose(d.fractions, [[0, 1 / 3, 2 / 3, 1]] * 2)
    assert d.classes.tolist() == [0, 0] and d.step is None and d.mode == "deletion"


def test_overlaps_cumulative_removal_and_restoring_a_whole_concept(adapter):
    left, right, whole = box(0, 6, 0, 3), box(0, 6, 3, 6), box(0, 6, 0, 6)
    d = concept_deletion(adapter, scene(), [[left, right, whole]], [[0, 1, 2]], target=0)
    np.testing.assert_allclose(d.scores[0], [FULL, HALF, GONE, GONE], atol=1e-6)
    # Restoring `whole` first gives back every block pixel, though `left` and `right` are still out.
    i = concept_deletion(adapter, scene(), [[left, right, whole]], [[2, 0, 1]], target=0, mode="insertion")
    np.testing.assert_allclose(i.scores[0], [GONE, FULL, FULL, FULL], atol=1e-6)


def test_ragged_curves_mixed_sizes_and_images_without_concepts(adapter):
    g = torch.Generator().manual_seed(0)
    small = torch.rand((3, 16, 16), generator=g)
    big = torch.rand((3, 32, 32), generator=g)
    big_masks = [box(0, 12, 0, 12, 32), box(20, 32, 0, 32, 32)]
    res = concept_deletion(adapter, [small, big, small], [[box(0, 6, 0, 6)], big_masks, []],
                           [[0], [1, 0], []], target=None, mode="deletion")
    assert res.lengths.tolist() == [2, 3, 1] and res.scores.shape == (3, 3)
    assert np.isnan(res.scores[0, 2]) and np.isnan(res.scores[2, 1:]).all() and math.isnan(res.auc[2])
    assert res.mean_auc == pytest.approx(np.mean(res.auc[:2]))
    # Independently: paint the pixels by hand and ask the adapter (which resizes the 32 px image).
    fill = adapter.fill_value.view(3, 1, 1)
    gone_1 = torch.where(torch.from_numpy(big_masks[1]), fill, big)
    gone_both = torch.where(torch.from_numpy(big_masks[0] | big_masks[1]), fill, big)
    probs = adapter.probabilities([big, gone_1, gone_both])
    cls = int(adapter.logits(big[None]).argmax())
    np.testing.assert_allclose(res.scores[1], probs[:, cls].numpy(), atol=1e-6)
    fractions, scores = res.curve(1)
    np.testing.assert_allclose(fractions, [0, 0.5, 1])
    np.testing.assert_array_equal(scores, res.scores[1])
    assert res.curve(2)[1].shape == (1,)


def test_a_custom_fill_colour(adapter):
    # Filling with white (normalised 2) leaves the block as it was: the curve stays flat.
    masks = [[box(0, 6, 0, 6)]]
    res = concept_deletion(adapter, scene(), masks, [[0]], target=0, fill=1.0)
    np.testing.assert_allclose(res.scores[0], [FULL, FULL], atol=1e-6)


def test_order_helpers():
    orders = orders_from_scores([[0.1, 0.9, 0.5], [2.0, 2.0, 3.0], []])
    assert [o.tolist() for o in orders] == [[1, 2, 0], [2, 0, 1], []]
    a = random_orders([5, 3, 0], torch.Generator().manual_seed(7))
    b = random_orders([5, 3, 0], 7)
    assert [o.tolist() for o in a] == [o.tolist() for o in b]
    assert sorted(a[0].tolist()) == list(range(5)) and sorted(a[1].tolist()) == [0, 1, 2] and a[2].size == 0
    with pytest.raises(ConfigError, match="NaN"):
        orders_from_scores([[float("nan")]])


def test_bad_input_is_named(adapter):
    masks = [[box(0, 6, 0, 6), box(8, 12, 8, 12)]]
    with pytest.raises(ConfigError, match="permutation"):
        concept_deletion(adapter, scene(), masks, [[0, 0]], target=0)
    with pytest.raises(ConfigError, match="permutation"):
        concept_deletion(adapter, scene(), masks, [[0]], target=0)
    with pytest.raises(ConfigError, match="one of each per image"):
        concept_deletion(adapter, scene(), masks + masks, [[0, 1]], target=0)
    with pytest.raises(InvalidImageError, match="expected"):
        concept_deletion(adapter, scene(), [[box(0, 6, 0, 6, 20)]], [[0]], target=0)
    with pytest.raises(ConfigError, match="mode"):
        concept_deletion(adapter, scene(), masks, [[0, 1]], target=0, mode="remove")
    with pytest.raises(ConfigError, match="fill"):
        concept_deletion(adapter, scene(), masks, [[0, 1]], target=0, fill=(0.5, 0.5))

"""The amount-kept / re-identification trade-off on a tiny model that reads one block of the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vrx.errors import ConfigError, InvalidImageError
from vrx.metrics.tradeoff import DEFAULT_FRACTIONS, tradeoff_curve
from vrx.models.adapter import ClassifierAdapter

OTHERS = (1.05, 0.9, 0.8, 0.7, 0.6)  # fixed logits of classes 1-5


class BlockReader(nn.Module):
    """Class 0's logit is the mean normalised red value of the top-left 4×4 block (2 when intact)."""

    def __init__(self) -> None:
        super().__init__()
        self.probe = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self.probe(x)[:, 0, :4, :4].mean((1, 2))
        return torch.cat([block[:, None], torch.tensor(OTHERS).expand(x.shape[0], -1)], 1)


@pytest.fixture(scope="module")
def adapter() -> ClassifierAdapter:
    return ClassifierAdapter(BlockReader(), input_size=16, mean=0.5, std=0.25, bottleneck="probe",
                             class_names=list("abcdef"), name="block", batch_size=5)


def test_keeping_the_block_first_reidentifies_with_little_kept(adapter):
    g = torch.Generator().manual_seed(0)
    images = torch.rand((2, 3, 16, 16), generator=g) * 0.4
    images[:, 0, :4, :4] = 1.0
    good = torch.rand((2, 16, 16), generator=g)
    good[:, :4, :4] += 1.0  # the block's 16 pixels first
    fractions = (0.01, 0.02, 0.05, 0.1, 0.5, 0.9, 0.97, 1.0)
    n = np.floor(np.array(fractions) * 256 + 0.5)  # pixels kept: 3, 5, 13, 26, 128, 230, 248, 256
    res_good = tradeoff_curve(adapter, images, good, fractions)
    res_bad = tradeoff_curve(adapter, images, -good, fractions)
    np.testing.assert_allclose(res_good.kept, n / 256)
    assert res_good.classes.tolist() == [0, 0]
    # Block pixels kept, r: class 0 wins when r / 8 > 1.05 (r >= 9), is in the top 5 when r / 8 > 0.6.
    r_good, r_bad = np.minimum(n, 16), np.maximum(n - 240, 0)
    for res, r in ((res_good, r_good), (res_bad, r_bad)):
        np.testing.assert_array_equal(res.reidentified, np.tile(r >= 9, (2, 1)))
        np.testing.assert_array_equal(res.reidentified_top5, np.tile(r >= 5, (2, 1)))
        logits = np.stack([np.concatenate([[ri / 8], OTHERS]) for ri in r])
        p = np.exp(logits[:, 0]) / np.exp(logits).sum(1)
        np.testing.assert_allclose(res.probabilities, np.tile(p, (2, 1)), atol=1e-6)
    np.testing.assert_array_equal(res_good.rate, [0, 0, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(res_bad.rate, [0, 0, 0, 0, 0, 0, 0, 1])
    assert res_good.area() > res_bad.area()
    assert res_good.area() == pytest.approx(np.trapezoid(res_good.rate, n / 256))


def test_other_sizes_targets_and_the_default_grid(adapter):
    g = torch.Generator().manual_seed(1)
    images, sal = torch.rand((3, 3, 24, 20), generator=g), torch.rand((3, 24, 20), generator=g)
    res = tradeoff_curve(adapter, images, sal, target="b")
    assert res.reidentified.shape == (3, len(DEFAULT_FRACTIONS)) and res.classes.tolist() == [1, 1, 1]
    np.testing.assert_array_equal(res.fractions, DEFAULT_FRACTIONS)
    assert res.rate.shape == res.rate_top5.shape == (len(DEFAULT_FRACTIONS),)


def test_bad_input_is_named(adapter):
    images, sal = torch.rand((1, 3, 16, 16)), torch.rand((1, 16, 16))
    with pytest.raises(ConfigError, match="fractions must be numbers"):
        tradeoff_curve(adapter, images, sal, fractions=(0.5, 1.5))
    with pytest.raises(ConfigError, match="increase"):
        tradeoff_curve(adapter, images, sal, fractions=(0.5, 0.2))
    with pytest.raises(InvalidImageError, match="saliency has shape"):
        tradeoff_curve(adapter, images, sal[:, :8])

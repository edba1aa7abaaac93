"""Network dissection on a hand-made model whose units fire exactly on coloured squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vrx.data.toyworld import PART_IDS
from vrx.errors import ConfigError, InvalidImageError, ModelSpecError
from vrx.metrics.dissection import dissect

SIZE, N = 64, 8


class ColourUnits(nn.Module):
    """1×1 conv units: 0 red, 1 green, 2 bright background, 3 red again; then a 2×2 average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AvgPool2d(2))
        with torch.no_grad():
            self.features[0].weight.copy_(torch.tensor(
                [[1., -1., -1.], [-1., 1., -1.], [1., 1., 1.], [1., -1., -1.]]).view(4, 3, 1, 1))
            self.features[0].bias.copy_(torch.tensor([0., 0., -1.2, 0.]))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def world():
    """Images with a red 4×4 square (a stop sign, whose label also covers the 4×4 to its right) and a
    green 4×4 square (a wheel), at even positions away from the border, on a dim random background."""
    from vrx.models.adapter import ClassifierAdapter

    rng = np.random.default_rng(0)
    images = rng.uniform(0.3, 0.5, (N, 3, SIZE, SIZE)).astype(np.float32)
    maps = np.zeros((N, SIZE, SIZE), np.uint8)
    for i in range(N):
        r, c = 2 * rng.integers(2, 12), 2 * rng.integers(2, 12)  # red square at rows r..r+4, cols c..c+4
        gr, gc = 2 * rng.integers(18, 26), 2 * rng.integers(2, 26)  # green square well below it
        images[i, :, r:r + 4, c:c + 4] = np.array([1, 0, 0]).reshape(3, 1, 1)
        images[i, :, gr:gr + 4, gc:gc + 4] = np.array([0, 1, 0]).reshape(3, 1, 1)
        maps[i, r:r + 4, c:c + 8] = PART_IDS["stop_sign"]
        maps[i, gr:gr + 4, gc:gc + 4] = PART_IDS["wheel"]
    model = ColourUnits()
    adapter = ClassifierAdapter(model, input_size=SIZE, mean=0.0, std=1.0, bottleneck="features.1",
                                class_names=["a", "b"], name="colours")
    return adapter, torch.from_numpy(images), maps


def test_units_find_their_parts_with_the_known_iou(world):
    adapter, images, maps = world
    res = dissect(adapter, images, maps, ["features.1", "features.2"])
    full = res["features.1"]  # 64×64 maps, no upsampling: each colour unit's mask is its square
    si, wi = PART_IDS["stop_sign"] - 1, PART_IDS["wheel"] - 1
    assert full.best_part[:2] == ["stop_sign", "wheel"] and full.best_part[3] == "stop_sign"
    # The red square is half of the stop sign's label (16 of 32 px in every image); the green one is the wheel.
    np.testing.assert_allclose(full.iou[[0, 1, 3], [si, wi, si]], [0.5, 1.0, 0.5], atol=1e-12)
    assert full.best_iou[2] < 0.04  # the background unit detects nothing
    assert full.detectors.tolist() == [0, 1, 3] and full.detected_parts == ["wheel", "stop_sign"]
    assert full.summary() == {"layer": "features.1", "n_units": 4, "n_detectors": 3, "n_unique_parts": 2,
                              "parts": {"stop_sign": 2, "wheel": 1}}
    # After the 2×2 pool the bilinear upsampling spreads each square by one pixel (6×6 = 36 px):
    # wheel 16 / 36; stop sign: intersection 4 rows × 5 columns = 20, union 36 + 32 - 20 = 48.
    pooled = res["features.2"]
    np.testing.assert_allclose(pooled.iou[[0, 1], [si, wi]], [20 / 48, 16 / 36], atol=1e-12)
    assert pooled.detected_parts == ["wheel", "stop_sign"]
    assert res.summary()["quantile"] == 0.995 and len(res.summary()["layers"]) == 2


def test_thresholds_keep_the_top_half_percent(world):
    adapter, images, maps = world
    layer = dissect(adapter, images, maps, ["features.1"])["features.1"]
    acts = adapter.activations(images, "features.1")
    # Red and green cover 0.39 % of positions, below 0.5 %: their threshold is 0, so the mask is
    # exactly where they fire. The background unit's (distinct) values above its linearly
    # interpolated 0.995 quantile are those past position 0.995 * (n - 1) in sorted order.
    assert layer.thresholds[0] == 0 and layer.thresholds[1] == 0
    values = acts[:, 2].double().flatten()
    n = values.numel()
    pos = int(np.floor(0.995 * (n - 1)))
    top = values.sort().values[pos:]
    assert top.unique().numel() == top.numel()  # no ties around the threshold
    assert int((values > float(layer.thresholds[2])).sum()) == n - 1 - pos
    stricter = dissect(adapter, images, maps, ["features.1"], iou_threshold=0.6)["features.1"]
    assert stricter.detectors.tolist() == [1]


def test_bad_input_is_named(world):
    adapter, images, maps = world
    with pytest.raises(ConfigError, match="quantile"):
        dissect(adapter, images, maps, ["features.1"], quantile=99.5)
    with pytest.raises(ConfigError, match="part maps for"):
        dissect(adapter, images, maps[:3], ["features.1"])
    with pytest.raises(InvalidImageError, match="part map 0 is"):
        dissect(adapter, images, maps[:, :32], ["features.1"])
    with pytest.raises(InvalidImageError, match="labels outside"):
        dissect(adapter, images, maps + 20, ["features.1"])
    with pytest.raises(ConfigError, match="layers"):
        dissect(adapter, images, maps, "features.1")
    with pytest.raises(ModelSpecError, match="no layer"):
        dissect(adapter, images, maps, ["features.9"])
    with pytest.raises(ConfigError, match="N×K×h×w"):
        dissect(adapter, images, maps, ["head"])

"""Deletion / insertion: the batched metric against a plain per-image, per-step loop of the protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from vrx.errors import ConfigError, InvalidImageError, UnknownClassError
from vrx.metrics.deletion import deletion_insertion, trapezoid_auc
from vrx.models.adapter import ClassifierAdapter
from vrx.models.inputs import resize
from vrx.models.toycnn import ToyCNN

MEAN, STD = (0.45, 0.5, 0.55), (0.22, 0.25, 0.28)


@pytest.fixture(scope="module")
def small() -> ClassifierAdapter:
    model = ToyCNN(num_classes=4, widths=(4, 8, 8, 8, 8), seed=3)
    return ClassifierAdapter(model, input_size=(32, 32), mean=MEAN, std=STD, bottleneck=model.bottleneck,
                             class_names=["a", "b", "c", "d"], name="small", batch_size=16)


def reference_curve(adapter: ClassifierAdapter, image: torch.Tensor, sal: torch.Tensor, mode: str,
                    step: int, target: int | None = None) -> np.ndarray:
    """The protocol for one image, written out: cumulative in-place replacement, one forward per step."""
    model = adapter.model.eval()
    mean = torch.tensor(adapter.mean).view(1, 3, 1, 1)
    std = torch.tensor(adapter.std).view(1, 3, 1, 1)
    h, w = adapter.input_size
    x = image[None]
    s = sal[None, None]
    if tuple(x.shape[-2:]) != (h, w):
        x, s = resize(x, (h, w)), resize(s, (h, w))
    x = (x - mean) / std
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    kern = np.zeros((3, 3, 11, 11))
    for ch in range(3):
        kern[ch, ch] = gaussian_filter(delta, 5)
    blurred = F.conv2d(x, torch.from_numpy(kern.astype(np.float32)), padding=5)
    with torch.no_grad():
        c = int(torch.argmax(model(x))) if target is None else target
        start, finish = (x.clone(), torch.zeros_like(x)) if mode == "deletion" else (blurred, x.clone())
        order = np.argsort(-s.flatten().numpy(), kind="stable")
        n_steps = math.ceil(h * w / step)
        out = np.empty(n_steps + 1)
        for i in range(n_steps + 1):
            out[i] = float(torch.softmax(model(start), 1)[0, c])
            coords = torch.from_numpy(order[step * i:step * (i + 1)].copy())
            start.view(1, 3, -1)[0][:, coords] = finish.view(1, 3, -1)[0][:, coords]
    return out


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("size,step", [((32, 32), None), ((40, 52), 100)])
def test_matches_the_protocol_written_as_a_loop(small, mode, size, step):
    g = torch.Generator().manual_seed(1)
    images = torch.rand((3, 3, *size), generator=g)
    sal = torch.rand((3, *size), generator=g)  # continuous values: no ties
    res = deletion_insertion(small, images, sal, mode=mode, step=step, batch_size=7)
    used = 32 if step is None else step
    n_steps = math.ceil(32 * 32 / used)
    assert res.scores.shape == (3, n_steps + 1) and res.step == used and res.mode == mode
    np.testing.assert_allclose(res.fractions, np.arange(n_steps + 1) / n_steps)
    for i in range(3):
        ref = reference_curve(small, images[i], sal[i], mode, used)
        np.testing.assert_allclose(res.scores[i], ref, atol=1e-6, rtol=0)
        assert res.auc[i] == pytest.approx((ref.sum() - ref[0] / 2 - ref[-1] / 2) / (len(ref) - 1), abs=1e-6)
    predicted = small.logits(images).argmax(1).numpy()
    np.testing.assert_array_equal(res.classes, predicted)
    assert res.mean_auc == pytest.approx(res.auc.mean())


@pytest.mark.slow
def test_matches_the_protocol_on_efficientnet_and_a_photo(effnet, photos):
    image = torch.from_numpy(photos["astronaut"]).permute(2, 0, 1)  # 512×512, resized to 224
    sal = torch.rand((1, *image.shape[1:]), generator=torch.Generator().manual_seed(0))
    for mode in ("deletion", "insertion"):
        # One input per forward, as the loop does: batched float32 convolutions of this network differ
        # from single ones by up to ~1e-6 (measured), which is numerics, not protocol.
        res = deletion_insertion(effnet, image[None], sal, mode=mode, step=1792, batch_size=1)
        np.testing.assert_allclose(res.scores[0], reference_curve(effnet, image, sal[0], mode, 1792),
                                   atol=1e-6, rtol=0)


def test_explicit_target_is_scored(small):
    g = torch.Generator().manual_seed(2)
    images, sal = torch.rand((2, 3, 32, 32), generator=g), torch.rand((2, 32, 32), generator=g)
    res = deletion_insertion(small, images, sal, mode="insertion", step=256, target=[1, "c"])
    np.testing.assert_array_equal(res.classes, [1, 2])
    for i, t in enumerate((1, 2)):
        np.testing.assert_allclose(res.scores[i], reference_curve(small, images[i], sal[i], "insertion", 256, t),
                                   atol=1e-6, rtol=0)


def test_ties_go_in_raster_order(small):
    g = torch.Generator().manual_seed(4)
    images = torch.rand((1, 3, 32, 32), generator=g)
    flat = torch.zeros((1, 32, 32))  # every pixel tied: the order is raster order
    res = deletion_insertion(small, images, flat, step=32)
    rows = torch.arange(32, dtype=torch.float32).flip(0).view(1, 32, 1).expand(1, 32, 32)
    by_rows = deletion_insertion(small, images, rows.clone(), step=32)  # top row first, then the next
    np.testing.assert_allclose(res.scores, by_rows.scores, atol=1e-7, rtol=0)


class RegionReader(nn.Module):
    """Class 0's logit is the mean normalised red value of the top-left 8×8 block; class 1's is fixed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = x[:, 0, :8, :8].mean((1, 2))
        return torch.stack([3 * region, torch.full_like(region, 1.0)], 1)


@pytest.fixture(scope="module")
def region_adapter() -> ClassifierAdapter:
    model = RegionReader()
    model.probe = nn.Identity()  # an adapter needs a bottleneck layer; it is never read here
    return ClassifierAdapter(model, input_size=(32, 32), mean=0.5, std=0.25, bottleneck="probe",
                             class_names=["region", "other"], name="region")


def test_a_map_ranking_the_read_region_first_wins_both_games(region_adapter):
    g = torch.Generator().manual_seed(5)
    images = torch.rand((2, 3, 32, 32), generator=g) * 0.3
    images[:, 0, :8, :8] = 1.0  # bright red block: class 0 wins on the clean image
    good = torch.rand((2, 32, 32), generator=g)
    good[:, :8, :8] += 1.0  # the block first
    bad = -good  # the block last
    assert region_adapter.logits(images).argmax(1).tolist() == [0, 0]
    d_good = deletion_insertion(region_adapter, images, good, "deletion")
    d_bad = deletion_insertion(region_adapter, images, bad, "deletion")
    i_good = deletion_insertion(region_adapter, images, good, "insertion")
    i_bad = deletion_insertion(region_adapter, images, bad, "insertion")
    assert (d_good.classes == 0).all()
    assert (d_good.auc < d_bad.auc).all() and (i_good.auc > i_bad.auc).all()
    # Deleting the 64 block pixels first (two steps of 32) drops class 0 to the substrate's value.
    p_gone = float(torch.softmax(torch.tensor([0.0, 1.0]), 0)[0])
    np.testing.assert_allclose(d_good.scores[:, 2:], p_gone, atol=1e-6)
    np.testing.assert_allclose(d_bad.scores[:, -1], p_gone, atol=1e-6)


def test_trapezoid_auc():
    assert trapezoid_auc(np.array([1.0, 0.0])) == 0.5
    assert trapezoid_auc(np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(0.5)
    assert math.isnan(trapezoid_auc(np.array([1.0])))


def test_bad_input_is_named(small):
    images, sal = torch.rand((2, 3, 32, 32)), torch.rand((2, 32, 32))
    with pytest.raises(InvalidImageError, match="saliency has shape"):
        deletion_insertion(small, images, sal[:1])
    with pytest.raises(InvalidImageError, match="saliency has shape"):
        deletion_insertion(small, images, torch.rand((2, 32, 31)))
    with pytest.raises(InvalidImageError, match="NaN"):
        deletion_insertion(small, images, torch.full((2, 32, 32), float("nan")))
    with pytest.raises(InvalidImageError, match=r"\[0, 1\]"):
        deletion_insertion(small, images * 255, sal)
    with pytest.raises(ConfigError, match="mode"):
        deletion_insertion(small, images, sal, mode="del")
    with pytest.raises(ConfigError, match="step"):
        deletion_insertion(small, images, sal, step=0)
    with pytest.raises(ConfigError, match="substrate"):
        deletion_insertion(small, images, sal, substrate="noise")
    with pytest.raises(ConfigError, match="substrate returned"):
        deletion_insertion(small, images, sal, substrate=lambda x: x[:, :1])
    with pytest.raises(ConfigError, match="batch_size"):
        deletion_insertion(small, images, sal, batch_size=0)
    with pytest.raises(UnknownClassError):
        deletion_insertion(small, images, sal, target=9)

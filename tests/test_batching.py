"""Batches sized by a memory budget (vrx.models.batching) and their use by the adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vrx.concepts.config import ConceptConfig
from vrx.concepts.features import PatchFeaturizer
from vrx.concepts.segmentation import SegmentationConfig
from vrx.errors import ConfigError
from vrx.models.adapter import ClassifierAdapter
from vrx.models.batching import (DEFAULT_FRACTION, MAX_BATCH_CPU, BatchSizer, MemoryBudget, budget_memory,
                                 cache_size, probe_bytes_per_image)

CLASSES = ["a", "b", "c"]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                                      nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(self.features(x))


def adapter(**kw) -> ClassifierAdapter:
    return ClassifierAdapter(kw.pop("model", None) or Tiny(), input_size=(16, 16), mean=(0.5,) * 3,
                             std=(0.25,) * 3, bottleneck="features.3", class_names=CLASSES, name="tiny", **kw)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_cpu_probe_counts_each_distinct_output_once_plus_the_input():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    x = torch.zeros(2, 3, 8, 8)
    with torch.inference_mode():
        per, largest = probe_bytes_per_image(model, model, x)
    # conv out + relu out (the Sequential's output is relu's tensor: counted once) + the input, per image
    assert per == 4 * 8 * 8 * 4 + 4 * 8 * 8 * 4 + 3 * 8 * 8 * 4
    assert largest == 4 * 8 * 8 * 4


def test_cpu_batches_fit_the_cache_unless_told_not_to():
    largest = 6 * 16 * 16 * 4  # the Tiny model's biggest activation per image (features.2 / .3)
    capped = adapter(memory_budget=MemoryBudget(bytes=10 << 20, cache_bytes=10 * largest, max_batch=500))
    assert capped.batch_size == 10
    free = adapter(memory_budget=MemoryBudget(bytes=10 << 20, cache_bytes=10 * largest, fit_cache=False,
                                              max_batch=500))
    assert free.batch_size == min((10 << 20) // free.sizer.bytes_per_image((3, 16, 16)), 500) > 10
    assert adapter(memory_budget=MemoryBudget(bytes=10 << 20)).batch_size == MAX_BATCH_CPU
    assert cache_size() is None or cache_size() > 0


def test_smaller_budget_gives_smaller_batch_in_proportion():
    big, small = adapter(memory_budget="1MB"), adapter(memory_budget="100KB")  # both below the cap
    per = None
    for a, total in ((big, 1 << 20), (small, 100 << 10)):
        bs = a.batch_size
        per = a.sizer.bytes_per_image((3, 16, 16))
        assert bs == min(total // per, MAX_BATCH_CPU)
    assert 1 <= small.batch_size < big.batch_size
    assert per > 16 * 16 * 6 * 4  # at least the bottleneck's own output


def test_budget_is_measured_once_per_input_shape():
    a = adapter(memory_budget="200KB")
    x = images(5)
    a.logits(x)
    a.activations(x)  # (also probes which layers run once, a forward of its own)
    calls = a.model.calls
    a.logits(x)
    a.activations(x)
    assert a.batch_size >= 5 and a.model.calls - calls == 2  # one batch each, no new probe
    a.logits(torch.rand(3, 3, 32, 32))  # another shape: one more probe, then its batch
    assert a.sizer.bytes_per_image((3, 32, 32)) > a.sizer.bytes_per_image((3, 16, 16))


def test_explicit_batch_size_always_wins():
    a = adapter(batch_size=3, memory_budget="1KB")  # a budget too small for one image is never consulted
    assert a.batch_size == 3 and a.batch_size_for((3, 64, 64)) == 3
    assert a.batch_size_for((3, 16, 16), batch_size=7) == 7
    b = adapter(memory_budget="100KB")
    assert b.batch_size_for((3, 16, 16), batch_size=2) == 2
    assert b.replace(name="other").sizer.budget == b.sizer.budget
    assert b.replace(batch_size=5).batch_size == 5


def test_results_identical_whatever_the_batch_size():
    x = images(23)
    sized = adapter(memory_budget="60KB")
    assert 1 < sized.batch_size < 23  # several batches, one of them partial
    want_logits, want_acts = adapter(batch_size=1).logits(x), adapter(batch_size=1).activations(x)
    for a in (sized, adapter(batch_size=23), adapter(batch_size=4)):
        torch.testing.assert_close(a.logits(x), want_logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.activations(x), want_acts, rtol=1e-5, atol=1e-6)
    grads = [a.layer_gradients(x, 1).gradients for a in (sized, adapter(batch_size=1))]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_patch_featurizer_uses_the_adapters_sizing_and_agrees_with_fixed_batches():
    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    seg = SegmentationConfig(n_segments=(4, 9))
    sized = PatchFeaturizer(adapter(memory_budget="60KB"), seg)
    fixed = PatchFeaturizer(adapter(), seg, batch_size=2)
    assert sized.batch_size is None and ConceptConfig().batch_size is None
    np.testing.assert_allclose(sized(image).features, fixed(image).features, rtol=1e-5, atol=1e-6)


def test_default_budget_is_a_fraction_of_the_hosts_memory_capped():
    assert adapter().sizer.budget == MemoryBudget(fraction=DEFAULT_FRACTION, fit_cache=True)
    assert budget_memory("cpu") > 0
    a = adapter(memory_budget=MemoryBudget(fit_cache=False))
    bs = a.batch_size
    expected = min(int(DEFAULT_FRACTION * budget_memory("cpu")) // a.sizer.bytes_per_image((3, 16, 16)),
                   MAX_BATCH_CPU)
    assert bs == expected  # the host's total RAM: the same batch on every run of this machine
    assert adapter(memory_budget=MemoryBudget(max_batch=5)).batch_size <= 5



@pytest.mark.parametrize("text, want", [("2GB", MemoryBudget(bytes=2 << 30)), ("512MiB", MemoryBudget(bytes=512 << 20)),
                                        ("25%", MemoryBudget(fraction=0.25)), ("0.3", MemoryBudget(fraction=0.3)),
                                        ("1000000", MemoryBudget(bytes=1000000)), (0.5, MemoryBudget(fraction=0.5)),
                                        (None, MemoryBudget())])
def test_budget_parsing(text, want):
    assert MemoryBudget.parse(text) == want


@pytest.mark.parametrize("bad", ["0", "0%", "150%", "1.5", "-1GB", "lots", "2 parsecs", True, 0, -5, 0.0, 2.0, ""])
def test_nonsense_budget_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="memory budget"):
        adapter(memory_budget=bad)


def test_budget_below_one_image_is_a_clear_error():
    a = adapter(memory_budget="1KB")
    with pytest.raises(ConfigError, match="less than one 3x16x16 image needs"):
        a.logits(images(2))


def test_bad_explicit_batch_sizes():
    with pytest.raises(ConfigError, match="batch_size"):
        adapter(batch_size=0)
    with pytest.raises(ConfigError, match="batch_size"):
        adapter().logits(images(2), batch_size=0)
    with pytest.raises(ConfigError, match="batch_size"):
        ConceptConfig(batch_size=0)
    with pytest.raises(ConfigError, match="max_batch"):
        BatchSizer(MemoryBudget(max_batch=0))


def test_cli_memory_budget(tmp_path):
    from vrxcli import save_png, vrx

    (tmp_path / "net.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), "
        "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    image = save_png(tmp_path / "x.png", 20, 20)
    model = ["--model", f"python:{tmp_path / 'net.py'}:make", "--input-size", "16", "--mean", "0.5", "--std",
             "0.25", "--bottleneck", "1", "--labels", tmp_path / "labels.txt"]
    ok = vrx("classify", *model, "--memory-budget", "30%", image)
    assert ok.rc == 0 and ok.out.count("%") == 2, ok
    for bad, says in (("lots", "neither a fraction"), ("150%", "fraction must be in (0, 1]"),
                      ("1KB", "less than one 3x16x16 image needs")):
        res = vrx("classify", *model, "--memory-budget", bad, image)
        assert res.clean() and res.rc == 2 and says in res.err and len(res.err.strip().splitlines()) == 1, res

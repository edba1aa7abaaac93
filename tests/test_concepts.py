"""Visual Concept Extractor mechanics on toyworld: artifacts, determinism, cache, bank round trip, errors.

These tests use an untrained toy CNN, so they check how discovery works, not what it finds;
what it finds on a trained model is measured by bench/bench_concepts.py.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vrx.concepts.bank import Concept, ConceptBank, Member
from vrx.concepts.config import ClusterConfig, ConceptConfig, GradCamConfig, TCAVConfig
from vrx.run import Run
from vrx.stages import discover
from vrx.concepts.extractor import ConceptExtractor, DiscoveryReport
from vrx.data.images import load_image_folder
from vrx.errors import ArtifactError, ConfigError, EmptyFolderError, InvalidImageError, UnknownClassError
from vrx.runtime import DISCOVERY_THREADS, threads

# The untrained network's Grad-CAM is fragmented, so no patch lies wholly inside it; 80% inside
# keeps some.
FAST = ConceptConfig(gradcam=GradCamConfig(min_inside=0.8),
                     cluster=ClusterConfig(n_clusters=4, n_init=1, n_members=10, min_size_fraction=0.5),
                     tcav=TCAVConfig(n_random_sets=4, random_set_size=10, n_concepts=2))


@pytest.fixture(scope="module")
def toy_images(toy_world):
    return load_image_folder(toy_world, max_images_per_class=6)


@pytest.fixture(scope="module")
def discovered(toy_adapter, toy_images, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    with threads(**DISCOVERY_THREADS):
        bank, summary = discover(run, toy_adapter, toy_images, FAST, show_progress=False)
    return run, bank, summary


def test_discovery_writes_bank_galleries_summary_and_purity(discovered):
    run, bank, summary = discovered
    out = run / "concepts"
    for name in ("bank.json", "bank.safetensors", "summary.json", "purity.json"):
        assert (out / name).exists(), name
    for cls in bank.class_names:
        assert (out / cls / "gallery.png").stat().st_size > 1000
        stats = summary["per_class"][cls]
        assert 0 < stats["patches_kept"] < stats["patches"]  # the Grad-CAM filter removes some
        for row in bank.candidates[cls]:
            assert 0 <= row["tcav"] <= 1 and 0 <= row["p_value"] <= 1 and row["p_value"] >= row["p_raw"]
        chosen = bank[cls]
        assert [c.rank for c in chosen] == list(range(1, len(chosen) + 1))
        assert all(c.significant for c in chosen)
        assert [c.tcav for c in chosen] == sorted((c.tcav for c in chosen), reverse=True)
    assert set(summary["purity"]["gradcam"]) == set(bank.class_names)


def test_same_seed_same_result_and_nothing_recomputed(toy_adapter, toy_images, discovered):
    run, bank, _ = discovered
    again, _ = discover(run, toy_adapter, toy_images, FAST, show_progress=False)
    assert again.candidates == bank.candidates
    for cls in bank.class_names:
        for a, b in zip(again[cls], bank[cls]):
            np.testing.assert_array_equal(a.center, b.center)
    assert again.stats["cache"]["misses"] == 0 and again.stats["cache"]["hits"] > 0


def test_gradcam_filter_keeps_fewer_patches(toy_adapter, toy_images, tmp_path):
    cls = toy_images.classes[0]
    items = list(toy_images.paths[cls][:3])
    off = dataclasses.replace(FAST, gradcam=dataclasses.replace(FAST.gradcam, enabled=False))
    tables = [ConceptExtractor(toy_adapter, cfg, cache_dir=tmp_path, show_progress=False)
              ._class_patches(cls, toy_adapter.class_id(cls), items, DiscoveryReport()) for cfg in (off, FAST)]
    assert len(tables[0].features) == tables[0].n_candidates == tables[1].n_candidates
    assert 0 < len(tables[1].features) < len(tables[0].features)


def _hand_made_bank() -> ConceptBank:
    rng = np.random.default_rng(0)
    members = [Member(image=f"img{i}.png", resolution=i % 3, bbox=(2, 3, 9, 7),
                      mask=rng.random((7, 4)) > 0.4, image_shape=(16, 16), distance=0.1 * i) for i in range(5)]
    concept = Concept(class_name="a", rank=1, cluster=3, center=rng.normal(size=6).astype(np.float32),
                      tcav=0.9, tcav_std=0.05, p_value=1e-4, significant=True, cav_accuracy=0.97, size=40,
                      members=members, thumbnails=rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8),
                      cluster_distances=np.sort(rng.random(40)).astype(np.float32))
    return ConceptBank(concepts={"a": [concept], "b": []}, model_id="m", layer="features.4",
                       config=FAST.to_dict(), stats={"x": 1})


def test_bank_round_trips_exactly(tmp_path, discovered):
    for bank in (_hand_made_bank(), discovered[1]):
        bank.save(tmp_path / "bank")
        again = ConceptBank.load(tmp_path / "bank")
        assert again.class_names == bank.class_names and again.candidates == bank.candidates
        for cls in bank.class_names:
            for a, b in zip(bank[cls], again[cls]):
                np.testing.assert_array_equal(a.center, b.center)
                np.testing.assert_array_equal(a.thumbnails, b.thumbnails)
                np.testing.assert_array_equal(a.cluster_distances, b.cluster_distances)
                assert (a.tcav, a.p_value, a.cluster, a.size, a.rank) == (b.tcav, b.p_value, b.cluster, b.size, b.rank)
                assert a.importance == b.importance or (np.isnan(a.importance) and np.isnan(b.importance))
                for ma, mb in zip(a.members, b.members):
                    assert (ma.image, ma.bbox, ma.resolution, ma.distance) == (mb.image, mb.bbox, mb.resolution, mb.distance)
                    np.testing.assert_array_equal(ma.mask, mb.mask)
                    assert ma.full_mask().sum() == ma.mask.sum()
    assert all(np.isfinite(c.importance) for cs in discovered[1].concepts.values() for c in cs)
    hand = _hand_made_bank()
    assert hand["a"][0].radius(1.0) == pytest.approx(hand["a"][0].cluster_distances.max())
    with pytest.raises(UnknownClassError):
        hand["zebra"]


def test_bank_config_is_typed_and_old_banks_load(tmp_path):
    bank = _hand_made_bank()
    assert isinstance(bank.config, ConceptConfig) and bank.config == FAST
    bank.save(tmp_path)
    meta = json.loads((tmp_path / "bank.json").read_text())
    assert meta["config"] == json.loads(json.dumps(FAST.to_dict()))  # written as its dict
    assert ConceptBank.load(tmp_path).config == FAST
    # A bank.json from before a key existed: the key takes its default.
    del meta["config"]["tcav"]["activations"], meta["config"]["segmentation"]["features"], meta["config"]["seed"]
    (tmp_path / "bank.json").write_text(json.dumps(meta))
    old = ConceptBank.load(tmp_path).config
    assert old.tcav.activations == "patch" and old.segmentation.features == "crop" and old.seed == 0
    assert old.cluster == FAST.cluster
    meta["config"]["nonsense"] = 1
    (tmp_path / "bank.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="nonsense"):
        ConceptBank.load(tmp_path)


def test_corrupt_bank_is_named(tmp_path):
    _hand_made_bank().save(tmp_path)
    (tmp_path / "bank.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ArtifactError, match="bank.safetensors"):
        ConceptBank.load(tmp_path)


def test_bad_input_is_named(toy_adapter, toy_images, discovered):
    ex = ConceptExtractor(toy_adapter, FAST, cache_dir=Run(discovered[0]).patch_cache_dir, show_progress=False)
    cls = toy_images.classes[0]
    some, random = list(toy_images.paths[cls][:2]), list(toy_images.random_paths)
    with pytest.raises(UnknownClassError, match="zebra"):
        ex.fit({"zebra": some}, random)
    with pytest.raises(EmptyFolderError, match="random"):
        ex.fit({cls: some}, [])
    with pytest.raises(EmptyFolderError, match=cls):
        ex.fit({cls: []}, random)
    with pytest.raises(InvalidImageError, match="too small"):
        ex.fit({cls: [np.zeros((4, 4, 3), np.float32)] * 2}, random)


def test_images_smaller_than_the_input_are_warned_about(toy_adapter, caplog):
    from vrx.concepts.inputs import iter_images

    small = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    with caplog.at_level("WARNING"):
        list(iter_images([small], toy_adapter.input_size))
    assert "array:0" in caplog.text and "smaller than the model input" in caplog.text


def test_discover_cli_presets():
    import argparse

    from vrx.cli import discover as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    base = ["discover", "--model", "toy:none", "--images", "x", "--out", "y"]
    assert cli.discovery_config(parser.parse_args(base)) == ConceptConfig()
    toy = cli.discovery_config(parser.parse_args([*base, "--preset", "toyworld", "--seed", "3", "--no-gradcam"]))
    want = ConceptConfig.toyworld(3)
    assert toy == dataclasses.replace(want, gradcam=dataclasses.replace(want.gradcam, enabled=False))
    with pytest.raises(ConfigError, match="give one"):
        cli.discovery_config(parser.parse_args([*base, "--preset", "toyworld", "--config", "c.json"]))


def test_selection_skips_duplicates_and_names_the_rule():
    from vrx.concepts.selection import coverage, footprints, overlap, select

    a = np.zeros((8, 8), bool)
    a[:4] = True
    b = a.copy()
    b[:, :2] = False
    fa = footprints([(i, a) for i in range(4)])
    fb = footprints([(i, b) for i in range(4)])
    assert overlap(fa, fb) == 1.0                              # b lies wholly on a
    assert overlap(fa, footprints([(i, ~a) for i in range(4)])) == 0.0
    assert overlap(fa, footprints([(0, b), (1, b)])) == 0.0     # too few shared images to judge
    assert coverage(np.array([[0.0, 0.0], [3.0, 0.0]]), np.zeros(2), 1.0) == 0.5
    sim = {(1, 0): 0.9, (2, 0): 0.1, (3, 0): 0.2, (3, 2): 0.3}
    kept, why = select([0, 1, 2, 3, 4], 3, 0.5, lambda c, k: sim.get((c, k), 0.0), name=lambda i: f"c{i}")
    assert kept == [0, 2, 3]
    assert why == {1: "duplicate of c0 (similarity 0.90 > 0.5)", 4: "not in the top 3"}


def test_masking_effect_measures_the_class_logit_drop():
    import torch
    from torch import nn

    from vrx.concepts.importance import effect_significance, masking_effect
    from vrx.models.adapter import ClassifierAdapter

    class Corner(nn.Module):  # class 0's logit is the mean of the top-left quarter's red channel
        def __init__(self):
            super().__init__()
            self.features = nn.Identity()

        def forward(self, x):
            q = self.features(x)[:, 0, :8, :8].mean((1, 2))
            return torch.stack([q, torch.zeros_like(q), -q], 1)

    adapter = ClassifierAdapter(Corner(), input_size=16, mean=0.0, std=1.0, bottleneck="features",
                                class_names=["a", "b", "c"])
    image = np.ones((16, 16, 3), np.float32)
    corner = np.zeros((16, 16), bool)
    corner[:4, :4] = True
    elsewhere = np.zeros((16, 16), bool)
    elsewhere[12:, 12:] = True
    drops = masking_effect(adapter, [image], [(0, corner), (0, elsewhere)], class_id=0)
    np.testing.assert_allclose(drops, [0.25, 0.0], atol=1e-6)      # 16 of 64 corner pixels set to 0
    # Against the mean of the other classes (b: 0, c: -q): a part that moves them too counts less.
    margin = masking_effect(adapter, [image], [(0, corner)], class_id=0, others=[0, 1, 2])
    np.testing.assert_allclose(margin, [0.25 - (0 - 0.25) / 2], atol=1e-6)
    assert effect_significance(np.array([0.2, 0.3, 0.25, 0.22])) < 0.01
    assert effect_significance(np.array([0.1, -0.1, 0.05, -0.05])) > 0.3


def test_acceptance_rules_name_what_they_reject():
    from vrx.concepts.clustering import rejection

    assert rejection(10, 10, 50, min_size=20) == "size: 10 patches <= minimum 20"
    assert rejection(200, 12, 50, min_size=20) == "spread: 200 patches from only 12 of 50 images"
    assert rejection(60, 31, 50, min_size=20) is None


def test_concepts_rank_by_masking_effect_and_every_candidate_says_why(discovered):
    bank = discovered[1]
    for cls in bank.class_names:
        imps = [c.importance for c in bank[cls]]
        assert imps == sorted(imps, reverse=True)
        chosen = [r for r in bank.candidates[cls] if r["selection"] == "chosen"]
        assert sorted(r["cluster"] for r in chosen) == sorted(c.cluster for c in bank[cls])
        for r in bank.candidates[cls]:
            assert r["selection"] == "chosen" or r["selection"].startswith(("not significant", "not evidence", "duplicate of", "not in the top"))
        assert set(bank.stats["per_class"][cls]["rejected"]) >= {f"cluster {r['cluster']}" for r in bank.candidates[cls] if r["selection"] != "chosen"}


def test_discover_summary_counts_the_rules_that_left_clusters_out():
    from vrx.cli.discover import rejection_counts

    text = rejection_counts({"cluster 1": "size: 9 patches <= minimum 20", "cluster 2": "size: 3 patches <= minimum 20",
                             "cluster 5": "not in the top 4"})
    assert text == "2 size (e.g. size: 9 patches <= minimum 20), 1 not in the top 4"

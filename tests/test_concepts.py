"""Visual Concept Extractor on toyworld with the session's toy CNN: bank, determinism, errors, purity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vrx.concepts.bank import ConceptBank
from vrx.concepts.config import ClusterConfig, ConceptConfig, TCAVConfig
from vrx.concepts.discover import discover
from vrx.concepts.extractor import ConceptExtractor, DiscoveryReport
from vrx.concepts.features import PatchFeaturizer
from vrx.data.images import load_image_folder
from vrx.errors import EmptyFolderError, UnknownClassError, VRXError

# Small but real: few clusters and random sets keep the suite fast on two cores.
FAST = ConceptConfig(cluster=ClusterConfig(n_clusters=8, n_init=2, n_members=20),
                     tcav=TCAVConfig(n_random_sets=6, random_set_size=20, n_concepts=3))


@pytest.fixture(scope="module")
def toy_images(toy_world):
    return load_image_folder(toy_world, max_images_per_class=12)


@pytest.fixture(scope="module")
def toy_bank(toy_adapter, toy_images, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    bank, summary = discover(toy_adapter, toy_images, run, FAST, show_progress=False)
    return run, bank, summary


def test_discovery_writes_bank_gallery_summary_and_purity(toy_bank):
    run, bank, summary = toy_bank
    assert (run / "concepts" / "bank.json").exists() and (run / "concepts" / "bank.safetensors").exists()
    for cls in bank.class_names:
        assert (run / "concepts" / cls / "gallery.png").stat().st_size > 1000
        assert summary["per_class"][cls]["patches_kept"] <= summary["per_class"][cls]["patches"]
        for rank, c in enumerate(bank[cls], start=1):
            assert c.rank == rank and c.significant and c.p_value < 0.05
            assert len(c.members) >= 2 and c.center.shape == (toy_bank[1].feature_dim,)
            # members nearest first; TCAV ranks descending
        assert [c.tcav for c in bank[cls]] == sorted((c.tcav for c in bank[cls]), reverse=True)
    assert sum(len(cs) for cs in bank.concepts.values()) >= 2, "the toy CNN should yield concepts"
    purity = summary["purity"]["gradcam"]
    assert set(purity) == set(bank.class_names)
    assert (run / "concepts" / "purity.json").exists()


def test_bank_round_trips_exactly(toy_bank, tmp_path):
    _, bank, _ = toy_bank
    bank.save(tmp_path)
    again = ConceptBank.load(tmp_path)
    assert again.class_names == bank.class_names and again.model_id == bank.model_id
    for cls in bank.class_names:
        for a, b in zip(bank[cls], again[cls]):
            np.testing.assert_array_equal(a.center, b.center)
            np.testing.assert_array_equal(a.thumbnails, b.thumbnails)
            np.testing.assert_array_equal(a.cluster_distances, b.cluster_distances)
            assert (a.tcav, a.p_value, a.cluster, a.size) == (b.tcav, b.p_value, b.cluster, b.size)
            for ma, mb in zip(a.members, b.members):
                assert (ma.image, ma.bbox, ma.resolution) == (mb.image, mb.bbox, mb.resolution)
                np.testing.assert_array_equal(ma.mask, mb.mask)
                assert ma.full_mask().sum() == ma.mask.sum() > 0


def test_members_can_be_recomputed_from_the_bank_alone(toy_adapter, toy_bank):
    """A member's stored mask and image reproduce its feature's distance to the centre."""
    from vrx.data.images import load_image

    _, bank, _ = toy_bank
    concept = next(cs[0] for cs in bank.concepts.values() if cs)
    member = concept.members[0]
    feat = PatchFeaturizer(toy_adapter, FAST.segmentation)
    from vrx.concepts.segmentation import Segment

    seg = Segment(mask=member.full_mask(), bbox=member.bbox, resolution=member.resolution)
    acts = toy_adapter.activations(feat.patches(load_image(member.image), [seg]))
    d = np.linalg.norm(acts.flatten(2).mean(2)[0].numpy() - concept.center)
    assert d == pytest.approx(member.distance, rel=1e-3, abs=1e-4)


def test_same_seed_same_bank(toy_adapter, toy_images, toy_bank, tmp_path):
    _, bank, _ = toy_bank
    # The second run reads every patch feature from the first run's cache: nothing recomputed.
    again, _ = discover(toy_adapter, toy_images, toy_bank[0], FAST, show_progress=False)
    for cls in bank.class_names:
        assert [c.cluster for c in again[cls]] == [c.cluster for c in bank[cls]]
        for a, b in zip(again[cls], bank[cls]):
            np.testing.assert_array_equal(a.center, b.center)
            assert a.tcav == b.tcav and a.p_value == b.p_value
    assert again.stats["cache"]["misses"] == 0 and again.stats["cache"]["hits"] > 0


def test_gradcam_filter_keeps_fewer_patches(toy_adapter, toy_images, tmp_path):
    off = dataclasses.replace(FAST, gradcam=dataclasses.replace(FAST.gradcam, enabled=False))
    ex = ConceptExtractor(toy_adapter, off, cache_dir=tmp_path, show_progress=False)
    cls = toy_images.classes[0]
    table_off = ex._class_patches(cls, toy_adapter.class_id(cls), toy_images.paths[cls][:4],
                                  DiscoveryReport())
    on = ConceptExtractor(toy_adapter, FAST, cache_dir=tmp_path, show_progress=False)
    table_on = on._class_patches(cls, toy_adapter.class_id(cls), toy_images.paths[cls][:4],
                                 DiscoveryReport())
    assert len(table_off.features) == table_off.n_candidates
    assert 0 < len(table_on.features) < len(table_off.features)


def test_bad_input_is_named(toy_adapter, toy_images, tmp_path):
    ex = ConceptExtractor(toy_adapter, FAST, show_progress=False)
    cls = toy_images.classes[0]
    with pytest.raises(UnknownClassError):
        ex.fit({"zebra": list(toy_images.paths[cls])}, list(toy_images.random_paths))
    with pytest.raises(EmptyFolderError, match="random"):
        ex.fit({cls: list(toy_images.paths[cls])}, [])
    with pytest.raises(EmptyFolderError, match=cls):
        ex.fit({cls: []}, list(toy_images.random_paths))
    tiny = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(VRXError, match="too small"):
        ex.fit({cls: [tiny]}, list(toy_images.random_paths))


def test_images_smaller_than_the_input_are_warned_about(toy_adapter, caplog):
    from vrx.concepts.inputs import iter_images

    small = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    with caplog.at_level("WARNING"):
        list(iter_images([small], toy_adapter.input_size))
    assert "smaller than the model input" in caplog.text

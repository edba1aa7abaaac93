"""CAVs, TCAV scores, multiple-testing correction and ACE's cluster rules."""

import numpy as np
import pytest

from vrx.concepts.clustering import accepted, cluster_patches
from vrx.concepts.config import ClusterConfig, ConceptConfig
from vrx.concepts.tcav import CAV, adjust_pvalues, conceptual_sensitivity, significance, tcav_score, train_cav
from vrx.errors import ConfigError


def test_cav_points_from_negatives_to_positives():
    rng = np.random.default_rng(0)
    axis = np.zeros(20)
    axis[3] = 1.0
    pos = rng.normal(size=(50, 20)) + 3 * axis
    neg = rng.normal(size=(50, 20))
    cav = train_cav(pos, neg, seed=0)
    assert cav.accuracy > 0.9
    assert np.argmax(np.abs(cav.direction)) == 3 and cav.direction[3] > 0
    assert np.isclose(np.linalg.norm(cav.direction), 1.0)
    # Gradients along the concept axis give TCAV 1, against it 0.
    grads = np.tile(axis, (10, 1))
    assert tcav_score(grads, cav) == 1.0
    assert tcav_score(-grads, cav) == 0.0


def test_conceptual_sensitivity_separates_concepts_with_equal_tcav():
    # Both CAVs get TCAV 1 (every gradient has a positive component along them); the mean
    # directional derivative says along which one the logit rises faster.
    grads = np.array([[2.0, 0.5], [1.0, 0.2], [3.0, 0.1]])
    strong, weak = CAV(np.array([1.0, 0.0]), 1.0), CAV(np.array([0.0, 1.0]), 1.0)
    assert tcav_score(grads, strong) == tcav_score(grads, weak) == 1.0
    assert conceptual_sensitivity(grads, strong) == pytest.approx(2.0)
    assert conceptual_sensitivity(grads, weak) == pytest.approx(0.8 / 3)


def test_cav_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(size=(40, 8)) + 1, rng.normal(size=(60, 8))
    a, b = train_cav(pos, neg, seed=5), train_cav(pos, neg, seed=5)
    np.testing.assert_array_equal(a.direction, b.direction)


def test_holm_and_bonferroni_match_hand_computed_values():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjust_pvalues(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    # Holm: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone max 0.06
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    with pytest.raises(ValueError):
        adjust_pvalues(p, "fdr")


def test_significance_separates_shifted_scores():
    rng = np.random.default_rng(2)
    concept = np.clip(0.9 + 0.03 * rng.normal(size=20), 0, 1)
    random = np.clip(0.5 + 0.1 * rng.normal(size=20), 0, 1)
    assert significance(concept, random) < 1e-6
    assert significance(random, random[::-1]) > 0.5
    assert significance(np.ones(5), np.ones(5)) == 1.0


def test_ace_acceptance_rules():
    # n must exceed the minimum size; then spread over images decides (50 discovery images).
    assert not accepted(40, 40, 50, min_size=40)
    assert accepted(60, 31, 50, min_size=40)       # (a) u > n/2
    assert accepted(100, 26, 50, min_size=40)      # (b) u > n/4 and u > D/4
    assert not accepted(200, 12, 50, min_size=40)  # too concentrated on few images
    assert accepted(240, 26, 50, min_size=40)      # (c) u > n/10 and u > D/2


def test_clusters_are_accepted_nearest_first_and_deterministic():
    rng = np.random.default_rng(3)
    centers = np.array([[0, 0], [10, 0], [0, 10]], float)
    feats = np.concatenate([c + rng.normal(size=(60, 2)) for c in centers]).astype(np.float32)
    image_index = np.tile(np.arange(60), 3)
    cfg = ClusterConfig(n_clusters=3, n_members=10)
    a = cluster_patches(feats, image_index, 60, cfg, seed=0)
    b = cluster_patches(feats, image_index, 60, cfg, seed=0)
    assert len(a) == 3
    for ca, cb in zip(a, b):
        np.testing.assert_array_equal(ca.members, cb.members)
        assert len(ca.members) == 10 and np.all(np.diff(ca.distances) >= 0)
        assert ca.size == 60 and ca.n_images == 60
        assert ca.all_distances.max() >= ca.distances.max()


def test_config_rejects_unknown_and_out_of_range_values():
    cfg = ConceptConfig.from_dict({"cluster": {"n_clusters": 5}, "tcav": {"n_concepts": 3}})
    assert cfg.cluster.n_clusters == 5 and cfg.tcav.n_concepts == 3
    with pytest.raises(ConfigError):
        ConceptConfig.from_dict({"clustr": {}})
    with pytest.raises(ConfigError):
        ConceptConfig.from_dict({"gradcam": {"keep_top": 1.5}})

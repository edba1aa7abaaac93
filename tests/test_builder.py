"""SCGBuilder on a hand-made scene: node matching, dummies, edges, Hungarian, teachers, label blindness, cache.

The scene is three flat rectangles on a flat background (non-square, so x and y cannot be swapped
unnoticed), segmented by one SLIC resolution so that every patch is known. Concept banks are made by
hand with centres equal to (or placed between) the features of chosen patches, so the patch each node
must match is known in advance.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vrx.concepts import features as features_module
from vrx.concepts.bank import Concept, ConceptBank
from vrx.concepts.config import ConceptConfig, GradCamConfig
from vrx.concepts.features import ImagePatches, PatchFeaturizer
from vrx.concepts.segmentation import SegmentationConfig
from vrx.errors import ArtifactError, ConfigError
from vrx.graphs.builder import MatchConfig, Matches, SCGBuilder
from vrx.graphs.dataset import GraphDataset, load_graph_dataset, save_graph_dataset
from vrx.graphs.scg import DUMMY_EPS, edge_index, edge_position

# One coarse SLIC resolution: 12 patches on the scene below, pairwise feature distances >= 0.45.
SEG = SegmentationConfig(n_segments=(15,))
H, W = 128, 176
RED = (12, 14, 52, 74)    # (y0, x0, y1, x1), end-exclusive
BLUE = (72, 24, 116, 60)
GREEN = (60, 100, 104, 164)


def paint(image: np.ndarray, box: tuple[int, int, int, int], rgb: tuple[float, float, float]) -> None:
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = rgb


def scene(shift: int = 0) -> np.ndarray:
    """Three rectangles on a light background; ``shift`` moves the green one left (a second image)."""
    image = np.full((H, W, 3), 0.85, np.float32)
    paint(image, RED, (0.9, 0.1, 0.1))
    paint(image, BLUE, (0.1, 0.2, 0.9))
    y0, x0, y1, x1 = GREEN
    paint(image, (y0, x0 - shift, y1, x1 - shift), (0.1, 0.8, 0.2))
    return image


@pytest.fixture(scope="module")
def adapter(toy_adapter):
    return toy_adapter


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return scene()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A patch cache shared by this module's builders: each image is featurised once."""
    return tmp_path_factory.mktemp("patch-cache")


@pytest.fixture(scope="module")
def patches(adapter, image) -> ImagePatches:
    return PatchFeaturizer(adapter, SEG)(image)


def patch_at(patches: ImagePatches, box: tuple[int, int, int, int]) -> int:
    """Index of the patch whose bounding box is exactly ``box`` (the flat rectangles segment exactly)."""
    hits = np.flatnonzero((patches.bboxes == np.array(box)).all(1))
    assert len(hits) == 1, f"expected one patch with bbox {box}, found {len(hits)}"
    return int(hits[0])


def concept(cls: str, rank: int, center: np.ndarray, radius: float) -> Concept:
    # One cluster distance: its quantile, the detection radius, is that value exactly.
    return Concept(class_name=cls, rank=rank, cluster=rank - 1, center=np.asarray(center, np.float32),
                   tcav=0.5, tcav_std=0.0, p_value=0.01, significant=True, cav_accuracy=0.9, size=1,
                   cluster_distances=np.array([radius], np.float32))


def make_bank(adapter, centres: dict[str, list[np.ndarray]], radius: float | dict[str, list[float]] = 1.0,
              *, gradcam: bool = False) -> ConceptBank:
    """A hand-made bank: per class, concepts with the given centres (rank order) and radii."""
    config = ConceptConfig(segmentation=SEG, gradcam=GradCamConfig(enabled=gradcam)).to_dict()
    concepts = {}
    for cls, cs in centres.items():
        radii = radius[cls] if isinstance(radius, dict) else [radius] * len(cs)
        concepts[cls] = [concept(cls, r + 1, c, rad) for r, (c, rad) in enumerate(zip(cs, radii))]
    return ConceptBank(concepts=concepts, model_id=adapter.model_id, layer=adapter.bottleneck, config=config)


def green_patch(patches: ImagePatches) -> int:
    """The patch covering most of the green rectangle (its segment is not exactly the rectangle)."""
    return int(np.argmax(patches.masks[:, GREEN[0]:GREEN[2], GREEN[1]:GREEN[3]].sum((1, 2))))


def centroid(mask: np.ndarray) -> np.ndarray:
    """(x, y) of a mask's pixel centres, normalised by width and height (computed independently)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return np.array([(xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h])


def build(adapter, bank, images, labels=None, cache=None, **config):
    """(builder, graph dataset, matches) of ``images``."""
    builder = SCGBuilder(adapter, bank, MatchConfig(**config), cache_dir=cache, show_progress=False)
    ds, matches = builder.transform(images, labels, return_matches=True)
    return builder, ds, matches


def matched_patch(ds, patches: ImagePatches, k: int, n: int, node_features: str = "context") -> int:
    """The patch whose feature a present node carries (exact row equality)."""
    table = patches.context if node_features == "context" else patches.features
    rows = np.flatnonzero((table == ds.graphs.x[0, k, n].numpy()).all(1))
    assert len(rows) == 1
    return int(rows[0])


def test_hand_made_scene_nodes_positions_and_edges(adapter, image, patches):
    red, blue, green = patch_at(patches, RED), patch_at(patches, BLUE), green_patch(patches)
    f = patches.features
    # Class order differs from the adapter's on purpose; school_bus has 2 concepts, so node 2 is padding.
    bank = make_bank(adapter, {"ambulance": [f[green], f[red], f[blue]], "school_bus": [f[blue], f[red]]})
    builder, ds, matches = build(adapter, bank, [image], labels=[1])
    b, k, n, d = ds.graphs.shape
    assert (b, k, n, d) == (1, 2, 3, f.shape[1]) and ds.class_names == ["ambulance", "school_bus"]
    assert builder.class_ids == [adapter.class_id("ambulance"), adapter.class_id("school_bus")]
    expect = {(0, 0): green, (0, 1): red, (0, 2): blue, (1, 0): blue, (1, 1): red}
    for (kk, nn), j in expect.items():
        assert matched_patch(ds, patches, kk, nn) == j
        assert ds.graphs.present[0, kk, nn] == 1
        np.testing.assert_allclose(ds.graphs.pos[0, kk, nn].numpy(), centroid(patches.masks[j]), atol=1e-6)
        assert matches.bbox[0, kk, nn].tolist() == patches.bboxes[j].tolist()
        assert matches.patch[0, kk, nn] == j
        assert matches.distance[0, kk, nn] == 0.0
    # The red rectangle is segmented exactly: its centre is known by hand (x = 44/176, y = 32/128).
    assert ds.graphs.pos[0, 0, 1].tolist() == [0.25, 0.25]
    assert ((ds.graphs.pos >= 0) & (ds.graphs.pos <= 1)).all()
    # Padded node: a dummy with no match at all.
    assert ds.graphs.present[0, 1, 2] == 0 and (ds.graphs.x[0, 1, 2] == DUMMY_EPS).all()
    assert ds.graphs.pos[0, 1, 2].tolist() == [0.0, 0.0] and np.isnan(matches.distance[0, 1, 2])
    assert matches.bbox[0, 1, 2].tolist() == [-1, -1, -1, -1] and matches.patch[0, 1, 2] == -1
    # Edges: all N(N-1) ordered pairs, source-major, feature [x_j, y_j, x_i, y_i].
    ea = ds.graphs.edge_attr()
    assert ea.shape == (1, 2, 6, 4) and ds.graphs.edge_index().tolist() == edge_index(3).tolist()
    pos = {key: centroid(patches.masks[j]) for key, j in expect.items()}
    for kk in range(2):
        for j, i in itertools.permutations(range(3), 2):
            want = np.concatenate([pos.get((kk, j), np.zeros(2)), pos.get((kk, i), np.zeros(2))])
            np.testing.assert_allclose(ea[0, kk, edge_position(3, j, i)].numpy(), want, atol=1e-6)
    assert ds.labels == [1] and ds.image_ids == ["array:0"] and ds.image_paths is None


def test_node_features_patch_or_context(adapter, image, patches):
    red, blue = patch_at(patches, RED), patch_at(patches, BLUE)
    f = patches.features
    bank = make_bank(adapter, {"ambulance": [f[red], f[blue]]})
    _, by_context, _ = build(adapter, bank, [image])
    _, by_patch, _ = build(adapter, bank, [image], node_features="patch")
    for n, j in enumerate((red, blue)):  # the same matches either way; only the node feature differs
        assert matched_patch(by_context, patches, 0, n) == j
        assert matched_patch(by_patch, patches, 0, n, "patch") == j
    assert not torch.allclose(by_context.graphs.x, by_patch.graphs.x)
    with pytest.raises(ConfigError, match="node_features"):
        MatchConfig(node_features="pixels")


def test_dummy_exactly_when_distance_exceeds_radius(adapter, image, patches):
    f = patches.features
    red, blue = patch_at(patches, RED), patch_at(patches, BLUE)
    far = f[red] + 100.0
    near = f[blue] + 0.005  # nearest patch is still blue (other patches are >= 0.45 away)
    bank = make_bank(adapter, {"fire_engine": [f[red], far, near]}, radius=1.0)
    _, ds, matches = build(adapter, bank, [image])
    g, m = ds.graphs, matches
    assert g.present[0, 0].tolist() == [1.0, 0.0, 1.0]
    # The far concept is still assigned a patch (a finite distance), but that is above its radius.
    assert np.isfinite(m.distance[0, 0, 1]) and m.distance[0, 0, 1] > 1.0
    assert (g.x[0, 0, 1] == DUMMY_EPS).all() and g.pos[0, 0, 1].tolist() == [0.0, 0.0]
    assert m.bbox[0, 0, 1].tolist() == [-1, -1, -1, -1]
    assert torch.isnan(ds.teacher.masked_logits[0, 0, 1]).all()
    assert torch.isfinite(ds.teacher.masked_logits[0, 0, [0, 2]]).all()

    # At the boundary: the threshold is inclusive (distance == radius is detected), one ulp below is not.
    d = float(m.distance[0, 0, 2])
    assert 0 < d < 0.45
    below = float(np.nextafter(np.float32(d), np.float32(0)))
    for radius, present in ((d, 1.0), (below, 0.0)):
        bank = make_bank(adapter, {"fire_engine": [f[red], far, near]}, radius={"fire_engine": [1.0, 1.0, radius]})
        _, ds2, _ = build(adapter, bank, [image], teacher=False)
        assert ds2.graphs.present[0, 0, 2] == present


def test_present_flag_matches_distance_rule_on_random_banks(adapter, image, patches, cache):
    """Over random concepts and radii, with Grad-CAM filtering on: present <=> matched and d <= radius."""
    rng = np.random.default_rng(3)
    f = patches.features
    centres, radii = {}, {}
    for cls in ("fire_engine", "ambulance", "school_bus"):
        picks = rng.choice(len(f), 4, replace=False)
        centres[cls] = [f[j] + rng.normal(0, s, f.shape[1]) for j, s in zip(picks, (0.0, 0.05, 0.2, 1.0))]
        radii[cls] = list(rng.uniform(0.0, 3.0, 4))
    _, ds, matches = build(adapter, make_bank(adapter, centres, radii, gradcam=True), [image, scene(shift=30)],
                        cache=cache)
    m = matches
    detected = np.isfinite(m.distance) & (m.distance <= m.radius[None])
    present = ds.graphs.present.numpy().astype(bool)
    assert (present == detected).all()
    assert 0 < present.sum() < present.size  # both kinds occur, so the check means something
    dummy = (ds.graphs.x == DUMMY_EPS).all(-1).numpy()
    assert (dummy == ~present).all()
    assert ((ds.graphs.pos.numpy() == 0).all(-1)[~present]).all()
    assert ((m.bbox >= 0).all(-1) == present).all()
    assert (torch.isfinite(ds.teacher.masked_logits).all(-1).numpy() == present).all()


def test_graphs_and_teachers_do_not_depend_on_labels(adapter, image, patches, cache):
    f = patches.features
    centres = {c: [f[j] for j in js] for c, js in
               (("fire_engine", (0, 4, 7)), ("ambulance", (9, 2, 4)), ("school_bus", (5, 9, 11)))}
    bank = make_bank(adapter, centres, radius=2.0, gradcam=True)
    images = [image, scene(shift=30)]
    runs = [build(adapter, bank, images, labels, cache)[1] for labels in ([0, 1], [2, 2], None)]
    for ds in runs[1:]:
        for a, b in ((ds.graphs.x, runs[0].graphs.x), (ds.graphs.present, runs[0].graphs.present),
                     (ds.graphs.pos, runs[0].graphs.pos), (ds.teacher.logits, runs[0].teacher.logits)):
            assert torch.equal(a, b)
        torch.testing.assert_close(ds.teacher.masked_logits, runs[0].teacher.masked_logits,
                                   rtol=0, atol=0, equal_nan=True)
    assert [ds.labels for ds in runs] == [[0, 1], [2, 2], [-1, -1]]
    # An image's graphs do not depend on the other images in the call either.
    _, rev, _ = build(adapter, bank, images[::-1], [1, 0], cache)
    assert torch.equal(rev.graphs.x.flip(0), runs[0].graphs.x)
    assert torch.equal(rev.graphs.pos.flip(0), runs[0].graphs.pos)


def test_every_class_graph_is_built_the_same_way(adapter, image, patches):
    """Two classes with the same concepts get the same graph (without Grad-CAM, nothing else differs)."""
    f = patches.features
    same = [f[1], f[6] + 0.01, f[10] + 50.0]
    _, ds, _ = build(adapter, make_bank(adapter, {"fire_engine": same, "school_bus": same}), [image])
    assert torch.equal(ds.graphs.x[0, 0], ds.graphs.x[0, 1])
    assert torch.equal(ds.graphs.pos[0, 0], ds.graphs.pos[0, 1])
    assert ds.graphs.present[0, 0].tolist() == [1.0, 1.0, 0.0]


def test_hungarian_resolves_conflicts_optimally(adapter, image, patches):
    f = patches.features
    p = patch_at(patches, RED)
    dist_p = np.linalg.norm(f - f[p], axis=1)
    dist_p[p] = np.inf
    q = int(np.argmin(dist_p))                       # p's nearest other patch
    c1 = 0.55 * f[p] + 0.45 * f[q]                  # rank 1: nearest to p, q a close second
    c2 = f[p]                                        # rank 2: exactly p
    assert np.argmin(np.linalg.norm(f - c1, axis=1)) == p
    # Greedy in rank order would give c1 -> p and c2 -> its next best; the optimum is c1 -> q, c2 -> p.
    _, ds, _ = build(adapter, make_bank(adapter, {"ambulance": [c1, c2]}, radius=1e6), [image], teacher=False)
    assert [matched_patch(ds, patches, 0, n) for n in range(2)] == [q, p]

    # Brute force on random centres (mixes of two patches each): the assignment's total is minimal.
    rng = np.random.default_rng(7)
    for _ in range(3):
        pairs = [rng.choice(len(f), 2, replace=False) for _ in range(4)]
        mix = rng.uniform(0.3, 0.7, 4)
        centres = [t * f[a] + (1 - t) * f[b] for t, (a, b) in zip(mix, pairs)]
        _, ds, matches = build(adapter, make_bank(adapter, {"ambulance": centres}, radius=1e6), [image], teacher=False)
        chosen = [matched_patch(ds, patches, 0, n) for n in range(4)]
        assert len(set(chosen)) == 4
        cost = np.linalg.norm(np.stack(centres)[:, None].astype(np.float32) - f[None], axis=2)
        best = min(sum(cost[r, c] for r, c in enumerate(perm))
                   for perm in itertools.permutations(range(len(f)), 4))
        total = float(matches.distance[0, 0].sum())
        assert total == pytest.approx(best, rel=1e-5)
        assert total == pytest.approx(sum(cost[r, c] for r, c in enumerate(chosen)), rel=1e-5)


def test_more_concepts_than_candidate_patches(adapter, image, patches):
    """Only as many concepts as patches can be matched; the rest are dummies, never doubled up."""
    f = patches.features
    n = len(f) + 2
    centres = [f[j % len(f)] for j in range(n)]
    _, ds, matches = build(adapter, make_bank(adapter, {"ambulance": centres}, radius=1e6), [image], teacher=False)
    assert int(ds.graphs.present.sum()) == len(f)
    assert np.isnan(matches.distance[0, 0]).sum() == 2
    used = {matched_patch(ds, patches, 0, k) for k in range(n) if ds.graphs.present[0, 0, k]}
    assert len(used) == len(f)


def test_teacher_logits_and_masked_teachers(adapter, image, patches):
    f = patches.features
    red, blue, green = patch_at(patches, RED), patch_at(patches, BLUE), green_patch(patches)
    bank = make_bank(adapter, {"school_bus": [f[red], f[blue] + 100.0],
                               "fire_engine": [f[blue], f[red], f[green]]})
    _, ds, _ = build(adapter, bank, [image])
    ids = [adapter.class_id(c) for c in ("school_bus", "fire_engine")]
    full = adapter.logits([image])[0, ids]
    torch.testing.assert_close(ds.teacher.logits[0], full, rtol=0, atol=1e-5)
    fill = adapter.fill_value.numpy()
    assert np.allclose(fill, 0.5)  # the toy adapter's mean: the value normalisation sends to 0
    seen = 0
    for k in range(2):
        for n in range(3):
            if not ds.graphs.present[0, k, n]:
                assert torch.isnan(ds.teacher.masked_logits[0, k, n]).all()
                continue
            masked = image.copy()
            masked[patches.masks[matched_patch(ds, patches, k, n)]] = fill
            want = adapter.logits([masked])[0, ids]
            torch.testing.assert_close(ds.teacher.masked_logits[0, k, n], want, rtol=0, atol=1e-5)
            assert not torch.allclose(want, full, atol=1e-3)  # masking the patch did change the logits
            seen += 1
    assert seen == 4 and ds.graphs.present[0, 0, 1:].tolist() == [0.0, 0.0]
    # Same patch in two class graphs: the same masked image, so the same teacher.
    torch.testing.assert_close(ds.teacher.masked_logits[0, 0, 0], ds.teacher.masked_logits[0, 1, 1])


def test_patch_cache_is_shared_with_discovery_and_reused(adapter, image, patches, tmp_path, monkeypatch):
    f = patches.features
    bank = make_bank(adapter, {"ambulance": [f[3], f[8]], "fire_engine": [f[0], f[5] + 100.0]})
    cache = tmp_path / "patches"
    # Discovery writes the cache with the same featuriser settings; the builder must find it.
    PatchFeaturizer(adapter, SEG, cache)(image)
    builder = SCGBuilder(adapter, bank, cache_dir=cache, show_progress=False)
    first = builder.transform([image])
    assert (builder.featurizer.hits, builder.featurizer.misses) == (1, 0)

    def no_segmentation(*_args, **_kwargs):
        raise AssertionError("segment_image called although the patches are cached")

    monkeypatch.setattr(features_module, "segment_image", no_segmentation)
    second = builder.transform([image])
    assert (builder.featurizer.hits, builder.featurizer.misses) == (2, 0)
    monkeypatch.undo()
    _, uncached, _ = build(adapter, bank, [image])
    for ds in (second, uncached):
        assert torch.equal(ds.graphs.x, first.graphs.x) and torch.equal(ds.graphs.pos, first.graphs.pos)
        torch.testing.assert_close(ds.teacher.logits, first.teacher.logits, rtol=0, atol=0)


def test_matches_and_dataset_round_trip(adapter, image, patches, cache, tmp_path):
    f = patches.features
    bank = make_bank(adapter, {"ambulance": [f[2], f[4] + 100.0], "school_bus": [f[7], f[1]]})
    builder, ds, matches = build(adapter, bank, [image, scene(shift=20)], [0, 1], cache)
    # The matches are returned, never left behind on the builder; without asking only graphs come back.
    assert not hasattr(builder, "matches_")
    plain = builder.transform([image, scene(shift=20)], [0, 1])
    assert isinstance(plain, GraphDataset) and torch.equal(plain.graphs.x, ds.graphs.x)
    matches.save(tmp_path / "matches.safetensors")
    back = Matches.load(tmp_path / "matches.safetensors")
    assert np.array_equal(back.bbox, matches.bbox)
    assert np.array_equal(back.patch, matches.patch)
    np.testing.assert_array_equal(back.distance, matches.distance)
    np.testing.assert_array_equal(back.radius, matches.radius)
    save_graph_dataset(tmp_path, ds)
    loaded = load_graph_dataset(tmp_path, ["ambulance", "school_bus"])
    assert torch.equal(loaded.graphs.x, ds.graphs.x) and loaded.labels == [0, 1]
    assert loaded.config["match"] == {"use_gradcam": False, "min_inside": 0.5, "radius_quantile": 0.9,
                                      "teacher": True, "node_features": "context", "features": "bank"}
    torch.testing.assert_close(loaded.teacher.masked_logits, ds.teacher.masked_logits, equal_nan=True)


def test_bank_of_another_model_is_refused(adapter, patches):
    bank = make_bank(adapter, {"ambulance": [patches.features[0]]})
    bank.model_id = "someone-else"
    with pytest.raises(ArtifactError, match="someone-else"):
        SCGBuilder(adapter, bank)


def test_match_config_from_graphs_metadata():
    from vrx.graphs.builder import match_config_from_meta

    assert match_config_from_meta({}) == MatchConfig(teacher=False)  # no graphs yet: the defaults
    meta = {"config": {"match": {"min_inside": 0.7, "teacher": True, "unknown": 1}}}
    # Graphs of a vrx before node_features carried the patch's own features.
    assert match_config_from_meta(meta) == MatchConfig(min_inside=0.7, teacher=False, node_features="patch")
    assert match_config_from_meta({"config": {"match": {"node_features": "context"}}}).node_features == "context"


def test_match_config_is_a_validated_settings_object():
    cfg = MatchConfig(min_inside=0.7, node_features="patch")
    assert MatchConfig.from_dict(cfg.to_dict()) == cfg
    assert MatchConfig.from_dict({"radius_quantile": 0.8}) == MatchConfig(radius_quantile=0.8)
    for bad in ({"min_inside": 1.5}, {"radius_quantile": -0.1}, {"use_gradcam": "yes"}, {"nodes": 1}):
        with pytest.raises(ConfigError):
            MatchConfig.from_dict(bad)


def test_masked_images_have_their_own_graphs(adapter, image, patches):
    """A masked image's node features are its own context (re-pooled), and nodes on the masked
    patch are removed with it (Teacher.covered)."""
    import torch.nn.functional as F

    f = patches.features
    red, blue = patch_at(patches, RED), patch_at(patches, BLUE)
    # The same patch in two class graphs: masking one covers the other.
    bank = make_bank(adapter, {"school_bus": [f[red], f[blue]], "fire_engine": [f[blue], f[red]]})
    _, ds, _ = build(adapter, bank, [image])
    t = ds.teacher
    assert t.covered is not None and t.masked_x is not None
    assert ds.graphs.present[0].all()
    assert t.covered[0, 0, 0].tolist() == [[True, False], [False, True]]   # red in both graphs
    assert t.covered[0, 0, 1].tolist() == [[False, True], [True, False]]   # blue in both graphs
    # Re-pooled context of the blue node when red is masked, computed independently.
    masked = image.copy()
    masked[patches.masks[red]] = adapter.fill_value.numpy()
    act = adapter.activations([masked])
    w = F.adaptive_avg_pool2d(torch.from_numpy(patches.masks[blue])[None, None].float(), act.shape[-2:])
    want = (act * w).sum((2, 3))[0] / w.sum()
    torch.testing.assert_close(t.masked_x[0, 0, 0, 0, 1], want, rtol=1e-4, atol=1e-5)
    # The variant the GRN is trained and judged on: covered nodes gone, the others' own features.
    v = t.variants(ds.graphs, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]))
    assert v.present[0].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    torch.testing.assert_close(v.x[0, 0, 1], want, rtol=1e-4, atol=1e-5)


def test_logits_and_activations_match_separate_calls(adapter, image):
    logits, acts = adapter.logits_and_activations([image, image[::-1].copy()])
    torch.testing.assert_close(logits, adapter.logits([image, image[::-1].copy()]))
    torch.testing.assert_close(acts, adapter.activations([image, image[::-1].copy()]))


def test_gradcam_filter_keeps_each_class_to_its_own_foreground(adapter, image, patches):
    from vrx.concepts.gradcam import class_foreground

    f = patches.features
    bank = make_bank(adapter, {"ambulance": [f[patch_at(patches, RED)]], "school_bus": [f[patch_at(patches, BLUE)]]},
                     radius=1e9, gradcam=True)
    builder, ds, matches = build(adapter, bank, [image], use_gradcam=True, min_inside=0.5)
    assert builder.use_gradcam
    for k, cls in enumerate(bank.class_names):
        fg = class_foreground(adapter, image, adapter.class_id(cls), builder.keep_top)  # one class at a time
        allowed = np.flatnonzero(patches.inside_fraction(fg) >= 0.5 - 1e-9)
        j = int(matches.patch[0, k, 0])
        assert j in allowed  # matched among the class's own Grad-CAM candidates
        # ...and it is the nearest of them, as without the filter among all patches
        assert j == allowed[np.argmin(np.linalg.norm(f[allowed] - bank.centers(cls)[0], axis=1))]

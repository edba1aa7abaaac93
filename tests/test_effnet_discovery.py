"""Concept discovery on the real model: EfficientNet-Lite0 (bundled ImageNet weights) over skimage's photos.

The toy tests (test_concepts.py) check the mechanics on an untrained CNN; this one runs the whole
ConceptExtractor.fit on a real ImageNet network, at its real bottleneck (``_blocks.15``, 320
channels, 7 x 7), with two ImageNet classes given by the adapter's own names: chelsea as class 285
and coffee as class 967, each as four crops and flips saved as PNG files, against random images
cut from other bundled photos. The settings are tiny (two SLIC resolutions, three clusters) so it
runs in seconds; what is asserted holds for any settings.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data, transform

from vrx.concepts.bank import ConceptBank
from vrx.concepts.config import ClusterConfig, ConceptConfig, GradCamConfig, TCAVConfig
from vrx.concepts.extractor import ConceptExtractor
from vrx.concepts.features import PatchFeaturizer
from vrx.concepts.segmentation import Segment, SegmentationConfig
from vrx.data.images import load_image

CAT, ESPRESSO = 285, 967
CHANNELS = 320  # EfficientNet-Lite0's last block
SIZE = 224

TINY = ConceptConfig(segmentation=SegmentationConfig(n_segments=(5, 12)),
                     gradcam=GradCamConfig(keep_top=0.5, min_inside=0.5),
                     cluster=ClusterConfig(n_clusters=3, n_init=1, n_members=5, min_size_fraction=0.5),
                     tcav=TCAVConfig(n_random_sets=10, random_set_size=6, n_concepts=2),
                     batch_size=4)


def _views(image: np.ndarray, n: int) -> list[np.ndarray]:
    """Up to four 224 x 224 views: the centre square, its mirror, and two mirrored/plain corner crops."""
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    s = min(h, w)
    c = int(0.8 * s)
    square = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s, :3]
    crops = [square, square[:, ::-1], image[:c, :c, :3], image[h - c:, w - c:, :3][:, ::-1]]
    return [transform.resize(v, (SIZE, SIZE), anti_aliasing=True).clip(0, 1).astype(np.float32) for v in crops[:n]]


def _save(images: list[np.ndarray], folder, stem: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, im in enumerate(images):
        path = folder / f"{stem}_{k}.png"
        Image.fromarray((im * 255).round().astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """Torch on one intra-op thread for this module, restored afterwards.

    On the shared 2-core machine this discovery measured 108 s with torch's default two threads
    (each small conv's fork/join waits on a descheduled thread) and 10 s with one; the result is
    the same either way.
    """
    from vrx.runtime import threads

    with threads(torch_threads=1, blas_threads=1):  # one BLAS thread too, as discovery wants
        yield


@pytest.fixture(scope="module")
def discovery(effnet, photos, tmp_path_factory, one_intra_op_thread):
    root = tmp_path_factory.mktemp("effnet-discovery")
    cat, espresso = effnet.class_name(CAT), effnet.class_name(ESPRESSO)
    by_class = {cat: _save(_views(photos["chelsea"], 4), root / "cat", "chelsea"),
                espresso: _save(_views(photos["coffee"], 4), root / "espresso", "coffee")}
    others = [photos["astronaut"], photos["rocket"], data.immunohistochemistry(), data.camera()]
    random = _save([v for im in others for v in _views(im, 2)], root / "random", "random")
    bank = ConceptExtractor(effnet, TINY, show_progress=False).fit(by_class, random).bank_
    return bank, by_class, random, root


def test_the_photos_are_the_classes_they_stand_for(effnet, discovery):
    _, by_class, _, _ = discovery
    for cls, paths in by_class.items():
        top = effnet.predict([load_image(p) for p in paths], top=5)
        assert all(effnet.class_id(cls) in [p.class_id for p in preds] for preds in top), cls


def test_bank_has_both_classes_at_the_real_bottleneck(effnet, discovery):
    bank, by_class, _, _ = discovery
    assert bank.class_names == list(by_class)
    assert bank.layer == "_blocks.15" and bank.model_id == effnet.model_id
    assert bank.feature_dim == CHANNELS
    for cls in by_class:
        stats = bank.stats["per_class"][cls]
        assert stats["images"] == 4
        assert 0 < stats["patches_kept"] <= stats["patches"]
        assert len(bank[cls]) >= 1, f"{cls}: no concept found"


def test_candidates_have_valid_tcav_and_p_values(discovery):
    bank, by_class, _, _ = discovery
    for cls in by_class:
        rows = bank.candidates[cls]
        assert rows
        for row in rows:
            assert 0.0 <= row["tcav"] <= 1.0
            assert 0.0 <= row["p_raw"] <= row["p_value"] <= 1.0  # corrected p-values only grow
            assert 0.0 <= row["cav_accuracy"] <= 1.0
        chosen = bank[cls]
        assert [c.rank for c in chosen] == list(range(1, len(chosen) + 1))
        assert all(c.significant and c.p_value < TINY.tcav.alpha for c in chosen)
        assert [c.tcav for c in chosen] == sorted((c.tcav for c in chosen), reverse=True)


def test_concept_members_are_patches_of_the_class_images(effnet, discovery):
    bank, by_class, random, _ = discovery
    for cls, paths in by_class.items():
        for concept in bank[cls]:
            assert concept.center.shape == (CHANNELS,) and np.isfinite(concept.center).all()
            assert 1 <= len(concept.members) <= TINY.cluster.n_members
            assert np.all(np.diff(concept.member_distances) >= 0)  # nearest first
            for m in concept.members:
                assert m.image in paths and m.image not in random
                y0, x0, y1, x1 = m.bbox
                assert 0 <= y0 < y1 <= SIZE and 0 <= x0 < x1 <= SIZE
                assert m.image_shape == (SIZE, SIZE) and m.mask.shape == (y1 - y0, x1 - x0)
                full = m.full_mask()
                ys, xs = np.nonzero(full)
                assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == m.bbox  # the box is tight


def test_member_distance_is_recomputable_from_its_image(effnet, discovery):
    """Re-featurising the nearest member from its file lands at the recorded distance from the centre."""
    bank, by_class, _, _ = discovery
    featurizer = PatchFeaturizer(effnet, TINY.segmentation, batch_size=TINY.batch_size)
    for cls in by_class:
        concept = bank[cls][0]
        m = concept.members[0]
        segment = Segment(mask=m.full_mask(), bbox=m.bbox, resolution=m.resolution)
        image = load_image(m.image)
        feature = featurizer.features(featurizer.patches(image, [segment]))[0]
        assert feature.shape == (CHANNELS,)
        assert np.linalg.norm(feature - concept.center) == pytest.approx(m.distance, rel=1e-3, abs=1e-4)


def test_bank_round_trips(discovery, tmp_path):
    bank, by_class, _, _ = discovery
    bank.save(tmp_path / "bank")
    again = ConceptBank.load(tmp_path / "bank")
    assert again.class_names == bank.class_names and again.candidates == bank.candidates
    assert (again.layer, again.model_id) == (bank.layer, bank.model_id)
    for cls in by_class:
        assert len(again[cls]) == len(bank[cls])
        for a, b in zip(bank[cls], again[cls]):
            np.testing.assert_array_equal(a.center, b.center)
            assert (a.rank, a.tcav, a.p_value, a.size) == (b.rank, b.tcav, b.p_value, b.size)
            for ma, mb in zip(a.members, b.members):
                assert (ma.image, ma.bbox, ma.resolution, ma.distance) == (mb.image, mb.bbox, mb.resolution, mb.distance)
                np.testing.assert_array_equal(ma.mask, mb.mask)

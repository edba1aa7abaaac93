"""Map-space centres: a crop-mode bank matched from one forward of the image (MatchConfig.features="map")."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from test_builder import RED, SEG, green_patch, make_bank, patch_at, scene
from test_patch_features import _images_through_model
from vrx.concepts.bank import ConceptBank, Member
from vrx.concepts.features import PatchFeaturizer
from vrx.concepts.map_centres import add_map_centres
from vrx.data.images import load_image
from vrx.errors import ArtifactError, ConfigError
from vrx.graphs.builder import MatchConfig, SCGBuilder


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    """The builder tests' scene as a PNG, and the image as vrx reads it back."""
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray((scene() * 255).round().astype(np.uint8)).save(path)
    return path, load_image(path)


def member(path, patches, j: int) -> Member:
    y0, x0, y1, x1 = (int(v) for v in patches.bboxes[j])
    return Member(image=str(path), resolution=0, bbox=(y0, x0, y1, x1), mask=patches.masks[j, y0:y1, x0:x1],
                  image_shape=patches.shape, distance=0.0)


@pytest.fixture(scope="module")
def bank_and_patches(toy_adapter, scene_file):
    """A crop-mode bank of two concepts whose members are patches of the scene: red (+ one more), green."""
    path, image = scene_file
    patches = PatchFeaturizer(toy_adapter, SEG)(image)
    red, green = patch_at(patches, RED), green_patch(patches)
    other = next(j for j in range(len(patches)) if j not in (red, green))
    bank = make_bank(toy_adapter, {"ambulance": [patches.features[red]], "fire_engine": [patches.features[green]]})
    bank["ambulance"][0].members = [member(path, patches, red), member(path, patches, other)]
    bank["fire_engine"][0].members = [member(path, patches, green)]
    return bank, patches, (red, other, green)


def test_map_centre_is_the_mean_context_of_the_members_from_one_forward_per_image(toy_adapter, bank_and_patches):
    bank, patches, (red, other, green) = bank_and_patches
    assert not bank.has_map_centres
    n_forwards = _images_through_model(toy_adapter, lambda: add_map_centres(bank, toy_adapter))
    assert n_forwards == 1                      # three members, one image: one forward
    assert bank.has_map_centres
    amb, fe = bank["ambulance"][0], bank["fire_engine"][0]
    expected = patches.context[[red, other]].mean(0)
    np.testing.assert_allclose(amb.map_center, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fe.map_center, patches.context[green], rtol=1e-5, atol=1e-6)
    half = np.linalg.norm(patches.context[red] - patches.context[other]) / 2   # two members: both at half
    np.testing.assert_allclose(amb.map_distances, [half, half], rtol=1e-4)
    assert fe.map_distances.tolist() == [0.0]
    assert amb.map_radius(0.5) == pytest.approx(half, rel=1e-4)


def test_map_centres_survive_save_and_load_and_older_banks_load_without(tmp_path, toy_adapter, bank_and_patches):
    bank, _, _ = bank_and_patches
    add_map_centres(bank, toy_adapter)
    loaded = ConceptBank.load(bank.save(tmp_path / "with"))
    assert loaded.has_map_centres
    np.testing.assert_array_equal(loaded.map_centers("ambulance"), bank.map_centers("ambulance"))
    plain = make_bank(toy_adapter, {"ambulance": [np.ones(bank.feature_dim)]})
    again = ConceptBank.load(plain.save(tmp_path / "without"))
    assert not again.has_map_centres and again["ambulance"][0].map_center is None
    with pytest.raises(ArtifactError, match="vrx map-centres"):
        again.map_centers("ambulance")


def test_one_forward_matching_finds_the_members_patch_in_one_forward(toy_adapter, bank_and_patches, scene_file):
    bank, patches, (_, _, green) = bank_and_patches
    add_map_centres(bank, toy_adapter)
    _, image = scene_file
    builder = SCGBuilder(toy_adapter, bank, MatchConfig(features="map", teacher=False), show_progress=False)
    assert builder.featurizer.segmentation.features == "map"
    found = {}
    n_forwards = _images_through_model(toy_adapter, lambda: found.update(
        ds=builder.transform([image], return_matches=True)))
    assert n_forwards == 1                      # the crop mode would run one forward per patch more
    _, matches = found["ds"]
    k = bank.class_names.index("fire_engine")
    assert matches.patch[0, k, 0] == green      # the same segmentation: patch indices agree
    assert matches.distance[0, k, 0] == pytest.approx(0.0, abs=1e-5)
    assert matches.radius[k, 0] == pytest.approx(0.0, abs=1e-6)  # one member: its own distance


def test_one_forward_matching_of_a_bank_without_map_centres_names_the_command(toy_adapter):
    bank = make_bank(toy_adapter, {"ambulance": [np.ones(64)]})
    with pytest.raises(ArtifactError, match="vrx map-centres --run"):
        SCGBuilder(toy_adapter, bank, MatchConfig(features="map"))
    with pytest.raises(ConfigError, match="features must be 'bank' or 'map'"):
        MatchConfig(features="crops")


def test_add_map_centres_refuses_a_member_image_of_another_size(toy_adapter, tmp_path, bank_and_patches):
    bank, patches, (red, _, _) = bank_and_patches
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(small)
    odd = make_bank(toy_adapter, {"ambulance": [patches.features[red]]})
    odd["ambulance"][0].members = [member(small, patches, red)]
    with pytest.raises(ArtifactError, match="segmented at"):
        add_map_centres(odd, toy_adapter)


def test_cli_map_centres_then_one_forward_graphs(vrx_run, toy_world, tmp_path):
    from vrxcli import copy_run, vrx

    from vrx.run import Run

    run = copy_run(vrx_run, tmp_path / "run")
    r = vrx("graphs", "--run", run, "--images", toy_world, "--features", "map")
    assert r.rc == 2 and r.clean() and "vrx map-centres --run" in r.err, r
    r = vrx("map-centres", "--run", run)
    assert r.rc == 0 and "map-space centres" in r.out, r
    assert Run(run).bank().has_map_centres
    r = vrx("graphs", "--run", run, "--images", toy_world, "--features", "map")
    assert r.rc == 0, r
    assert Run(run).match_config().features == "map"   # what `vrx explain` will match with

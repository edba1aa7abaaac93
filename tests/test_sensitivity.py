"""Sensitivity experiments (paper Figure 7) on toyworld: scene edits, the experiment, JSON, the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from vrx.data.toyworld import load_scene, part_mask, render, sample_scene, scene_rng
from vrx.errors import ConfigError, InvalidImageError
from vrx.experiments import (
    SensitivityConfig, SensitivityExperiment, SensitivityResult, SkipImage, distort_edit, edited_region,
    move_edit, noise_edit, swap_edit,
)
from vrx.experiments.sensitivity import interleaved_images


def _scene(cls="fire_engine", index=0, **kw):
    return sample_scene(cls, scene_rng(5, cls, index), n_distractors=0, **kw)


def _rows(mask):
    rows = np.flatnonzero(mask.any(1))
    return rows[0], rows[-1]


def _changes_inside(old, new, info):
    """Part-map and pixel changes of an edit, and whether they all lie in its edited region."""
    rgb0, parts0 = render(old)
    rgb1, parts1 = render(new)
    region = edited_region(old, new, info)
    changed_parts = parts0 != parts1
    changed_rgb = (rgb0 != rgb1).any(-1)
    return changed_parts, changed_rgb, region


# ------------------------------------------------------------------------------- scene edits
def test_move_puts_wheels_above_the_body_and_changes_nothing_else():
    for index in range(6):
        scene = _scene(index=index, pose="side")
        wheels = scene.find("wheel")
        try:
            new, info = move_edit(scene, wheels, gap=2)
        except SkipImage:
            continue
        assert info.detail["direction"] == "up"
        body_top, _ = _rows(part_mask(scene.parts[scene.find("body")[0]], scene.size))
        moved = np.zeros((scene.size, scene.size), bool)
        for j in info.new_indices:
            assert new.parts[j].type == "wheel" and new.parts[j].color == scene.parts[wheels[0]].color
            moved |= part_mask(new.parts[j], scene.size)
        assert _rows(moved)[1] == body_top - 3          # bottom row gap (2) pixels above the roof line
        changed_parts, changed_rgb, region = _changes_inside(scene, new, info)
        assert changed_parts.any()
        assert not (changed_parts & ~region).any()      # the part map changes only where wheels were or are
        assert not (changed_rgb & ~region).any()        # so do the pixels (same noise seed)
        assert new.find("wheel") == info.new_indices
        return
    pytest.fail("no sampled scene had room to move its wheels")


def test_move_sends_upper_parts_under_the_floor():
    for index in range(10):
        scene = _scene(index=index)
        try:
            new, info = move_edit(scene, scene.find("ladder"), gap=2)
        except SkipImage:
            continue
        assert info.detail["direction"] == "down" and info.detail["dy"] > 0
        _, body_bottom = _rows(part_mask(scene.parts[scene.find("body")[0]], scene.size))
        top, _ = _rows(part_mask(new.parts[info.new_indices[0]], scene.size))
        assert top == body_bottom + 3
        return
    pytest.fail("no sampled scene had room to move its ladder")


def test_move_without_room_is_skipped():
    scene = _scene(index=2)
    with pytest.raises(SkipImage, match="no room"):
        move_edit(scene, scene.find("wheel"), gap=scene.size)   # a gap the size of the image cannot fit


def test_swap_keeps_centre_and_changes_the_type_only_there():
    scene = _scene("school_bus", 3)
    wheels = scene.find("wheel")
    new, info = swap_edit(scene, wheels, "cross", np.random.default_rng(0))
    assert [new.parts[i].type for i in wheels] == ["cross"] * len(wheels)
    assert [new.parts[i].center for i in wheels] == [scene.parts[i].center for i in wheels]
    changed_parts, changed_rgb, region = _changes_inside(scene, new, info)
    assert not (changed_parts & ~region).any() and not (changed_rgb & ~region).any()
    _, parts1 = render(new)
    assert (parts1 == 6).any() and not (parts1 == 2).any()    # 6 = cross, 2 = wheel


def test_distort_and_noise_keep_the_part_map():
    scene = _scene("ambulance", 4)
    crosses = scene.find("cross")
    new, info = distort_edit(scene, crosses)
    assert new.parts[crosses[0]].color == tuple(255 - c for c in scene.parts[crosses[0]].color)
    changed_parts, changed_rgb, region = _changes_inside(scene, new, info)
    assert not changed_parts.any() and changed_rgb.any() and not (changed_rgb & ~region).any()
    new, info = noise_edit(scene, np.random.default_rng(1))
    changed_parts, changed_rgb, _ = _changes_inside(scene, new, info)
    assert new.noise_seed != scene.noise_seed and not changed_parts.any() and changed_rgb.mean() > 0.5


def test_config_is_checked():
    with pytest.raises(ConfigError, match="min_share"):
        SensitivityConfig(min_share=0.0)
    with pytest.raises(ConfigError, match="pick"):
        SensitivityConfig(pick="best")
    config = SensitivityConfig(pick="rank", gap=3)
    assert SensitivityConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# ------------------------------------------------------------------------------- on a tiny run
@pytest.fixture(scope="module")
def experiment(vrx_run):
    return SensitivityExperiment(vrx_run)


@pytest.fixture(scope="module")
def images(toy_world):
    return interleaved_images(toy_world)[:12]


def _check_result(result: SensitivityResult, images, kind):
    assert result.kind == kind
    assert result.n >= 1, result.skipped
    assert {r.image for r in result.records} | set(result.skipped) == {str(p) for p in images}
    assert result.n + len(result.skipped) == len(images)
    assert 0.0 <= result.rate <= 1.0
    assert result.rate == sum(r.held for r in result.records) / result.n
    kept = [r for r in result.records if r.detected_after]
    assert result.n_vanished == result.n - len(kept)
    if kept:
        assert result.rate_detected == sum(r.held for r in kept) / len(kept)
    for r in result.records:
        assert r.held == (r.after < r.before - 1e-6)
        assert r.before > 1e-6  # only concepts with credit to lose are edited (positive_only)
        assert r.share >= 0.5 and r.part_type != "body"
        scene = load_scene(r.image[:-len(".png")] + ".json")
        assert r.true_class == scene.cls
        assert r.edited_parts and {scene.parts[i].type for i in r.edited_parts} == {r.part_type}
        assert r.changed_pixels > 0


def test_structural_records_and_the_edit_they_describe(experiment, images):
    result = experiment.run(images, "structural", limit=None)
    _check_result(result, images, "structural")
    for r in result.records:
        assert r.detail["direction"] in ("up", "down")
        # Redo the edit from the record: the part maps differ exactly as recorded, and only there.
        scene = load_scene(r.image[:-len(".png")] + ".json")
        new, info = move_edit(scene, r.edited_parts, gap=experiment.config.gap)
        assert info.detail["dy"] == r.detail["dy"]
        changed_parts, changed_rgb, region = _changes_inside(scene, new, info)
        assert int(changed_parts.sum()) == r.changed_pixels
        assert not (changed_parts & ~region).any() and not (changed_rgb & ~region).any()


def test_any_sign_adds_exactly_the_images_without_positive_credit(vrx_run, experiment, images):
    strict = experiment.run(images, "structural")
    loose = SensitivityExperiment(vrx_run, SensitivityConfig(positive_only=False)).run(images, "structural")
    by_image = {r.image: r for r in loose.records}
    # Where the best concept has positive credit both pick it; elsewhere only any-sign measures.
    assert {r.image: r for r in strict.records} == {i: r for i, r in by_image.items() if r.before > 1e-6}
    for image, r in by_image.items():
        if r.before <= 1e-6:
            assert "positive" in strict.skipped[image]


def test_visual_records_json_round_trip(experiment, images, tmp_path):
    result = experiment.run(images, "visual")
    _check_result(result, images, "visual")
    for r in result.records:
        scene = load_scene(r.image[:-len(".png")] + ".json")
        assert r.detail["new_type"] not in {p.type for p in scene.parts if not p.distractor}
    d = json.loads(json.dumps(result.to_dict()))
    assert d["n"] == result.n and d["rate"] == result.rate
    assert sum(v["n"] for v in d["by_class"].values()) == result.n
    back = SensitivityResult.from_dict(d)
    assert back.to_dict() == result.to_dict()
    # A limit stops after that many measured images.
    assert experiment.run(images, "visual", limit=1).n == 1


def test_unusable_inputs(experiment, images, tmp_path):
    from PIL import Image

    stray = tmp_path / "photo.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(stray)
    result = experiment.run([stray, images[0]], "visual")
    assert "scene JSON" in result.skipped[str(stray)]
    with pytest.raises(ConfigError, match="unknown sensitivity kind"):
        experiment.run(images, "semantic")
    with pytest.raises(ConfigError, match="unknown edit"):
        experiment.run(images, "structural", "swap")
    with pytest.raises(InvalidImageError):
        experiment.run([], "visual")


def test_cli_writes_both_rates(vrx_run, toy_world, tmp_path, capsys):
    from vrx.cli import sensitivity as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "sens.json"
    args = parser.parse_args(["sensitivity", "--run", str(vrx_run), "--images", str(toy_world),
                              "--n", "2", "--split", "all", "--out", str(out)])
    code = args.func(args)
    text = capsys.readouterr().out
    assert "structural (move)" in text and "visual (swap)" in text
    d = json.loads(out.read_text())
    assert set(d["results"]) == {"structural/move", "visual/swap"}
    assert code == (0 if all(r["n"] for r in d["results"].values()) else 1)
    assert all(r["n"] <= 2 for r in d["results"].values())

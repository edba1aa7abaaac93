"""toyworld: determinism, exact part maps, pure edits, the structure-only pair, dataset folders."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from vrx.data.toyworld import (
    ALL_CLASSES, DEFAULT_CLASSES, PART_IDS, PART_TYPES, STRUCTURE_PAIR, Part, Scene, generate_random_scenes,
    generate_scenes, insert_part, list_images, load_part_map, load_scene, move_part, part_mask,
    part_multiset, remove_part, render, render_dataset, render_layers, replace_part, sample_scene,
    transplant_part,
)
from vrx.data.toyworld.classes import BODY_PALETTE
from vrx.errors import ArtifactError, ConfigError, EmptyFolderError, UnknownClassError


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return generate_scenes(ALL_CLASSES, 3, seed=11)


def test_classes_and_part_types():
    assert len(ALL_CLASSES) >= 6
    assert DEFAULT_CLASSES == ["fire_engine", "ambulance", "school_bus"]
    assert PART_IDS["body"] == 1 and PART_IDS[PART_TYPES[-1]] == len(PART_TYPES)
    # wheels are shared by every class
    assert all(part_multiset(c).get("wheel", 0) >= 2 for c in ALL_CLASSES)


def test_same_seed_same_scenes_and_pixels():
    a = generate_scenes(DEFAULT_CLASSES, 2, seed=3)
    b = generate_scenes(DEFAULT_CLASSES, 2, seed=3)
    c = generate_scenes(DEFAULT_CLASSES, 2, seed=4)
    assert a == b
    for sa, sb, sc in zip(a, b, c):
        ra, rb, rc = render(sa), render(sb), render(sc)
        assert np.array_equal(ra[0], rb[0]) and np.array_equal(ra[1], rb[1])
        assert not np.array_equal(ra[0], rc[0])


def test_scene_stream_does_not_depend_on_selection():
    few = generate_scenes(["taxi"], 2, seed=9)
    many = generate_scenes(["fire_engine", "taxi"], 4, seed=9)
    assert few[1] == [s for s in many if s.cls == "taxi"][1]


def test_json_round_trip_renders_identically(scenes):
    for s in scenes[::3] + generate_random_scenes(2, seed=1):
        back = Scene.from_json(s.to_json())
        assert back == s
        assert back.to_dict() == json.loads(s.to_json())
        r0, r1 = render(s), render(back)
        assert np.array_equal(r0[0], r1[0]) and np.array_equal(r0[1], r1[1])


def test_noise_and_texture_leave_part_map_alone(scenes):
    s = scenes[0]
    noisy, clean = render_layers(s), render_layers(s, noise=False)
    assert not np.array_equal(noisy.rgb, clean.rgb)
    assert np.array_equal(noisy.parts, clean.parts)
    other_bg = replace(s, background=scenes[5].background, noise_seed=s.noise_seed + 1)
    assert np.array_equal(render(other_bg)[1], noisy.parts)


def test_part_map_is_exactly_what_was_drawn(scenes):
    for s in scenes[::2]:
        layers = render_layers(s)
        inst = layers.instances
        # the part-type map is the type of the topmost part, pixel by pixel
        types = np.array([0] + [PART_IDS[p.type] for p in s.parts], dtype=np.uint8)
        assert np.array_equal(layers.parts, types[inst.astype(np.int64) + 1])
        for i, part in enumerate(s.parts):
            visible = inst == i
            footprint = part_mask(part, s.size)
            assert not (visible & ~footprint).any()  # never labelled outside its own shape
            covered = np.zeros_like(footprint)
            for later in s.parts[i + 1:]:
                covered |= part_mask(later, s.size)
            # visible exactly where its footprint is not covered by anything drawn later
            assert np.array_equal(visible, footprint & ~covered)
            if visible.any():
                assert (layers.parts[visible] == PART_IDS[part.type]).all()
            # removing the part changes pixels only where it was visible, and the part map exactly there
            after = render_layers(remove_part(s, i))
            changed = (after.rgb != layers.rgb).any(axis=2)
            assert not (changed & ~visible).any()
            assert changed.sum() >= 0.9 * visible.sum()
            assert np.array_equal(after.parts != layers.parts, visible & (after.parts != PART_IDS[part.type]))


def test_every_vehicle_part_is_visible_and_sized_for_slic():
    areas: dict[str, list[int]] = {}
    for s in generate_scenes(ALL_CLASSES, 6, seed=2):
        inst = render_layers(s, noise=False).instances
        for i, p in enumerate(s.parts):
            if not p.distractor:
                areas.setdefault(p.type, []).append(int((inst == i).sum()))
    assert set(areas) == set(PART_TYPES)
    for t, a in areas.items():
        if t != "body":
            assert min(a) >= 20, (t, min(a))
            assert 40 <= np.median(a) <= 600, (t, np.median(a))


def test_move_part_moves_exactly_that_part(scenes):
    s = scenes[0]  # a fire engine; wheels are drawn last, so nothing covers them
    i = s.find("wheel")[0]
    dx, dy = 5, -40
    moved = move_part(s, i, dx, dy)
    assert s.parts[i].center != moved.parts[i].center  # the original is not mutated
    old_fp, new_fp = part_mask(s.parts[i], s.size), part_mask(moved.parts[i], s.size)
    assert old_fp.sum() == new_fp.sum() > 0
    ys, xs = np.nonzero(old_fp)
    assert (ys + dy >= 0).all() and (xs + dx < s.size).all()
    assert np.array_equal(new_fp[ys + dy, xs + dx], np.ones(len(ys), bool))  # translated by (dx, dy)
    a, b = render_layers(s), render_layers(moved)
    changed = (a.rgb != b.rgb).any(axis=2) | (a.parts != b.parts)
    assert changed.any() and not (changed & ~(old_fp | new_fp)).any()
    assert (b.instances == i).sum() == new_fp.sum()  # on top at its new place
    assert (b.parts[new_fp] == PART_IDS["wheel"]).all()
    to = move_part(s, i, to=(64.0, 20.0))
    assert to.parts[i].center == (64.0, 20.0)


def test_insert_replace_transplant(scenes):
    fire = next(s for s in scenes if s.cls == "fire_engine")
    amb = next(s for s in scenes if s.cls == "ambulance")
    cross = amb.find("cross")[0]
    ladder = fire.find("ladder")[0]
    swapped = replace_part(fire, ladder, amb.parts[cross])
    assert swapped.parts[ladder].type == "cross" and swapped.parts[ladder].center == fire.parts[ladder].center
    assert PART_IDS["ladder"] not in render(swapped)[1] and PART_IDS["cross"] in render(swapped)[1]
    body = fire.parts[fire.find("body")[0]]
    moved_in = transplant_part(amb, cross, fire, center=body.center)
    assert len(moved_in.parts) == len(fire.parts) + 1 and moved_in.parts[-1].center == body.center
    assert (render(moved_in)[1] == PART_IDS["cross"]).sum() == part_mask(moved_in.parts[-1], 128).sum()
    below = insert_part(fire, amb.parts[cross], index=0)
    assert below.parts[0].type == "cross" and len(fire.parts) + 1 == len(below.parts)
    assert fire.find("cross") == []  # nothing mutated
    with pytest.raises(ConfigError):
        remove_part(fire, len(fire.parts))
    with pytest.raises(ConfigError):
        insert_part(fire, "cross")  # type: ignore[arg-type]


def _side_centres(scene: Scene, type_: str) -> list[tuple[float, float]]:
    return [scene.parts[i].center for i in scene.find(type_)]


def test_structure_pair_differs_only_in_layout():
    a, b = STRUCTURE_PAIR
    assert part_multiset(a) == part_multiset(b)
    rng = np.random.default_rng(0)
    for _ in range(20):
        sa = sample_scene(a, rng, pose="side", n_distractors=0)
        sb = sample_scene(b, rng, pose="side", n_distractors=0)
        assert sa.part_types() == sb.part_types() == part_multiset(a)
        # the layouts differ where the docs say: stripe vs windows, and the siren's place on the roof
        for s in (sa, sb):
            win_y = np.mean([c[1] for c in _side_centres(s, "window")])
            stripe_y = _side_centres(s, "stripe")[0][1]
            body_x = _side_centres(s, "body")[0][0]
            siren_off = abs(_side_centres(s, "siren")[0][0] - body_x) / s.vehicle.length
            if s.cls == a:
                assert stripe_y > win_y and siren_off < 0.1  # stripe below windows, siren centred
            else:
                assert stripe_y < win_y and siren_off > 0.2  # stripe above windows, siren at an end
    # sizes come from the same distribution: same slot sizes per type in the layouts
    from vrx.data.toyworld.classes import CLASS_LAYOUTS
    sizes = [sorted((sl.type, sl.fw, sl.fh) for sl in CLASS_LAYOUTS[c]) for c in STRUCTURE_PAIR]
    assert sizes[0] == sizes[1]


def test_body_colours_shared_across_classes():
    used: dict[str, set[int]] = {}
    for s in generate_scenes(ALL_CLASSES, 25, seed=5):
        col = s.vehicle.color
        k = int(np.argmin([math.dist(col, p) for p in BODY_PALETTE]))
        assert math.dist(col, BODY_PALETTE[k]) <= 25
        used.setdefault(s.cls, set()).add(k)
    assert all(len(v) >= 5 for v in used.values())


def test_random_scenes_hold_no_vehicle():
    for s in generate_random_scenes(6, seed=3):
        assert s.cls == "random" and s.vehicle is None
        assert all(p.distractor for p in s.parts) and s.parts
        assert PART_IDS["body"] not in render(s)[1]


def test_render_dataset_layout(tmp_path):
    out = tmp_path / "tw"
    manifest = render_dataset(out, 2, seed=7, classes=["ambulance", "taxi"], n_random=3, size=96)
    assert json.loads((out / "toyworld.json").read_text()) == manifest
    assert manifest["classes"] == ["ambulance", "taxi"] and manifest["part_types"] == PART_TYPES
    assert manifest["counts"] == {"ambulance": 2, "taxi": 2, "random": 3}
    for cls, n in manifest["counts"].items():
        names = sorted(p.name for p in (out / cls).iterdir())
        assert len(names) == 3 * n and "000001.png" in names and "000001.parts.png" in names
        for k in range(n):
            img = np.asarray(Image.open(out / cls / f"{k:06d}.png"))
            scene = load_scene(out / cls / f"{k:06d}.json")
            rgb, parts = render(scene)
            assert img.shape == (96, 96, 3) and np.array_equal(img, rgb)
            assert np.array_equal(load_part_map(out / cls / f"{k:06d}.png"), parts)
            assert scene.cls == cls and scene.size == 96
            if cls == "random":
                assert PART_IDS["body"] not in parts
    classes, items = list_images(out)
    assert classes == ["ambulance", "taxi"] and len(items) == 4
    with pytest.raises(EmptyFolderError):
        list_images(tmp_path / "nothing")
    # The one part-map reader of an image set (what purity uses) reads the same maps.
    from vrx.data.images import load_image_folder, part_map_reader

    reader = part_map_reader(load_image_folder(out))
    assert reader is not None and reader.part_names == PART_TYPES
    first = out / "ambulance" / "000000.png"
    assert np.array_equal(reader(first), load_part_map(first)) and reader(out / "x.png") is None
    with pytest.raises(ArtifactError, match="missing part map"):
        load_part_map(out / "ambulance" / "000099.png")


def test_cli_render(tmp_path, capsys):
    from vrx.cli import toyworld as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["toyworld", "render", "--out", str(tmp_path / "d"), "--n-per-class", "1",
                              "--seed", "2", "--classes", "police_car,taxi", "--n-random", "1"])
    assert args.func(args) == 0
    assert "police_car, taxi" in capsys.readouterr().out
    assert (tmp_path / "d" / "taxi" / "000000.parts.png").exists()


def test_bad_input_errors(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(UnknownClassError, match="submarine"):
        sample_scene("submarine", rng)
    with pytest.raises(UnknownClassError):
        generate_scenes(["fire_engine", "zeppelin"], 1, seed=0)
    with pytest.raises(ConfigError, match="part type"):
        Part("propeller", center=(1, 1), size=(2, 2), color=(0, 0, 0))
    with pytest.raises(ConfigError, match="size"):
        Part("wheel", center=(1, 1), size=(0, 2), color=(0, 0, 0))
    with pytest.raises(ArtifactError):
        Scene.from_json("{not json")
    with pytest.raises(ArtifactError):
        Scene.from_dict({"version": 1, "class": "taxi"})
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1}')
    with pytest.raises(ArtifactError, match="bad.json"):
        load_scene(bad)

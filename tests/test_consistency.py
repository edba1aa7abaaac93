"""vrx consistency: planted shifts, pixel edits, error typing, records, and the experiment on a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vrx.data.toyworld import DEFAULT_CLASSES, render, sample_scene, scene_rng
from vrx.errors import ConfigError
from vrx.experiments.consistency_records import (
    EDITS, ConsistencyConfig, ConsistencyRecord, ConsistencyResult, EditOutcome,
)
from vrx.experiments.error_typing import account_error, classify_share
from vrx.experiments.pixel_edits import fill, paste, place_elsewhere, shift_mask, top_area, transplant
from vrx.experiments.planted import (
    PLANTED_TYPE, SHIFTS, planted_cause, render_shifted, shift_scene, shifted_scenes, signature_types,
)

CLASSES = list(DEFAULT_CLASSES)


# ------------------------------------------------------------------------------- planted shifts
def test_signature_types_are_the_parts_only_that_class_has():
    assert signature_types("fire_engine", CLASSES) == ["ladder"]
    assert signature_types("ambulance", CLASSES) == ["cross"]
    assert set(signature_types("school_bus", CLASSES)) == {"stop_sign", "door"}


@pytest.mark.parametrize("kind", SHIFTS)
def test_each_shift_changes_pixels_only_in_its_planted_region(kind):
    scene = sample_scene("fire_engine", scene_rng(5, "fire_engine", 0), n_distractors=0)
    new, cause = shift_scene(scene, kind, CLASSES, np.random.default_rng(0))
    assert cause.kind == kind and cause.type == PLANTED_TYPE[kind]
    region = cause.region(scene.size)
    old_rgb, new_rgb = render(scene)[0], render(new)[0]
    changed = (old_rgb != new_rgb).any(-1)
    assert changed.any() and region.any()
    assert not (changed & ~region).any()
    types = new.part_types()
    if kind == "swap":
        assert "ladder" not in types and types.get(cause.detail["replaced_by"], 0) >= 1
    if kind == "foreign":
        assert "ladder" in types and types[cause.part] == 1
    if kind == "misplace":
        assert types == scene.part_types()


def test_shifted_scenes_are_seeded_and_carry_their_cause(tmp_path):
    a = shifted_scenes(CLASSES, 4, seed=3)
    b = shifted_scenes(CLASSES, 4, seed=3)
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert [s.meta["planted"]["kind"] for s in a[:4]] == ["swap", "foreign", "misplace", "swap"]
    manifest = render_shifted(tmp_path, CLASSES, 3, seed=3)
    assert manifest["classes"] == CLASSES and manifest["n_per_class"] == 3
    from vrx.data.toyworld import load_scene

    scene = load_scene(tmp_path / "ambulance" / "000001.json")
    cause = planted_cause(scene)
    assert cause is not None and cause.kind == "foreign" and cause.part in ("ladder", "stop_sign", "door")
    with pytest.raises(ConfigError):
        shifted_scenes(CLASSES, 0, seed=0)


# ------------------------------------------------------------------------------- pixel edits
def _image(seed=0, size=32):
    return np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)


def _box(y0, x0, y1, x1, size=32):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_fill_and_transplant_change_only_their_region():
    img, other = _image(0), _image(1)
    mask = _box(4, 5, 10, 12)
    new, region = fill(img, mask, np.array([0.5, 0.4, 0.3]))
    assert np.array_equal(region, mask) and np.all(new[mask] == np.float32([0.5, 0.4, 0.3]))
    assert np.array_equal(new[~region], img[~region])
    new, region = transplant(img, other, mask)
    assert np.array_equal(new[mask], other[mask]) and np.array_equal(new[~mask], img[~mask])


def test_paste_takes_the_patch_from_the_stated_image_and_clears_the_old_one():
    img, src = _image(0), _image(1)
    src_mask = _box(20, 20, 24, 28)              # centre (21.5, 23.5)
    clear = _box(2, 2, 6, 6)
    value = np.array([0.1, 0.2, 0.3], np.float32)
    new, region = paste(img, src, src_mask, (5.5, 9.5), clear=clear, value=value)
    target = shift_mask(src_mask, -16, -14)
    assert np.array_equal(new[target], src[src_mask])      # the source's pixels, moved as a block
    assert np.all(new[clear & ~target] == value)
    assert np.array_equal(region, clear | target)
    changed = (new != img).any(-1)
    assert not (changed & ~region).any()


def test_paste_clipped_at_the_border_and_bad_shapes():
    img = _image(0)
    new, region = paste(img, _image(1), _box(0, 0, 6, 6), (0.0, 31.0))
    assert region.sum() < 36 and not ((new != img).any(-1) & ~region).any()
    with pytest.raises(ConfigError):
        fill(img, np.zeros((8, 8), bool), 0.5)
    with pytest.raises(ConfigError):
        paste(img, _image(1, 16), _box(0, 0, 2, 2, 16), (5, 5))


def test_place_elsewhere_and_top_area():
    mask = _box(0, 0, 4, 4)
    allowed = _box(16, 16, 32, 32)
    moved = place_elsewhere(mask, allowed, np.random.default_rng(0))
    assert moved is not None and moved.sum() == 16 and not (moved & mask).any()
    assert (moved & allowed).sum() >= 0.8 * 16
    assert place_elsewhere(mask, np.zeros_like(allowed), np.random.default_rng(0), tries=20) is None
    heat = np.arange(16, dtype=float).reshape(4, 4)
    assert np.array_equal(np.flatnonzero(top_area(heat, 3)), [13, 14, 15])


# ------------------------------------------------------------------------------- error typing
EDGES = [(0, 1), (1, 0)]
NAMES = ["a", "b"]


def _account(node, edge, present=None, **kw):
    present = np.ones((2, 2), bool) if present is None else present
    return account_error(np.array(node, float), np.array(edge, float), present, EDGES, [2, 2], NAMES, **kw)


def test_concept_error_blames_the_node_with_the_largest_margin():
    acc = _account([[0.2, -0.1], [1.5, 0.3]], [[0.05, 0.0], [0.1, 0.0]])
    assert acc.type == "concept" and acc.structure_share == pytest.approx(0.15 / 2.05)
    assert acc.culprit.kind == "node" and (acc.culprit.class_graph, acc.culprit.concept) == ("b", 1)
    assert acc.node_margin == pytest.approx(1.9) and acc.edge_margin == pytest.approx(0.15)


def test_structure_and_both():
    acc = _account([[0.1, 0.0], [0.0, 0.0]], [[0.1, 0.9], [0.0, 0.2]])
    assert acc.type == "structure" and acc.culprit.kind == "edge"
    assert (acc.culprit.class_graph, acc.culprit.concept, acc.culprit.target) == ("a", 2, 1)
    acc = _account([[0.5, 0.0], [0.0, 0.0]], [[0.5, 0.0], [0.0, 0.0]])
    assert acc.type == "both" and acc.structure_share == pytest.approx(0.5)
    assert acc.culprit.margin_contribution == pytest.approx(0.5)


def test_undetected_nodes_and_their_edges_are_not_culprits_unless_missing_blame_says_so():
    present = np.array([[True, False], [True, True]])
    acc = _account([[0.1, 5.0], [0.2, 0.0]], [[3.0, 3.0], [0.0, 0.0]], present)
    assert acc.type == "concept" and (acc.culprit.class_graph, acc.culprit.concept) == ("b", 1)
    blame = np.full((2, 2), np.nan)
    blame[0, 1] = 0.9
    acc = _account([[0.1, 5.0], [0.2, 0.0]], [[3.0, 3.0], [0.0, 0.0]], present, missing_blame=blame)
    assert acc.culprit.kind == "missing" and (acc.culprit.class_graph, acc.culprit.concept) == ("a", 2)
    again = _account([[0.1, 5.0], [0.2, 0.0]], [[3.0, 3.0], [0.0, 0.0]], present, missing_blame=blame,
                     exclude={acc.culprit.key})
    assert (again.culprit.class_graph, again.culprit.concept) == ("b", 1)


def test_share_when_the_grn_does_not_see_the_error():
    assert classify_share(-1.0, -3.0) == ("structure", 0.75)
    assert classify_share(2.0, -5.0) == ("concept", 0.0)
    with pytest.raises(ConfigError):
        classify_share(1.0, 1.0, low=0.8, high=0.2)


# ------------------------------------------------------------------------------- records and JSON
def _record(i, vrx_type, corrected):
    edits = {e: EditOutcome("fill", "a" if corrected.get(e) else "b", bool(corrected.get(e)), 10) for e in EDITS}
    return ConsistencyRecord(image=f"x/{i}.png", true_class="a", predicted="b", grn_predicted="b",
                             planted={"kind": "swap", "type": "concept", "part": "ladder", "detail": {}},
                             account={"type": vrx_type, "node_margin": 1.0, "edge_margin": 0.0,
                                      "structure_share": 0.0, "culprit": None},
                             culprit_overlap=0.9, culprit_on_cause=i % 2 == 0, type_agrees=vrx_type == "concept",
                             sentences={}, edits=edits)


def test_result_table_rates_and_json_round_trip():
    records = [_record(0, "concept", {"vrx": True}), _record(1, "structure", {"vrx": True, "random": True}),
               _record(2, "both", {}), _record(3, "concept", {"vrx": True, "good_concept": True})]
    res = ConsistencyResult(records, n_images=10, accuracy=0.6, test_accuracy=0.99,
                            config=ConsistencyConfig().to_dict(), run="r", images="i", seconds=1.0)
    table = res.counts()
    assert table["before"] == {"total": 4, "concept": 2, "structure": 1, "both": 1}
    assert table["vrx"] == {"total": 1, "concept": 0, "structure": 0, "both": 1}
    assert table["random"]["total"] == 3
    assert res.rate("vrx") == 0.75 and res.rate("gradcam") == 0.0
    assert res.culprit_rate == 0.5 and res.type_rate == 0.5
    assert res.planted_vs_vrx() == {"concept": {"concept": 2, "structure": 1, "both": 1}}
    data = json.loads(json.dumps(res.to_dict()))
    assert set(data) >= {"version", "summary", "records", "config", "n_images", "accuracy"}
    assert set(data["records"][0]) >= {"image", "true_class", "predicted", "planted", "account", "edits",
                                       "culprit_on_cause", "type_agrees"}
    back = ConsistencyResult.from_dict(data)
    assert back.markdown() == res.markdown() and back.counts() == table
    assert "| VRX-guided | 1 | 0 | 0 | 1 |" in res.markdown()


def test_config_is_checked():
    with pytest.raises(ConfigError):
        ConsistencyConfig(max_steps=0)
    with pytest.raises(ConfigError):
        ConsistencyConfig(patch="circle")
    with pytest.raises(ConfigError):
        ConsistencyConfig(low=0.9, high=0.1)


# ------------------------------------------------------------------------------- on a tiny run
def test_experiment_end_to_end_on_a_tiny_run(vrx_run, toy_world, capsys):
    import argparse

    from vrx.cli import consistency as cli
    from vrx.errors import ArtifactError
    from vrx.experiments.consistency import ConsistencyExperiment
    from vrx.run import Run

    parser = argparse.ArgumentParser(prog="vrx")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["consistency", "--run", str(vrx_run), "--n-per-class", "4", "--limit", "3"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| images still wrong | total | concept | structure | both |" in out
    run = Run(vrx_run)
    data = json.loads(run.experiment_result_path("consistency").read_text())
    res = ConsistencyResult.from_dict(data)
    assert res.n_images == 12 and res.n_errors <= 3
    exp = ConsistencyExperiment(run)
    split = run.experiment_dir("consistency") / "images"
    for r in res.records:
        assert r.predicted != r.true_class
        assert r.account["type"] in ("concept", "structure", "both")
        assert set(r.edits) <= set(EDITS) and "vrx" in r.edits
        for e in r.edits.values():
            assert e.corrected == (e.predicted == r.true_class)
        # Re-measuring the same image gives the same record: the edits are seeded.
        assert exp.measure(r.image, r.predicted).to_dict() == r.to_dict()
    assert (split / "toyworld.json").exists()
    from vrx.report import render_report

    page = render_report(run, n_samples=0)
    assert 'id="experiments"' in page and "Logic consistency" in page and "VRX-guided" in page
    # An ordinary toyworld image has no planted cause: a clear error, not a traceback.
    with pytest.raises(ArtifactError, match="no planted cause"):
        exp.measure(toy_world / "ambulance" / "000000.png", "school_bus")

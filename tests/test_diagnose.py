"""vrx diagnose: planted training biases, the recommendation, and the diagnosis on a tiny run."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from vrx.data.toyworld import PART_TYPES
from vrx.errors import ConfigError
from vrx.experiments.bias import (
    CONCEPT_CLASS, CONCEPT_PART, TRAIN_POSE, added_scenes, scenario_scenes, write_scenes,
)
from vrx.experiments.diagnose import diagnosis_markdown, recommend


def test_structure_scenario_trains_each_class_in_one_pose_and_tests_all():
    train = scenario_scenes("structure", "train", 6, seed=1)
    assert {(s.cls, s.pose) for s in train} == set(TRAIN_POSE.items())
    test = scenario_scenes("structure", "test", 30, seed=1)
    assert {s.pose for s in test if s.cls == "ambulance"} == {"side", "three_quarter", "tilted"}


def test_concept_scenario_drops_the_part_in_every_second_test_image_only():
    test = scenario_scenes("concept", "test", 6, seed=2)
    target = [s for s in test if s.cls == CONCEPT_CLASS]
    assert [CONCEPT_PART in s.part_types() for s in target] == [False, True] * 3
    assert all(CONCEPT_PART in s.part_types() for s in scenario_scenes("concept", "train", 6, seed=2)
               if s.cls == CONCEPT_CLASS)
    other = [s for s in test if s.cls != CONCEPT_CLASS]
    assert all(s.meta["dropped"] is None for s in other)


def test_added_scenes_and_their_checks(tmp_path):
    poses = added_scenes("structure", "school_bus", "poses", 6, seed=0)
    assert [s.pose for s in poses] == ["side", "three_quarter", "tilted"] * 2
    assert {s.pose for s in added_scenes("structure", "school_bus", "same", 4, seed=0)} == {"tilted"}
    without = added_scenes("concept", "fire_engine", "without", 3, seed=0, part="ladder")
    assert all("ladder" not in s.part_types() for s in without)
    # Splits never share a scene.
    train = scenario_scenes("concept", "train", 3, seed=0, classes=["fire_engine"])
    assert {s.to_json() for s in train}.isdisjoint({s.to_json() for s in added_scenes("concept", "fire_engine", "same", 3, seed=0)})
    with pytest.raises(ConfigError):
        added_scenes("concept", "fire_engine", "without", 3, seed=0)
    with pytest.raises(ConfigError):
        scenario_scenes("pose", "train", 3, seed=0)
    out = write_scenes(tmp_path, without, ["fire_engine"], seed=0)
    manifest = json.loads((out / "toyworld.json").read_text())
    assert manifest["counts"] == {"fire_engine": 3, "random": 0} and manifest["part_types"] == PART_TYPES
    assert len(list((out / "fire_engine").glob("added-*.json"))) == 3


NAMES = {("fire_engine", 1): "ladder", ("ambulance", 2): "cross"}


def test_recommendations_name_the_class_and_what_its_data_lacks():
    rec = recommend("fire_engine", Counter(concept=5, structure=1), Counter({("missing", "fire_engine", 1, None): 4,
                                                                            ("node", "ambulance", 2, None): 2}), NAMES)
    assert rec == {"class": "fire_engine", "type": "concept", "part": "ladder", "addition": "without",
                   "text": "fire_engine: concept 1 (ladder) missing — add fire_engine images without ladder"}
    rec = recommend("school_bus", Counter(structure=3, concept=1), Counter({("edge", "school_bus", 1, 2): 3}), NAMES)
    assert rec["type"] == "structure" and rec["addition"] == "poses"
    assert rec["text"] == "school_bus: concepts match, relations fail — add school_bus images in other poses"
    rec = recommend("ambulance", Counter(concept=2), Counter({("node", "ambulance", 2, None): 2}), NAMES)
    assert rec["text"] == "ambulance: concept 2 (cross) misleads — add ambulance images without cross"


def test_diagnose_on_a_tiny_run(vrx_run, tmp_path, capsys):
    import argparse

    from vrx.cli import diagnose as cli
    from vrx.run import Run

    test = write_scenes(tmp_path / "test", scenario_scenes("concept", "test", 4, seed=5),
                        ["fire_engine", "ambulance", "school_bus"], seed=5)
    parser = argparse.ArgumentParser(prog="vrx")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["diagnose", "--run", str(vrx_run), "--images", str(test), "--planted", "concept"])
    assert args.func(args) == 0
    assert "| true class | predicted | errors |" in capsys.readouterr().out
    d = json.loads(Run(vrx_run).experiment_result_path("diagnosis").read_text())
    assert d["n_images"] == 12 and d["n_errors"] == len(d["errors"])
    assert sum(p["n"] for p in d["pairs"]) == d["n_errors"]
    for e in d["errors"]:
        assert e["true_class"] != e["predicted"] and e["type"] in ("concept", "structure", "both")
    if d["n_errors"]:
        assert d["type_agreement"] == sum(e["type"] == "concept" for e in d["errors"]) / d["n_errors"]
        assert {r["class"] for r in d["recommendations"]} == {e["true_class"] for e in d["errors"]}
    assert d["markdown"] == diagnosis_markdown(d)
    from vrx.report import render_report

    assert "Diagnosis (paper section 4.4)" in render_report(vrx_run, n_samples=0)

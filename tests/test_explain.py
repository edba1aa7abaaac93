"""``vrx explain`` on a tiny complete run: the JSON schema, agreement with the stored graphs, errors."""

from __future__ import annotations

import argparse
import json
import math
import shutil

import pytest
import torch

from vrx.errors import ArtifactError, InvalidImageError, VRXError
from vrx.explain import SCHEMA_VERSION, ExplainError, RunExplainer, explain_images, unique_stems
from vrx.run import Run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _parser(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrx")
    module.register(parser.add_subparsers(dest="command"))
    return parser


@pytest.fixture(scope="module")
def explained(vrx_run, toy_world, tmp_path_factory):
    """Two stored images explained through the CLI, plus a copy of one under another folder (same stem)."""
    from vrx.cli import explain

    ds = Run(vrx_run).graphs()
    rows = [0, len(ds) - 1]                       # first and last image: two different classes
    images = [ds.image_paths[i] for i in rows]
    twin = tmp_path_factory.mktemp("twin") / images[0].split("/")[-1]
    shutil.copy(images[0], twin)
    out = tmp_path_factory.mktemp("explain")
    args = _parser(explain).parse_args(["explain", "--run", str(vrx_run), "--out", str(out), "--max-edges", "3",
                                        *images, str(twin)])
    assert args.func(args) == 0
    return ds, rows, images, out


def test_json_schema_and_files(explained, vrx_run):
    ds, rows, images, out = explained
    bank = json.loads((vrx_run / "concepts" / "bank.json").read_text())
    n_concepts = {c: len(v) for c, v in bank["classes"].items()}
    stem = images[0].split("/")[-1].rsplit(".", 1)[0]
    names = sorted(p.name for p in out.iterdir())
    # Two images share a stem: the second gets a suffix, nothing is overwritten.
    assert f"{stem}.json" in names and f"{stem}-2.json" in names and len(names) == 6
    for js in out.glob("*.json"):
        d = json.loads(js.read_text())
        assert d["schema_version"] == SCHEMA_VERSION
        assert (out / d["figure"]).read_bytes()[:8] == PNG_MAGIC and d["figure"] == js.with_suffix(".png").name
        assert d["class_names"] == list(bank["classes"])
        classes = d["class_names"]
        for who in ("classifier", "grn"):
            probs = d[who]["probabilities"]
            assert set(probs) == set(classes) and math.isclose(sum(probs.values()), 1.0, abs_tol=1e-6)
            assert all(0.0 <= p <= 1.0 for p in probs.values())
            assert d[who]["class"] == max(probs, key=probs.get)
        assert d["grn"]["class"] == max(d["grn"]["scores"], key=d["grn"]["scores"].get)
        assert d["grn"]["agrees_with_classifier"] == (d["grn"]["class"] == d["classifier"]["class"])
        assert d["explained_class"] == d["grn"]["class"]
        assert set(d["classes"]) == set(classes)
        for cname, c in d["classes"].items():
            n = n_concepts[cname]
            assert c["n_concepts"] == n and len(c["nodes"]) == n          # padding slots are no concepts
            assert [v["concept"] for v in c["nodes"]] == list(range(1, n + 1))
            assert len(c["edges"]) == n * (n - 1)
            present = {}
            for v in c["nodes"]:
                assert isinstance(v["present"], bool) and v["concept_id"] == f"{cname}/{v['concept']}"
                assert math.isfinite(v["contribution"])
                present[v["concept"]] = v["present"]
                if v["present"]:
                    assert len(v["position"]) == 2 and all(0.0 <= x <= 1.0 for x in v["position"])
                else:
                    assert v["position"] is None
            for e in c["edges"]:
                assert e["source"] != e["target"] and math.isfinite(e["contribution"])
                assert e["present"] == (present[e["source"]] and present[e["target"]])
                if not e["present"]:
                    assert e["contribution"] == 0.0
            # A linear head: the score is the bias plus what every class graph contributes.
            assert d["grn"]["exact"]
            total = c["bias"] + sum(c["graph_contribution"].values()) + c["residual"]
            assert math.isclose(total, c["score"], abs_tol=1e-4) and abs(c["residual"]) < 1e-4
            why = cname == d["explained_class"]
            assert c["kind"] == ("why" if why else "why not") and (c["margin"] is None) == why
            assert c["sentence"].startswith("why not " if not why else "why ")
        assert d["sentences"]["why"] == d["classes"][d["explained_class"]]["sentence"]
        assert set(d["sentences"]["why_not"]) == set(classes) - {d["explained_class"]}


def test_explanations_match_the_stored_graphs(explained, vrx_run):
    """Explaining an image file rebuilds exactly the graph and teacher logits RUN/graphs holds for it."""
    ds, rows, images, out = explained
    grn = Run(vrx_run).grn()
    stored = grn.predict(ds.graphs[rows])
    for k, (row, path) in enumerate(zip(rows, images)):
        d = json.loads((out / (path.split("/")[-1].rsplit(".", 1)[0] + ".json")).read_text())
        assert d["image"] == path
        scores = torch.tensor([d["grn"]["scores"][c] for c in ds.class_names])
        logits = torch.tensor([d["classifier"]["logits"][c] for c in ds.class_names])
        torch.testing.assert_close(scores, stored[k], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logits, ds.teacher.logits[row], atol=1e-4, rtol=1e-4)


def test_bad_image_is_named_and_the_others_are_still_written(vrx_run, explained, tmp_path, capsys):
    from vrx.cli import explain

    _, _, images, _ = explained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    out = tmp_path / "out"
    with pytest.raises(ExplainError, match="broken.png") as info:
        explain_images(vrx_run, [bad, images[0]], out)
    assert isinstance(info.value, InvalidImageError)
    assert list(info.value.failed) == [str(bad)]
    written = info.value.written
    assert [p.suffix for p in written] == [".json", ".png"] and all(p.exists() for p in written)
    # The command reports the same: the good file is written, the bad one named, exit status 1.
    args = _parser(explain).parse_args(["explain", "--run", str(vrx_run), "--out", str(tmp_path / "cli"),
                                        str(bad), images[0]])
    assert args.func(args) == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and captured.out.count(str(tmp_path / "cli")) == 2


def test_missing_grn_says_to_train_first(vrx_run, explained, tmp_path):
    _, _, images, _ = explained
    run = tmp_path / "run"
    shutil.copytree(vrx_run / "concepts", run / "concepts")
    shutil.copy(vrx_run / "run.json", run / "run.json")
    with pytest.raises(ArtifactError, match="vrx train"):
        explain_images(run, [images[0]], tmp_path / "out")
    with pytest.raises(VRXError, match="no images"):
        explain_images(vrx_run, [], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_explainer_takes_a_run_or_a_path(vrx_run):
    ds = Run(vrx_run).graphs()
    by_run, by_path = RunExplainer(Run(vrx_run)), RunExplainer(vrx_run)
    assert by_run.run.path == by_path.run.path == vrx_run
    items = [e.explain_graphs(ds.graphs[:2], ds.teacher.logits[:2], ds.image_ids[:2])
             for e in (by_run, by_path)]
    assert [i.to_json() for i in items[0]] == [i.to_json() for i in items[1]]
    assert items[0][0].image == ds.image_ids[0] and items[0][0].explanation.why.sentence


def test_unique_stems():
    assert unique_stems(["a/x.png", "b/x.jpg", "x-2.png", "c/x.png", "y.png"]) == ["x", "x-2", "x-2-2", "x-3", "y"]

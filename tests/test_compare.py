"""VRX as a pixel map, and ``vrx compare``: every method on the same images, one table."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from vrx.errors import ConfigError, EmptyFolderError, UnknownClassError

import vrx.compare.vrxmap  # noqa: E402,F401  (registers the ``vrx`` method: it lives above the core)

OUTPUTS = ("compare.json", "compare.md", "grid.png", "deletion.png", "insertion.png", "tradeoff.png")


def _parser():
    from vrx.cli import compare

    parser = argparse.ArgumentParser(prog="vrx")
    compare.register(parser.add_subparsers(dest="command"))
    return parser


def _images(folder, n):
    from vrx.compare.images import select_images
    from vrx.data.images import load_image
    from vrx.models.inputs import to_tensor

    chosen = select_images(folder, n, seed=0)
    return chosen, torch.cat([to_tensor(load_image(p)) for p in chosen.paths])


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """An untrained (seeded) narrow toy CNN saved as a model folder: `--model toy:DIR`."""
    from vrx.data.toyworld import DEFAULT_CLASSES
    from vrx.models.toycnn import ToyCNN, save_toy_model

    folder = tmp_path_factory.mktemp("toy_model")
    save_toy_model(folder, ToyCNN(num_classes=3, widths=(8, 8, 16, 16, 16), seed=1),
                   {"class_names": list(DEFAULT_CLASSES), "mean": [0.5] * 3, "std": [0.25] * 3})
    return folder


# ---------------------------------------------------------------------------- VRX as a map
def _reference(run, adapter, image: np.ndarray, target: str):
    """The Interpreter's own explanation of one image, and the segment each detected node matched."""
    from vrx.concepts.features import PatchMemo
    from vrx.graphs.builder import SCGBuilder
    from vrx.interpret import Interpreter

    bank, grn = run.bank_and_grn()
    builder = SCGBuilder(adapter, bank, run.match_config(), cache_dir=None, memo=PatchMemo(2), show_progress=False)
    ds, matches = builder.transform([image], return_matches=True)
    expl = Interpreter(grn).explain(ds.graphs, target=target)[0]
    segments = builder.featurizer(image).masks
    masks = {}
    for k, cname in enumerate(bank.class_names):
        for n in np.flatnonzero(matches.patch[0, k] >= 0):
            masks[(cname, int(n) + 1)] = segments[matches.patch[0, k, n]]
    nodes = {(nd.class_graph, nd.concept): nd.contribution for nd in expl.classes[target].nodes}
    edges = [e for e in expl.classes[target].edges if e.present]
    return masks, nodes, edges


def test_vrx_map_paints_each_concepts_contribution_on_its_segment(vrx_run, toy_world):
    from vrx.attribution import get
    from vrx.run import Run

    run = Run(vrx_run)
    adapter = run.adapter()
    method = get("vrx")(adapter, run=run)
    chosen, x = _images(toy_world, 3)
    maps = method.attribute(x)
    assert maps.shape == (3, *x.shape[-2:]) and maps.dtype == torch.float32
    targets = method.targets(x, None)
    found = method.concepts(x)
    n_painted = 0
    for i in range(3):
        image = x[i].permute(1, 2, 0).numpy()
        target = adapter.class_name(int(targets[i]))
        masks, nodes, _ = _reference(run, adapter, image, target)
        m = maps[i].numpy().astype(np.float64)
        union = np.zeros(m.shape, bool)
        expected = np.zeros(m.shape)
        for key, mask in masks.items():
            union |= mask
            expected[mask] += nodes[key]
        assert not (m[~union] != 0).any(), "non-zero pixels outside every detected segment"
        np.testing.assert_allclose(m, expected, rtol=1e-5, atol=1e-6)
        cover = sum(mask.astype(int) for mask in masks.values()) if masks else np.zeros(m.shape, int)
        for key, mask in masks.items():
            alone = mask & (cover == 1)
            if alone.any():   # pixels of this segment only: exactly its contribution
                np.testing.assert_allclose(m[alone], nodes[key], rtol=1e-5, atol=1e-6)
                n_painted += 1
        # The same detections as data, for concept-level metrics.
        assert found[i].target == target
        assert {(c.class_graph, c.concept) for c in found[i].concepts} == set(masks)
        for c in found[i].concepts:
            assert np.array_equal(c.mask, masks[(c.class_graph, c.concept)])
            assert c.contribution == pytest.approx(nodes[(c.class_graph, c.concept)], rel=1e-6, abs=1e-9)
    assert n_painted >= 2, "the test images should have detected concepts"


def test_vrx_map_with_split_edges_adds_half_of_each_relation_to_both_ends(vrx_run, toy_world):
    from vrx.attribution import get
    from vrx.run import Run

    run = Run(vrx_run)
    adapter = run.adapter()
    method = get("vrx")(adapter, run=run, edges="split")
    assert method.config()["edges"] == "split"
    chosen, x = _images(toy_world, 2)
    maps = method.attribute(x)
    targets = method.targets(x, None)
    for i in range(2):
        target = adapter.class_name(int(targets[i]))
        masks, nodes, edges = _reference(run, adapter, x[i].permute(1, 2, 0).numpy(), target)
        total = sum(nodes[k] * masks[k].sum() for k in masks)
        total += sum(e.contribution / 2 * (masks[(e.class_graph, e.source)].sum()
                                          + masks[(e.class_graph, e.target)].sum()) for e in edges)
        assert float(maps[i].double().sum()) == pytest.approx(total, rel=1e-4, abs=1e-4)


def test_vrx_target_must_be_a_class_of_interest(vrx_run, toy_world):
    from vrx.attribution import get
    from vrx.run import Run

    run = Run(vrx_run)
    adapter = run.adapter()
    _, x = _images(toy_world, 1)
    with pytest.raises(ConfigError, match="needs run="):
        get("vrx")(adapter)
    with pytest.raises(ConfigError, match="edges"):
        get("vrx")(adapter, run=run, edges="both")
    method = get("vrx")(adapter, run=run)
    with pytest.raises(UnknownClassError, match="police_car"):
        method.attribute(x, "police_car")
    # A model class the run did not explain (as ImageNet classes outside a run's classes of interest).
    method.class_ids = method.class_ids[:2]
    outside = adapter.class_names[method.builder.class_ids[2]]
    with pytest.raises(UnknownClassError, match=f"classes of interest.*{outside}"):
        method.attribute(x, outside)


def test_vrx_is_registered_by_the_compare_app():
    from vrx.attribution import get, method_names
    from vrx.compare.vrxmap import VRXMap

    assert get("vrx") is VRXMap and "vrx" in method_names()
    assert VRXMap.signed and VRXMap.needs_run


# ---------------------------------------------------------------------------- vrx compare
@pytest.fixture(scope="module")
def compared(toy_world, toy_model, tmp_path_factory):
    """`vrx compare` of three cheap methods (RISE on a subset) on 6 toyworld images."""
    out = tmp_path_factory.mktemp("compare")
    args = _parser().parse_args([
        "compare", "--model", f"toy:{toy_model}", "--images", str(toy_world), "--methods", "saliency,gradcam,rise",
        "--set", "rise.n_masks=40", "--subset-methods", "rise", "--subset", "2", "--n", "6", "--batch", "4",
        "--grid-images", "3", "--out", str(out)])
    assert args.func(args) == 0
    return out


def test_compare_writes_every_file_with_the_expected_keys(compared):
    from vrx.compare.results import METRICS

    for name in OUTPUTS:
        assert (compared / name).stat().st_size > 0, name
    record = json.loads((compared / "compare.json").read_text())
    assert record["schema_version"] == 1 and record["n_images"] == 6 and len(record["images"]) == 6
    assert set(record["methods"]) == {"saliency", "gradcam", "rise"}
    for name, m in record["methods"].items():
        n = 2 if name == "rise" else 6
        assert m["n_images"] == n and m["images"] == list(range(n))
        assert set(m["means"]) == set(METRICS) == set(m["counts"])
        assert all(len(m["per_image"][k]) == n for k in (*METRICS, "seconds"))
        assert m["fwd_bwd_units"] == pytest.approx(m["seconds_per_image"] / record["fwd_bwd_seconds_per_image"])
        assert len(m["mean_curves"]["deletion"]) == len(record["fractions"]["deletion"])
        assert len(m["tradeoff"]["rate"]) == len(record["fractions"]["tradeoff"])
        assert m["counts"]["pointing_vehicle"] == n   # every toyworld image has a vehicle
    assert record["methods"]["rise"]["settings"]["n_masks"] == 40
    assert record["subset"]["images"] == [0, 1] and record["concepts"] is None
    md = (compared / "compare.md").read_text()
    assert "| method | images | deletion ↓ | insertion ↑ |" in md and "fwd+bwd units" in md
    assert "random map (chance)" in md and "n_masks=40" in md and "images every method ran on" in md


def test_compare_values_are_those_of_the_metrics_run_directly(compared, toy_world, toy_model):
    from vrx.attribution import get
    from vrx.metrics.deletion import deletion_insertion
    from vrx.metrics.pointing import random_baseline, vehicle_mask
    from vrx.models import load

    record = json.loads((compared / "compare.json").read_text())
    adapter = load(f"toy:{toy_model}")
    chosen, x = _images(toy_world, 6)
    assert [str(p) for p in chosen.paths] == [r["path"] for r in record["images"]]
    targets = adapter.logits(x).argmax(1)
    assert [adapter.class_name(int(t)) for t in targets] == [r["target"] for r in record["images"]]
    maps = get("saliency")(adapter).attribute(x, targets)
    auc = deletion_insertion(adapter, x, maps, mode="deletion", target=targets).auc
    np.testing.assert_allclose(record["methods"]["saliency"]["per_image"]["deletion"], auc, rtol=1e-6)
    chance = [random_baseline(vehicle_mask(chosen.part_map(i))[None])[0] for i in range(6)]
    np.testing.assert_allclose(record["random"]["per_image"]["pointing_vehicle"], chance, rtol=1e-9)


def test_compare_errors_are_clear(toy_world, toy_model, tmp_path):
    def run(*extra):
        args = _parser().parse_args(["compare", "--model", f"toy:{toy_model}", "--images", str(toy_world),
                                     "--out", str(tmp_path / "out"), *extra])
        return args.func(args)

    with pytest.raises(ConfigError, match="did you mean 'saliency'"):
        run("--methods", "salency")
    with pytest.raises(ConfigError, match="needs a run"):
        run("--methods", "vrx")
    with pytest.raises(ConfigError, match="METHOD.KEY=VALUE"):
        run("--methods", "saliency", "--set", "n_masks=3")
    with pytest.raises(ConfigError, match="not among the compared methods"):
        run("--methods", "saliency", "--subset-methods", "gradcam", "--subset", "2")
    empty = tmp_path / "empty"
    empty.mkdir()
    args = _parser().parse_args(["compare", "--model", f"toy:{toy_model}", "--images", str(empty),
                                 "--out", str(tmp_path / "o2")])
    with pytest.raises(EmptyFolderError, match="no images"):
        args.func(args)
    assert not (tmp_path / "out").exists()


def test_compare_with_a_run_adds_vrx_and_concept_orders_and_the_report_shows_it(vrx_run, toy_world, tmp_path):
    from vrx.compare.results import ORDERS
    from vrx.report import render_report
    from vrx.run import Run

    run_dir = tmp_path / "run"
    shutil.copytree(vrx_run, run_dir)   # the session's run stays as other tests expect it
    run = Run(run_dir)
    assert 'id="compare"' not in render_report(run, n_samples=0)
    args = _parser().parse_args(["compare", "--run", str(run_dir), "--images", str(toy_world),
                                 "--methods", "vrx,saliency", "--n", "9", "--batch", "3"])
    assert args.func(args) == 0
    out = run.experiment_dir("compare")
    record = json.loads((out / "compare.json").read_text())
    assert record["run"] == str(run_dir) and set(record["methods"]) == {"vrx", "saliency"}
    assert record["methods"]["vrx"]["signed"] is True
    concepts = record["concepts"]
    # The tiny run has few concepts (some classes none): some images have none of their target's.
    assert concepts["n_images"] + concepts["skipped"] == 9 and concepts["n_images"] >= 1
    for order in ORDERS:
        for mode in ("deletion", "insertion"):
            assert len(concepts["per_image"][order][mode]) == concepts["n_images"]
            assert 0.0 <= concepts["means"][order][mode] <= 1.0
    page = render_report(run, n_samples=0)
    assert 'id="compare"' in page and "<td>vrx</td>" in page and "C-Deletion" in page

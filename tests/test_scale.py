"""Executors (vrx.scale): a worker's job reproduces the local featurizer, and discovery on Ray
gives the bank of a local run (same seed) from the same patch cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vrx.concepts.config import ClusterConfig, ConceptConfig, GradCamConfig, SegmentationConfig, TCAVConfig
from vrx.concepts.features import PatchFeaturizer, from_arrays
from vrx.errors import ConfigError
from vrx.run import ModelSpec, Run
from vrx.scale.executor import LocalExecutor, make_executor
from vrx.scale.worker import featurise_items

TINY = ConceptConfig(segmentation=SegmentationConfig(n_segments=(8, 20)),
                     gradcam=GradCamConfig(min_inside=0.5),
                     cluster=ClusterConfig(n_clusters=4, n_init=1, n_members=6, min_size_fraction=0.5),
                     tcav=TCAVConfig(n_random_sets=4, random_set_size=8, n_concepts=2, alpha=0.2))


@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory):
    """An untrained (seeded) toy CNN saved as a folder, so that a worker can load it from its spec."""
    from vrx.data.toyworld import DEFAULT_CLASSES
    from vrx.models.toycnn import ToyCNN, init_toy_cnn, save_toy_model

    d = tmp_path_factory.mktemp("toy_model")
    model = init_toy_cnn(ToyCNN(num_classes=3), torch.Generator().manual_seed(0))
    save_toy_model(d, model, {"class_names": list(DEFAULT_CLASSES), "mean": [0.5] * 3, "std": [0.25] * 3})
    return d


def test_make_executor_names_what_is_wrong():
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(ConfigError, match="executor must be one of local, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="--address is for --executor ray"):
        make_executor("local", address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        make_executor("ray", workers=0)


def test_a_workers_job_is_the_local_featurisation(toy_world, toy_model_dir, tmp_path):
    spec = ModelSpec(model=f"toy:{toy_model_dir}")
    adapter = spec.load()
    seg = TINY.segmentation
    paths = sorted((toy_world / "fire_engine").glob("*.png"))[:2]
    local = PatchFeaturizer(adapter, seg, tmp_path)
    expected = [local(local_image) for local_image in _load(paths, adapter)]
    out = featurise_items(spec.to_dict(), seg.to_dict(), 8, adapter.model_id, [str(p) for p in paths])
    assert [k for k, _ in out] == [local.key(im) for im in _load(paths, adapter)]
    for (_, arrays), want in zip(out, expected):
        got = from_arrays(arrays, "test")
        assert np.array_equal(got.features, want.features) and np.array_equal(got.context, want.context)
        assert np.array_equal(got.masks, want.masks) and np.array_equal(got.bboxes, want.bboxes)
    # Entries the worker can see in the cache are not recomputed.
    again = featurise_items(spec.to_dict(), seg.to_dict(), 8, adapter.model_id, [str(p) for p in paths],
                            str(tmp_path))
    assert [a for _, a in again] == [None, None]


def test_a_worker_refuses_another_model(toy_world, toy_model_dir):
    from vrx.errors import ArtifactError

    spec = ModelSpec(model=f"toy:{toy_model_dir}")
    path = sorted((toy_world / "ambulance").glob("*.png"))[0]
    with pytest.raises(ArtifactError, match="the workers must see the same model files"):
        featurise_items(spec.to_dict(), TINY.segmentation.to_dict(), 8, "another-model", [str(path)])


def _load(paths, adapter):
    from vrx.concepts.inputs import iter_images

    return [im for _, im in iter_images(paths, adapter.input_size, show_progress=False)]


def _bank_record(run: Run) -> dict:
    """The bank as saved, less what differs between any two runs (seconds, cache counts)."""
    bank = json.loads((run.concepts_dir / "bank.json").read_text())
    bank["stats"] = {k: v for k, v in bank["stats"].items() if k not in ("seconds", "cache")}
    return bank


@pytest.mark.slow
def test_discovery_on_ray_gives_the_local_bank(toy_world, toy_model_dir, tmp_path):
    pytest.importorskip("ray")
    from vrx import stages
    from vrx.concepts.bank import ConceptBank
    from vrx.data.images import load_image_folder
    from vrx.runtime import threads

    images = load_image_folder(toy_world, max_images_per_class=5)
    spec = ModelSpec(model=f"toy:{toy_model_dir}")
    banks, runs, graphs = {}, {}, {}
    for name in ("local", "ray"):
        run = runs[name] = Run(tmp_path / name)
        run.write_manifest(spec, str(toy_world))
        executor = make_executor(name, workers=2 if name == "ray" else None)
        with executor, threads(torch_threads=1, blas_threads=1):
            banks[name], summary = stages.discover(run, spec.load(), images, TINY, show_progress=False,
                                                   executor=executor)
            # Graphs of every image, three per class not yet featurised: those go to the workers too.
            graphs[name] = stages.build_graphs(run, spec.load(), load_image_folder(toy_world),
                                               show_progress=False, executor=executor)
    n_images = sum(len(v) for v in images.paths.values()) + len(images.random_paths)
    assert summary["executor"] == {**summary["executor"], "executor": "ray", "workers": 2,
                                   "images": n_images, "computed": n_images}
    assert banks["ray"].stats["cache"] == {"hits": n_images, "misses": 0}  # every image came from Ray
    assert _bank_record(runs["ray"]) == _bank_record(runs["local"])
    a, b = ConceptBank.load(runs["local"].concepts_dir), ConceptBank.load(runs["ray"].concepts_dir)
    assert sum(len(a[c]) for c in a.class_names) >= 2   # a bank with concepts, not an empty one
    for cls in a.class_names:
        assert np.array_equal(a.centers(cls), b.centers(cls))
    cache = {name: {p.name: p.read_bytes() for p in runs[name].patch_cache_dir.glob("*.safetensors")}
             for name in runs}
    n_graph_images = len(load_image_folder(toy_world))
    assert len(cache["ray"]) == n_images + n_graph_images - 5 * 3 and cache["ray"] == cache["local"]
    a, b = graphs["local"].graphs, graphs["ray"].graphs
    assert len(a) == n_graph_images and torch.equal(a.x, b.x) and torch.equal(a.present, b.present)
    assert torch.equal(graphs["local"].teacher.logits, graphs["ray"].teacher.logits)


def test_only_the_ray_module_imports_ray():
    import ast
    from pathlib import Path

    import vrx

    root = Path(vrx.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.add(str(path.relative_to(root)))
    assert importers == {"scale/ray_executor.py"}


def test_discover_command_rejects_an_address_without_ray(toy_world, toy_model_dir, tmp_path):
    import argparse

    from vrx.cli import discover

    parser = argparse.ArgumentParser(prog="vrx")
    discover.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["discover", "--model", f"toy:{toy_model_dir}", "--images", str(toy_world),
                              "--out", str(tmp_path / "run"), "--address", "127.0.0.1:6379"])
    with pytest.raises(ConfigError, match="--address is for --executor ray"):
        args.func(args)
    assert not (tmp_path / "run").exists()  # refused before anything was written

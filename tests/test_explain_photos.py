"""The real-model path from photos to figure: a small EfficientNet-Lite0 run on scikit-image's photos,
discovered in the one-forward feature mode, then ``vrx explain`` on the whole photo."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image
from skimage import data, transform

from vrx.concepts.config import ClusterConfig, ConceptConfig, GradCamConfig, SegmentationConfig, TCAVConfig

CONFIG = ConceptConfig(segmentation=SegmentationConfig(features="map"), gradcam=GradCamConfig(min_inside=0.5),
                       cluster=ClusterConfig(n_clusters=5, n_init=2, n_members=6, min_size_fraction=0.5),
                       tcav=TCAVConfig(n_random_sets=6, random_set_size=10, n_concepts=3, alpha=0.2))


def _views(image: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    image = image.astype(np.float32) / 255.0
    image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    h, w = image.shape[:2]
    out = []
    for _ in range(n):
        s = int(min(h, w) * rng.uniform(0.7, 1.0))
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        v = image[y:y + s, x:x + s]
        out.append(transform.resize(v[:, ::-1] if rng.random() < 0.5 else v, (224, 224), anti_aliasing=True))
    return out


def _save(images, folder, stem):
    folder.mkdir(parents=True, exist_ok=True)
    for k, im in enumerate(images):
        Image.fromarray((np.clip(im, 0, 1) * 255).round().astype(np.uint8)).save(folder / f"{stem}_{k}.png")


@pytest.mark.slow
def test_explain_a_photo_with_a_bank_discovered_on_photos(effnet, tmp_path):
    from vrx import stages
    from vrx.cli import explain as explain_cli
    from vrx.data.images import load_image_folder
    from vrx.grn.config import DistillConfig, GRNConfig
    from vrx.run import ModelSpec, Run
    from vrx.runtime import threads

    cat, espresso = effnet.class_name(285), effnet.class_name(967)
    images = tmp_path / "photos"
    _save(_views(data.chelsea(), 4, 0), images / cat, "chelsea")
    _save(_views(data.coffee(), 4, 1), images / espresso, "coffee")
    others = [data.astronaut(), data.rocket(), data.camera(), data.immunohistochemistry()]
    _save([v for k, im in enumerate(others) for v in _views(im, 2, 10 + k)], images / "random", "random")
    photo = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)

    run = Run(tmp_path / "run")
    run.write_manifest(ModelSpec(model="efficientnet-lite0"), str(images))
    folder = load_image_folder(images)
    with threads(torch_threads=1, blas_threads=1):
        bank, _ = stages.discover(run, effnet, folder, CONFIG, show_progress=False)
        assert bank.config.segmentation.features == "map"
        assert sum(len(bank[c]) for c in bank.class_names) >= 1
        stages.build_graphs(run, effnet, folder, show_progress=False)
        stages.train_grn(run, GRNConfig(hidden=(8, 8), input_proj=8, edge_dim=4),
                         DistillConfig(epochs=20, batch_size=4, val_fraction=0.25, test_fraction=0.25),
                         ablations=False, show_progress=False)
        # Through the `vrx explain` command (not vrx.cli.main, which would configure logging globally).
        parser = argparse.ArgumentParser(prog="vrx")
        explain_cli.register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["explain", "--run", str(run.path), "--out", str(tmp_path / "out"), str(photo)])
        assert args.func(args) == 0
    record = json.loads((tmp_path / "out" / "chelsea.json").read_text())
    assert record["classifier"]["class"] == cat          # the full photo is the cat, not the espresso
    assert record["classifier"]["top_class"]["name"] == cat
    assert set(record["classes"]) == {cat, espresso}
    assert record["grn"]["class"] in (cat, espresso) and record["sentences"]["why"]
    png = tmp_path / "out" / record["figure"]
    assert png.stat().st_size > 10_000 and Image.open(png).size[0] > 200

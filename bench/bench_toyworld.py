"""Benchmark toyworld rendering and the toy CNN trainer, with sanity figures on part reliance.

Prints, all measured in this run:
  * seconds to render 1,000 128 x 128 scenes (in memory) and per image;
  * training the toy CNN on the demo dataset: seconds, epochs, val/test accuracy, and the ratio of
    training time to one forward-only pass over the training split;
  * test accuracy when a class-defining part is removed from the test scenes (it should drop),
    beside a control edit (one wheel removed) that should not matter;
  * a colour-histogram baseline (logistic regression), to show colour alone does not name the class;
  * with --pair (default on), the toy CNN trained on the defaults plus the structure-only pair, and its
    accuracy on the pair's test images.

Run: .venv/bin/python bench/bench_toyworld.py [--n-per-class N] [--epochs E] [--no-pair]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vrx.cli.toyworld import DEMO_N_PER_CLASS
from vrx.data.toyworld import (
    DEFAULT_CLASSES, STRUCTURE_PAIR, generate_scenes, load_scene, remove_part, render, render_dataset,
)
from vrx.models.toycnn import load_toy_model
from vrx.models.toytrain import DEFAULT_EPOCHS, DEFAULT_THREADS, load_images, predict, train_toy
from vrx.store import read_json

# Parts removed from each class's test scenes; "one wheel" is the control (wheels are on every class).
DEFINING = [("fire_engine", ["ladder"]), ("ambulance", ["cross"]), ("ambulance", ["cross", "stripe"]),
            ("school_bus", ["window"]), ("school_bus", ["stop_sign", "door"])]


def bench_render(n: int = 1000) -> None:
    scenes = generate_scenes(DEFAULT_CLASSES, (n + 2) // 3, seed=123)[:n]
    t = time.perf_counter()
    for s in scenes:
        render(s)
    dt = time.perf_counter() - t
    print(f"render: {n} images 128x128 in {dt:.2f} s ({1000 * dt / n:.2f} ms/image; "
          f"scene sampling not included)")


def _predict_scenes(model, config, scenes) -> np.ndarray:
    x = torch.from_numpy(np.stack([render(s)[0] for s in scenes])).permute(0, 3, 1, 2).contiguous()
    mean, std = torch.tensor(config["mean"]), torch.tensor(config["std"])
    return predict(model, x, mean, std).numpy()


def part_reliance(model_dir: Path) -> None:
    model, config = load_toy_model(model_dir)
    classes = config["class_names"]
    test = [Path(p) for p in read_json(model_dir / "split.json")["test"]]
    scenes = [load_scene(p.with_suffix(".json")) for p in test]
    labels = np.array([classes.index(s.cls) for s in scenes])
    base = _predict_scenes(model, config, scenes)
    for cls, parts in DEFINING:
        if cls not in classes:
            continue
        idx = [i for i, s in enumerate(scenes) if s.cls == cls]
        edited, control = [], []
        for i in idx:
            s = scenes[i]
            for t in parts:
                for j in reversed(s.find(t)):
                    s = remove_part(s, j)
            edited.append(s)
            control.append(remove_part(scenes[i], scenes[i].find("wheel")[0]))
        acc0 = float((base[idx] == labels[idx]).mean())
        acc1 = float((_predict_scenes(model, config, edited) == labels[idx]).mean())
        pred = _predict_scenes(model, config, edited)
        acc1 = float((pred == labels[idx]).mean())
        acc2 = float((_predict_scenes(model, config, control) == labels[idx]).mean())
        goes = ", ".join(f"{classes[k]} {np.mean(pred == k):.2f}" for k in range(len(classes)))
        print(f"part reliance {cls:12s}: test acc {acc0:.3f} -> {acc1:.3f} without {'+'.join(parts)} "
              f"(predicted: {goes}); {acc2:.3f} without one wheel (control), n={len(idx)}")


def colour_baseline(model_dir: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    split = read_json(model_dir / "split.json")
    classes = read_json(model_dir / "config.json")["class_names"]

    def feats(paths):
        x = load_images([Path(p) for p in paths]).numpy()
        q = (x // 32).astype(np.int64)  # 8 levels per channel, 512-bin joint histogram
        codes = (q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]).reshape(len(x), -1)
        return np.stack([np.bincount(c, minlength=512) for c in codes]) / codes.shape[1]

    def labels(paths):
        return np.array([classes.index(Path(p).parent.name) for p in paths])

    clf = LogisticRegression(max_iter=2000, C=10.0).fit(feats(split["train"]), labels(split["train"]))
    acc = clf.score(feats(split["test"]), labels(split["test"]))
    print(f"colour-histogram baseline (512-bin joint RGB, logistic regression): test acc {acc:.3f} "
          f"(chance {1 / len(classes):.3f})")


def bench_train(root: Path, n_per_class: int, epochs: int, classes: list[str], tag: str) -> Path:
    data, out = root / f"data_{tag}", root / f"model_{tag}"
    t = time.perf_counter()
    render_dataset(data, n_per_class, seed=0, classes=classes, n_random=0)
    print(f"[{tag}] rendered and wrote {n_per_class * len(classes)} images in {time.perf_counter() - t:.1f} s")
    m = train_toy(data, out, epochs=epochs, seed=0, progress=False)
    model, config = load_toy_model(out)
    x = load_images([Path(p) for p in read_json(out / "split.json")["train"]])
    mean, std = torch.tensor(config["mean"]), torch.tensor(config["std"])
    fwd = float("inf")
    for _ in range(2):  # the faster of two passes: the machine may be shared
        t = time.perf_counter()
        predict(model, x, mean, std)
        fwd = min(fwd, time.perf_counter() - t)
    print(f"[{tag}] train: {m['seconds']:.1f} s for {m['epochs']} epochs (best {m['best_epoch']}), "
          f"{m['n_train']}/{m['n_val']}/{m['n_test']} images; val acc {m['val_accuracy']:.3f}, "
          f"test acc {m['test_accuracy']:.3f}")
    print(f"[{tag}] one forward-only pass over the training split: {fwd:.2f} s; "
          f"training / forward epoch = {m['seconds'] / fwd:.1f}x")
    return out


def pair_accuracy(model_dir: Path) -> None:
    model, config = load_toy_model(model_dir)
    classes = config["class_names"]
    test = [Path(p) for p in read_json(model_dir / "split.json")["test"]]
    pair = [p for p in test if p.parent.name in STRUCTURE_PAIR]
    x = load_images(pair)
    y = np.array([classes.index(p.parent.name) for p in pair])
    pred = predict(model, x, torch.tensor(config["mean"]), torch.tensor(config["std"])).numpy()
    within = np.isin(pred, [classes.index(c) for c in STRUCTURE_PAIR]).mean()
    print(f"structure-only pair {STRUCTURE_PAIR}: test acc {(pred == y).mean():.3f} on {len(y)} images "
          f"(chance within the pair 0.5; {within:.3f} predicted as one of the pair)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-class", type=int, default=DEMO_N_PER_CLASS)
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    ap.add_argument("--no-pair", action="store_true", help="skip the structure-pair training run")
    args = ap.parse_args()
    # Training runs with the trainer's default thread count; the forward pass is timed with the same.
    torch.set_num_threads(DEFAULT_THREADS)
    print(f"torch threads: {torch.get_num_threads()} (trainer default)")
    bench_render()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = bench_train(root, args.n_per_class, args.epochs, list(DEFAULT_CLASSES), "default")
        part_reliance(out)
        colour_baseline(out)
        if not args.no_pair:
            out5 = bench_train(root, args.n_per_class, args.epochs,
                               list(DEFAULT_CLASSES) + list(STRUCTURE_PAIR), "with_pair")
            pair_accuracy(out5)


if __name__ == "__main__":
    main()

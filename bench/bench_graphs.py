"""Benchmark of graph building: seconds per image to build all K class graphs (cold and warm patch cache)
against the bare classifier forward over that image's patches, and GRN training time on the result.

    python bench/bench_graphs.py [--model toy:DIR] [--run RUN] [--per-class 4] [--json FILE]

Images are freshly rendered toyworld scenes. The bank comes from ``RUN/concepts`` with ``--run``, else
it is synthetic: per class, k-means on the patch features of a few *other* rendered images, the 4
largest clusters as concepts, with discovery's default settings (3 SLIC resolutions, Grad-CAM filter).
Without ``--model`` the classifier is an untrained seeded toy CNN (fine for timing, claims nothing).
After a warm-up forward, the measures are interleaved image by image (forward over its patches, build
cold, build warm, forward again, keeping the faster forward), so that load from other processes falls
on all of them alike; every ratio is between numbers measured in this same run.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vrx.concepts.bank import Concept, ConceptBank
from vrx.concepts.config import ConceptConfig
from vrx.concepts.features import PatchFeaturizer
from vrx.concepts.segmentation import SegmentationConfig, segment_image
from vrx.data.images import load_image
from vrx.data.toyworld import ALL_CLASSES, DEFAULT_CLASSES, list_images, render_dataset
from vrx.graphs.builder import SCGBuilder
from vrx.graphs.dataset import describe
from vrx.grn.config import DistillConfig, GRNConfig
from vrx.grn.distill import Distiller
from vrx.models.adapter import ClassifierAdapter
from vrx.run import Run
from vrx.runtime import GRN_THREADS, threads
from vrx.store import write_json


class Timed:
    """Wraps a callable and adds up the seconds spent in it (a builder stage, for the breakdown)."""

    def __init__(self, fn: Any):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t


def untrained_adapter() -> ClassifierAdapter:
    """The seeded untrained toy CNN that tests/conftest.py uses."""
    from vrx.models.toycnn import ToyCNN, init_toy_cnn

    model = init_toy_cnn(ToyCNN(num_classes=3), torch.Generator().manual_seed(0))
    return ClassifierAdapter(model, input_size=(128, 128), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                             bottleneck=model.bottleneck, class_names=list(DEFAULT_CLASSES),
                             name="toy-untrained")


def synthetic_bank(adapter: ClassifierAdapter, paths: dict[str, list[Path]], n_concepts: int,
                   seed: int) -> ConceptBank:
    """Per class, the ``n_concepts`` largest k-means clusters of its patch features, as a ConceptBank."""
    from sklearn.cluster import KMeans

    config = ConceptConfig(seed=seed)
    featurizer = PatchFeaturizer(adapter, config.segmentation, None, batch_size=config.batch_size)
    concepts = {}
    for cls, files in paths.items():
        feats = np.concatenate([featurizer(load_image(p)).features for p in files])
        km = KMeans(n_clusters=2 * n_concepts, n_init=3, random_state=seed).fit(feats)
        sizes = np.bincount(km.labels_, minlength=2 * n_concepts)
        concepts[cls] = []
        for rank, c in enumerate(np.argsort(-sizes, kind="stable")[:n_concepts], start=1):
            center = km.cluster_centers_[c].astype(np.float32)
            dist = np.sort(np.linalg.norm(feats[km.labels_ == c] - center, axis=1)).astype(np.float32)
            concepts[cls].append(Concept(class_name=cls, rank=rank, cluster=int(c), center=center, tcav=0.0,
                                         tcav_std=0.0, p_value=1.0, significant=False, cav_accuracy=0.0,
                                         size=int(sizes[c]), cluster_distances=dist))
    return ConceptBank(concepts=concepts, model_id=adapter.model_id, layer=adapter.bottleneck,
                       config=config)


def patch_batches(adapter: ClassifierAdapter, images: list[np.ndarray],
                  seg: SegmentationConfig) -> list[torch.Tensor]:
    """Each image's patches as the model input batch that discovery and the builder featurise."""
    featurizer = PatchFeaturizer(adapter, seg)
    return [featurizer.patches(im, segment_image(im, seg)) for im in images]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model spec, e.g. toy:DIR (default: untrained seeded toy CNN)")
    ap.add_argument("--run", help="run folder whose concepts/ bank to use (default: synthetic bank)")
    ap.add_argument("--per-class", type=int, default=4, help="rendered test images per class")
    ap.add_argument("--concepts", type=int, default=4, help="concepts per class of the synthetic bank")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a shared 2-core machine, 2 threads made "
                         "small forwards up to 100x slower in measurement)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # An untrained model often has an all-zero Grad-CAM; its per-call warning would flood the table.
    logging.getLogger("vrx.concepts.gradcam").setLevel(logging.ERROR)

    if args.model:
        from vrx.models import load
        adapter = load(args.model)
    else:
        adapter = untrained_adapter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_graphs_"))
    bank = Run(args.run).bank() if args.run else None
    names = bank.class_names if bank is not None else list(DEFAULT_CLASSES)
    classes = [c for c in names if c in ALL_CLASSES] or list(DEFAULT_CLASSES)
    render_dataset(tmp / "images", args.per_class, args.seed, classes, n_random=0, show_progress=False)
    _, items = list_images(tmp / "images")
    paths = [p for p, _ in items]
    labels = [k for _, k in items]
    if bank is None:
        render_dataset(tmp / "disc", 3, args.seed + 1, classes, n_random=0, show_progress=False)
        _, disc = list_images(tmp / "disc")
        by_class = {c: [p for p, k in disc if classes[k] == c] for c in classes}
        bank = synthetic_bank(adapter, by_class, args.concepts, args.seed)
        bank_desc = f"synthetic, {len(classes)} classes x {args.concepts} concepts (k-means on other images)"
    else:
        bank_desc = f"{Run(args.run).concepts_dir}, {len(bank.class_names)} classes x N={bank.n_concepts}"
    builder = SCGBuilder(adapter, bank, cache_dir=tmp / "cache", show_progress=False)
    # The segmentation and batch size the builder uses: discovery's, as the bank records them.
    seg, batch_size = builder.featurizer.segmentation, builder.featurizer.batch_size
    images = [load_image(p) for p in paths]
    n = len(images)

    # Warm-up: the first forward of a process pays one-off costs (allocator, kernel selection).
    adapter.logits(torch.rand(4, 3, *adapter.input_size, generator=torch.Generator().manual_seed(0)))
    batches = patch_batches(adapter, images, seg)   # made outside the clock
    m_patches = float(np.mean([len(b) for b in batches]))

    stages = {"features": Timed(builder.featurizer), "match": Timed(builder._match),
              "teacher": Timed(builder._teacher)}
    builder.featurizer, builder._match, builder._teacher = stages["features"], stages["match"], stages["teacher"]

    def clock(fn: Any) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    # Interleaved per image, so that load from other processes falls on every measure alike:
    # bare forward over its patches, build cold, build warm, the forward again (the faster is kept).
    sums = {"forward": 0.0, "image": 0.0, **{f"{r}_{k}": 0.0 for r in ("cold", "warm")
                                             for k in ("total", *stages)}}
    for path, im, batch in zip(paths, images, batches):
        f1 = clock(lambda: adapter.logits(batch, batch_size=batch_size))
        sums["image"] += clock(lambda: adapter.logits([im]))
        for run in ("cold", "warm"):
            for st in stages.values():
                st.seconds = 0.0
            sums[f"{run}_total"] += clock(lambda: builder.transform([path]))
            for key, st in stages.items():
                sums[f"{run}_{key}"] += st.seconds
        sums["forward"] += min(f1, clock(lambda: adapter.logits(batch, batch_size=batch_size)))
    featurizer = stages["features"].fn
    assert featurizer.misses == n and featurizer.hits == n, "the warm build should read every image from the cache"
    t_forward, t_image = sums["forward"] / n, sums["image"] / n
    runs = {run: {"seconds_per_image": sums[f"{run}_total"] / n,
                  **{key: sums[f"{run}_{key}"] / n for key in stages}} for run in ("cold", "warm")}
    ds = builder.transform(paths, labels)   # the whole set in one call (warm), for the GRN

    # 3. GRN training on the resulting graph dataset (default settings, one thread).
    with threads(**GRN_THREADS):
        dist = Distiller(GRNConfig(), DistillConfig(seed=0), show_progress=False).fit(ds)
    epochs = len(dist.history_)

    k, nn_ = len(bank.class_names), bank.n_concepts
    print(f"graph building: {n} toyworld images ({images[0].shape[1]}x{images[0].shape[0]}), "
          f"model {adapter.model_id} at {adapter.bottleneck}; bank {bank_desc}; "
          f"Grad-CAM filter {'on' if builder.use_gradcam else 'off'}; SLIC {list(seg.n_segments)}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"graphs: {describe(ds)}")
    print(f"\n{'per image':<52}{'seconds':>9}{'x forward':>11}")
    rows = [(f"classifier forward over its patches (M = {m_patches:.0f})", t_forward),
            ("classifier forward over the image alone", t_image)]
    for name in ("cold", "warm"):
        r = runs[name]
        rows += [(f"build all {k} class graphs, {name} cache", r["seconds_per_image"]),
                 ("  segment + featurise (or read cache)", r["features"]),
                 (f"  match: Grad-CAM x {k} + Hungarian", r["match"]),
                 ("  teacher: plain + masked logits", r["teacher"])]
    for label, sec in rows:
        print(f"{label:<52}{sec:>9.4f}{sec / t_forward:>11.2f}")
    n_train = len(dist.split_.train)
    print(f"\nGRN training: {n} images ({n_train} train), {epochs} epochs (best {dist.best_epoch_}) in "
          f"{dist.train_seconds_:.2f} s = {dist.train_seconds_ / epochs * 1000:.1f} ms/epoch; "
          f"= {dist.train_seconds_ / n:.3f} s per image of the dataset vs "
          f"{runs['cold']['seconds_per_image']:.3f} s per image to build its graphs (cold)")
    if args.json:
        write_json(args.json, {
            "images": n, "classes": bank.class_names, "N": nn_, "model_id": adapter.model_id,
            "bank": bank_desc, "gradcam": builder.use_gradcam, "segmentation": list(seg.n_segments),
            "threads": torch.get_num_threads(), "patches_per_image": m_patches,
            "forward_patches_s_per_image": t_forward, "forward_image_s_per_image": t_image,
            "build": runs, "ratio_cold": runs["cold"]["seconds_per_image"] / t_forward,
            "ratio_warm": runs["warm"]["seconds_per_image"] / t_forward,
            "grn": {"train_seconds": dist.train_seconds_, "epochs": epochs, "train_images": n_train}})
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

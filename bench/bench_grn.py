"""Benchmark of the GRN: training time, forward time per graph, dense vs torch_geometric message
passing, 1 vs 2 torch threads, and (with --heads) linear vs MLP embedding network by fidelity.

Run: python bench/bench_grn.py [--images 1000 --classes 3 --nodes 4 --dim 128] [--heads]
Every ratio printed is between numbers measured in this same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from torch.nn import functional as F

from vrx.grn.config import DistillConfig, GRNConfig
from vrx.grn.distill import Distiller, distill_loss, make_split, mask_augment
from vrx.grn.fidelity import evaluate
from vrx.grn.model import GRN
from vrx.grn.synthetic import mixed_task
from vrx.runtime import threads


def best_of(fn, repeat: int = 5, number: int = 1) -> float:
    """Fastest of ``repeat`` timings of ``number`` calls, in seconds per call."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return min(times)


def pyg_embed(model: GRN, data, num_images: int) -> torch.Tensor:
    """The GRN's embedding computed with a torch_geometric MessagePassing layer on a PyG Batch."""
    from torch_geometric.nn import MessagePassing

    class Conv(MessagePassing):
        def __init__(self, layer):
            super().__init__(aggr="add")
            self.layer = layer

        def forward(self, h, edge_index, edge, dep, emask):
            return self.propagate(edge_index, h=self.layer.w2(h), edge=edge, dep=dep, emask=emask)

        def message(self, h_j, edge, dep, emask):
            return self.layer.w3(torch.cat([dep[:, None] * h_j, edge], -1)) * emask[:, None]

    k, n = model.graph_shape.num_classes, model.graph_shape.num_nodes
    x, present = data.x, data.present
    x = (x - model.feat_mean) / model.feat_std * present[:, None]
    h = torch.cat([model.proj(x), present[:, None]], -1)
    src, dst = data.edge_index
    emask = present[src] * present[dst]
    edge = data.edge_attr * emask[:, None]
    graph_of_edge = data.batch[src]
    e_per_graph = n * (n - 1)
    dep = model.dependency_weights()[data.graph_class[graph_of_edge],
                                     torch.arange(len(src)) % e_per_graph]
    for layer in model.layers:
        edge = F.relu(layer.edge_norm(layer.w4(edge))) * emask[:, None]
        out = layer.w1(h) + Conv(layer)(h, data.edge_index, edge, dep, emask)
        h = F.relu(layer.norm(out))
    nodes = h.view(num_images, k, -1)
    edges = edge.view(num_images, k, -1)
    return torch.cat([nodes, edges], -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", action="store_true", help="also compare linear vs MLP head (slow)")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    ds = mixed_task(args.images, args.classes, args.nodes, args.dim, seed=0)
    b, k, n, d = ds.graphs.shape
    print(f"synthetic mixed task: {b} images x {k} class graphs x N={n} nodes, D={d}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads available")

    # 1. Training time of the default GRN (one thread, as `vrx train` runs it).
    cfg = DistillConfig()
    split = make_split(ds.image_ids, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    with threads(torch_threads=1):
        dist = Distiller(GRNConfig(), cfg).fit(ds, split)
        model = dist.model_
        fid = evaluate(model, ds, split.test)
    epochs = len(dist.history_)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n[train] default GRN ({n_params:,} parameters), {len(split.train)} training images, "
          f"batch {cfg.batch_size}: {dist.train_seconds_:.2f} s for {epochs} epochs = "
          f"{dist.train_seconds_ / epochs * 1000:.1f} ms/epoch (best epoch {dist.best_epoch_}); "
          f"held-out top1 {fid['fidelity_top1']:.3f}, L1 {fid['fidelity_l1']:.3f}")

    # 2. Forward time per graph, batched and one image at a time.
    with threads(torch_threads=1):
        one = ds.graphs[0]
        t_batch = best_of(lambda: model.predict(ds.graphs), repeat=5)
        t_one = best_of(lambda: model.predict(one), repeat=5, number=50)
    print(f"\n[forward, 1 thread] batch of {b} images: {t_batch * 1000:.1f} ms = "
          f"{t_batch / b * 1e6:.1f} us/image = {t_batch / (b * k) * 1e6:.1f} us per class graph; "
          f"one image alone: {t_one * 1e6:.0f} us ({t_one / (t_batch / b):.0f}x the batched cost "
          f"per image)")

    # 3. Dense implementation vs torch_geometric MessagePassing, same weights.
    with threads(torch_threads=1), torch.no_grad():
        t_conv = best_of(lambda: ds.graphs.to_pyg(), repeat=2)
        data = ds.graphs.to_pyg()
        dense = model.embed(ds.graphs)
        sparse = pyg_embed(model, data, b)
        err = float((dense - sparse).abs().max())
        t_dense = best_of(lambda: model.embed(ds.graphs), repeat=5)
        t_pyg = best_of(lambda: pyg_embed(model, data, b), repeat=5)
    print(f"\n[dense vs PyG] embeddings agree to {err:.1e}; dense {t_dense * 1000:.1f} ms, "
          f"MessagePassing {t_pyg * 1000:.1f} ms ({t_pyg / t_dense:.1f}x slower), plus "
          f"SCGBatch.to_pyg() {t_conv * 1000:.0f} ms ({t_conv / t_dense:.0f}x the dense forward)")

    # 4. Threads: one training step (forward + backward + Adam) with 1 and 2 intra-op threads.
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(cfg.batch_size)

    def step() -> None:
        g, target, _ = mask_augment(ds.graphs[idx], ds.teacher[idx], 0.5, gen)
        loss = distill_loss(model(g), target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    timings = {}
    for n_threads in (1, 2):
        with threads(torch_threads=n_threads):
            timings[n_threads] = best_of(step, repeat=5, number=20)
    print(f"\n[threads] training step, batch {cfg.batch_size}: 1 thread {timings[1] * 1000:.2f} ms, "
          f"2 threads {timings[2] * 1000:.2f} ms (2 threads / 1 thread = {timings[2] / timings[1]:.2f})")

    # 5. Linear vs MLP head (and the ablations) by held-out fidelity over several seeds.
    if args.heads:
        variants = {"linear head": {}, "MLP head (64,)": {"head_hidden": (64,)},
                    "no edge features": {"use_edge_features": False},
                    "shared e_ji": {"class_specific_edges": False},
                    "nodes only": {"message_passing": False, "use_edge_features": False}}
        scores: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
        for seed in range(args.seeds):
            dss = mixed_task(args.images, args.classes, args.nodes, args.dim, seed=seed)
            sp = make_split(dss.image_ids, 0.15, 0.15, seed)
            for name, change in variants.items():
                with threads(torch_threads=1):
                    d = Distiller(dataclasses.replace(GRNConfig(), **change), DistillConfig(seed=seed)).fit(dss, sp)
                    r = evaluate(d.model_, dss, sp.test)
                scores[name].append((r["fidelity_top1"], r["fidelity_l1"]))
        print(f"\n[heads and ablations] held-out fidelity, mean +- sd over {args.seeds} seeds "
              f"({len(sp.test)} test images each)")
        for name, vals in scores.items():
            t1 = [v[0] for v in vals]
            l1 = [v[1] for v in vals]
            sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
            print(f"  {name:<18} top1 {statistics.mean(t1):.3f} +- {sd(t1):.3f}   "
                  f"L1 {statistics.mean(l1):.3f} +- {sd(l1):.3f}")


if __name__ == "__main__":
    main()

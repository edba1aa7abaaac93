"""How faithfully a GRN imitates the classifier, on held-out images: top-1 agreement and L1 between
softmax distributions (T = 1), on the plain graphs and on every masked-concept variant, plus the
ablations of the paper's design (no edge features, shared e_ji, nodes only) trained on the same split.

Like the Distiller, evaluation runs with the process's torch thread settings as they are.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch

from ..graphs.dataset import GraphDataset
from ..graphs.scg import SCGBatch
from ..graphs.teacher import Teacher
from .config import DistillConfig, GRNConfig
from .distill import Distiller, Split, make_split
from .model import GRN

log = logging.getLogger(__name__)

#: Ablations as GRNConfig changes; each is trained with the same split and seed as the full GRN.
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_edge_features": {"use_edge_features": False},
    "shared_edges": {"class_specific_edges": False},
    "nodes_only": {"message_passing": False, "use_edge_features": False},
}


def agreement(grn_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[float, float]:
    """(top-1 agreement, mean L1 between softmax distributions) of two [M, K] logit tensors."""
    if len(grn_logits) == 0:
        return float("nan"), float("nan")
    top1 = (grn_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean()
    l1 = (grn_logits.softmax(-1) - teacher_logits.softmax(-1)).abs().sum(-1).mean()
    return float(top1), float(l1)


def masked_variants(graphs: SCGBatch, maskable: torch.Tensor, teacher: Teacher | None = None
                    ) -> tuple[SCGBatch, torch.Tensor]:
    """One graph set per detected concept, that concept made a dummy: with ``teacher``, the graph of the
    masked image it records (:meth:`Teacher.variants`); returns (graphs, [M, 3] (b, k, n))."""
    where = maskable.nonzero()
    if teacher is not None:
        return teacher.variants(graphs, where[:, 0], where[:, 1], where[:, 2]), where
    node_mask = torch.zeros(len(where), graphs.num_classes, graphs.num_nodes, dtype=torch.bool)
    node_mask[torch.arange(len(where)), where[:, 1], where[:, 2]] = True
    return graphs[where[:, 0]].mask_nodes(node_mask), where


@torch.no_grad()
def evaluate(model: GRN, dataset: GraphDataset, indices: torch.Tensor | list[int] | None = None,
             chunk: int = 512) -> dict[str, float]:
    """Fidelity of ``model`` on ``dataset`` (or its rows ``indices``), plain and masked-concept."""
    ds = dataset if indices is None else dataset.subset(indices)
    out = model.predict(ds.graphs)
    top1, l1 = agreement(out, ds.teacher.logits)
    # Masked-concept variants, in chunks of images so D = 2048 features do not blow up memory.
    g_all, t_all, dg, dt = [], [], [], []
    maskable = ds.teacher.maskable(ds.graphs.present)
    for s in range(0, len(ds), chunk):
        sub = ds.graphs[s:s + chunk]
        variants, where = masked_variants(sub, maskable[s:s + chunk], ds.teacher[s:s + chunk])
        if len(where) == 0:
            continue
        g = model.predict(variants)
        t = ds.teacher.masked_logits[s + where[:, 0], where[:, 1], where[:, 2]]
        g_all.append(g)
        t_all.append(t)
        # Effect of removing the concept on each class probability, teacher vs GRN.
        b = s + where[:, 0]
        dg.append(g.softmax(-1) - out[b].softmax(-1))
        dt.append(t.softmax(-1) - ds.teacher.logits[b].softmax(-1))
    if g_all:
        m_top1, m_l1 = agreement(torch.cat(g_all), torch.cat(t_all))
        corr = _pearson(torch.cat(dg).flatten(), torch.cat(dt).flatten())
        n_masked = sum(len(g) for g in g_all)
    else:
        m_top1 = m_l1 = corr = float("nan")
        n_masked = 0
    return {"fidelity_top1": top1, "fidelity_l1": l1, "masked_fidelity_top1": m_top1,
            "masked_fidelity_l1": m_l1, "masked_effect_corr": corr, "n_images": len(ds),
            "n_masked": n_masked}


def permute_positions(graphs: SCGBatch, generator: torch.Generator) -> SCGBatch:
    """A copy where each node slot's positions are shuffled among the images in which it is detected.

    The control for the relations: features and presence stay, only where each concept sits moves
    to where it sits in another image, so a GRN that reads the layout from its edges loses it.
    """
    pos = graphs.pos.clone()
    b, k, n = graphs.present.shape
    for kk in range(k):
        for nn in range(n):
            rows = graphs.present[:, kk, nn].nonzero().flatten()
            if len(rows) > 1:
                pos[rows, kk, nn] = graphs.pos[rows[torch.randperm(len(rows), generator=generator)], kk, nn]
    return SCGBatch(graphs.x, graphs.present, pos, list(graphs.class_names))


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def _label_accuracy(logits: torch.Tensor, labels: list[int]) -> float | None:
    # Labels are for reporting only: accuracy among images whose label is a class of interest.
    lab = torch.tensor(labels, dtype=torch.long)
    keep = (lab >= 0) & (lab < logits.shape[1])
    if not keep.any():
        return None
    return float((logits[keep].argmax(-1) == lab[keep]).float().mean())


def fit_and_evaluate(dataset: GraphDataset, config: GRNConfig | None = None,
                     distill: DistillConfig | None = None, ablations: bool = True,
                     split: Split | dict | None = None, show_progress: bool | None = None
                     ) -> tuple[Distiller, dict[str, Any]]:
    """Train the full GRN (and the ablations) on one split; returns (fitted Distiller, metrics dict).

    Without ``split``, images are split by ``distill``'s fractions and seed.
    """
    config = config if config is not None else GRNConfig()
    distill = distill if distill is not None else DistillConfig()
    note = None
    if dataset.graphs.num_nodes < 2 and (config.message_passing or config.use_edge_features):
        # One concept per class graph: no pairs, so no messages and no relations to learn.
        note = (f"the bank has at most {dataset.graphs.num_nodes} concept per class: trained without "
                "message passing or edge features (no pairs of concepts), and without the ablations")
        log.warning("GRN: %s", note)
        config = dataclasses.replace(config, message_passing=False, use_edge_features=False)
        ablations = False
    if split is None:
        split = make_split(dataset.image_ids, distill.val_fraction, distill.test_fraction, distill.seed)
    elif isinstance(split, dict):
        split = Split.from_dict(split)
    distiller = Distiller(config, distill, show_progress=show_progress).fit(dataset, split)
    model = distiller.model_
    test = dataset.subset(split.test)
    metrics: dict[str, Any] = evaluate(model, test)
    metrics.pop("n_images")
    permuted = permute_positions(test.graphs, torch.Generator().manual_seed(distill.seed))
    metrics["position_permuted_top1"], _ = agreement(model.predict(permuted), test.teacher.logits)
    metrics["n_masked_test"] = metrics.pop("n_masked")
    train_top = dataset.teacher.logits[split.train].argmax(-1)
    majority = int(torch.bincount(train_top, minlength=dataset.graphs.num_classes).argmax())
    test_top = test.teacher.logits.argmax(-1)
    metrics.update({
        "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test),
        # Agreement of always answering the teacher's most frequent training class: the floor to beat.
        "baseline_top1": float((test_top == majority).float().mean()) if len(test) else float("nan"),
        "teacher_label_accuracy": _label_accuracy(test.teacher.logits, test.labels),
        "grn_label_accuracy": _label_accuracy(model.predict(test.graphs), test.labels),
        "best_epoch": distiller.best_epoch_, "epochs_run": len(distiller.history_),
        "best_val_loss": distiller.best_val_loss_, "train_seconds": distiller.train_seconds_,
        "class_names": dataset.class_names, "config": config.to_dict(), "distill": distill.to_dict(),
        "shape": model.graph_shape.to_dict(),
    })
    if note:
        metrics["note"] = note
    metrics["ablations"] = {}
    if ablations:
        for name, change in ABLATIONS.items():
            abl = Distiller(dataclasses.replace(config, **change), distill,
                            show_progress=show_progress).fit(dataset, split)
            m = evaluate(abl.model_, test)
            metrics["ablations"][name] = {
                k: m[k] for k in ("fidelity_top1", "fidelity_l1", "masked_fidelity_top1",
                                  "masked_fidelity_l1", "masked_effect_corr")}
            metrics["ablations"][name].update({"epochs_run": len(abl.history_),
                                               "train_seconds": abl.train_seconds_})
            log.info("ablation %s: top-1 %.3f, L1 %.3f", name, m["fidelity_top1"], m["fidelity_l1"])
    return distiller, _no_nan(metrics)


def _no_nan(obj: Any) -> Any:
    # NaN is not valid JSON: undefined metrics (e.g. no test images) become None.
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    return obj


def format_table(metrics: dict[str, Any]) -> str:
    """The fidelity table (full GRN and ablations side by side) as text."""
    def f(v: Any) -> str:
        return "   -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.3f}"
    rows = [("full GRN", metrics)] + list(metrics.get("ablations", {}).items())
    head = f"{'model':<18} {'top1':>6} {'L1':>6} {'m.top1':>6} {'m.L1':>6} {'m.corr':>6}"
    lines = [f"held-out fidelity on {metrics['n_test']} test images "
             f"({metrics.get('n_masked_test', 0)} masked-concept variants); "
             f"train {metrics['n_train']}, val {metrics['n_val']}; "
             f"majority baseline top1 {f(metrics.get('baseline_top1')).strip()}", head, "-" * len(head)]
    for name, m in rows:
        lines.append(f"{name:<18} {f(m['fidelity_top1'])} {f(m['fidelity_l1'])} "
                     f"{f(m.get('masked_fidelity_top1'))} {f(m.get('masked_fidelity_l1'))} "
                     f"{f(m.get('masked_effect_corr'))}")
    if metrics.get("note"):
        lines.append(f"note: {metrics['note']}")
    if metrics.get("position_permuted_top1") is not None:
        lines.append(f"full GRN with node positions permuted among test images: top1 "
                     f"{f(metrics['position_permuted_top1']).strip()}")
    return "\n".join(lines)

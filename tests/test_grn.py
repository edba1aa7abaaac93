"""The graph reasoning network: shapes, symmetry, dummy nodes, distillation, fidelity, I/O and CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from vrx.errors import ArtifactError, ConfigError
from vrx.graphs.dataset import save_graph_dataset
from vrx.graphs.scg import DUMMY_EPS, GraphShape, SCGBatch, edge_position
from vrx.grn import (
    GRN,
    DistillConfig,
    Distiller,
    GRNConfig,
    distill_loss,
    evaluate,
    fit_and_evaluate,
    load_grn,
    make_split,
    mask_augment,
    save_grn,
)
from vrx.grn.synthetic import presence_task, structure_task
from vrx.runtime import threads

SMALL = GRNConfig(hidden=(16, 16), edge_dim=6, input_proj=16)
BATCH = 32


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: one thread is fastest and keeps the 2-core machine free for others.
    with threads(torch_threads=1):
        yield


def random_batch(b=4, k=3, n=4, d=10, seed=0) -> SCGBatch:
    g = torch.Generator().manual_seed(seed)
    present = (torch.rand(b, k, n, generator=g) > 0.3).float()
    x = torch.where(present[..., None] > 0, torch.randn(b, k, n, d, generator=g),
                    torch.full((b, k, n, d), DUMMY_EPS))
    pos = torch.rand(b, k, n, 2, generator=g) * present[..., None]
    return SCGBatch(x, present, pos, [f"c{i}" for i in range(k)])


def model_for(batch: SCGBatch, seed=0, **cfg) -> GRN:
    config = dataclasses.replace(SMALL, **cfg)
    model = GRN.for_graphs(batch, config, generator=torch.Generator().manual_seed(seed)).eval()
    with torch.no_grad():  # non-trivial dependency weights so that permuting them matters
        if model.dependency_logits is not None:
            model.dependency_logits.normal_(generator=torch.Generator().manual_seed(seed + 1))
    return model


def test_forward_embed_shapes_and_layout():
    batch = random_batch()
    model = model_for(batch)
    assert model(batch).shape == (4, 3)
    emb = model.embed(batch)
    lay = model.layout
    assert emb.shape == (4, 3, lay.size) and lay.size == 4 * 16 + 12 * 6
    assert lay.node_slice(2) == slice(32, 48)
    assert lay.edge_slice(0, 1) == slice(64, 70) and lay.edge_slice(3, 2) == slice(64 + 11 * 6, 64 + 72)
    assert torch.bincount(lay.segments()).tolist() == [16] * 4 + [6] * 12
    dep = model.dependency_weights()
    assert dep.shape == (3, 12) and (dep > 0).all() and (dep < 1).all()
    assert not torch.allclose(dep[0], dep[1])
    shared = model_for(batch, class_specific_edges=False)
    assert shared.dependency_logits.shape == (1, 12) and shared.dependency_weights().shape == (3, 12)
    nodes_only = model_for(batch, message_passing=False, use_edge_features=False)
    assert nodes_only.dependency_weights() is None and nodes_only.layout.size == 4 * 16
    assert nodes_only(batch).shape == (4, 3)
    with pytest.raises(ConfigError):
        model(random_batch(d=11))


def test_linear_head_is_an_exact_decomposition():
    batch = random_batch()
    model = model_for(batch)
    weight, bias = model.linear_readout()
    emb = model.embed(batch)
    assert torch.allclose(torch.einsum("ckd,bkd->bc", weight, emb) + bias, model(batch), atol=1e-5)
    assert model_for(batch, head_hidden=(8,)).linear_readout() is None


def test_node_permutation_equivariance():
    """Relabel nodes (with their edges and e_ji^c): embeddings permute, and so does nothing else.

    Node i's and edge j->i's slices move to the new labels; the output is unchanged once the head's
    input columns are permuted the same way. With uniform e_ji (the initial state) the embeddings are
    equivariant without touching any parameter.
    """
    batch = random_batch(b=3, n=4)
    model = model_for(batch)
    n, lay = 4, model.layout
    perm = torch.tensor([2, 0, 3, 1])            # new node a is old node perm[a]
    pb = SCGBatch(batch.x[:, :, perm], batch.present[:, :, perm], batch.pos[:, :, perm],
                  batch.class_names)
    edges_new = [(a, b) for a in range(n) for b in range(n) if a != b]
    old_edge = torch.tensor([edge_position(n, int(perm[a]), int(perm[b])) for a, b in edges_new])
    # Embedding index map new -> old.
    idx = torch.cat([torch.arange(lay.node_slice(int(perm[a])).start, lay.node_slice(int(perm[a])).stop)
                     for a in range(n)]
                    + [torch.arange(lay.edge_slice(int(perm[a]), int(perm[b])).start,
                                    lay.edge_slice(int(perm[a]), int(perm[b])).stop)
                       for a, b in edges_new])
    permuted = model_for(batch)
    with torch.no_grad():
        permuted.dependency_logits.copy_(model.dependency_logits[:, old_edge])
        w = permuted.head[-1].weight.view(3, 3, lay.size)
        w.copy_(model.head[-1].weight.view(3, 3, lay.size)[:, :, idx])
    emb, emb_p = model.embed(batch), permuted.embed(pb)
    assert torch.allclose(emb_p, emb[..., idx], atol=1e-5)
    assert torch.allclose(permuted(pb), model(batch), atol=1e-5)
    # Without permuting the dependency weights the embeddings are not equivariant (they matter) ...
    unpermuted_dep = model_for(batch)
    assert not torch.allclose(unpermuted_dep.embed(pb), emb[..., idx], atol=1e-3)
    # ... but with uniform e_ji they are, with no parameter change at all.
    uniform = model_for(batch)
    with torch.no_grad():
        uniform.dependency_logits.zero_()
    assert torch.allclose(uniform.embed(pb), uniform.embed(batch)[..., idx], atol=1e-5)


def test_dummy_nodes_are_inert_but_visible():
    batch = random_batch(b=2)
    model = model_for(batch)
    b, k, i = 0, 1, 2                                  # make node 2 of graph 1 of image 0 a dummy
    batch.present[b, k, i] = 0.0
    batch.x[b, k, i] = DUMMY_EPS
    batch.pos[b, k, i] = 0.0
    out = model(batch)
    # The stored feature/position of a dummy is ignored: the present flag decides.
    noisy = SCGBatch(batch.x.clone(), batch.present, batch.pos.clone(), batch.class_names)
    noisy.x[b, k, i] = 5.0
    noisy.pos[b, k, i] = torch.tensor([0.3, 0.9])
    assert torch.allclose(model(noisy), out, atol=1e-6)
    # Edges touching the dummy have zero embeddings; edges between detected nodes do not.
    emb = model.embed(batch)[b, k]
    lay = model.layout
    for j in range(4):
        if j != i:
            assert emb[lay.edge_slice(j, i)].abs().sum() == 0
            assert emb[lay.edge_slice(i, j)].abs().sum() == 0
    full = SCGBatch(batch.x, torch.ones_like(batch.present), batch.pos, batch.class_names)
    assert model.embed(full)[b, k, lay.edge_slice((i + 1) % 4, i)].abs().sum() > 0
    # Flipping the present flag alone changes the output (the model sees it).
    assert not torch.allclose(model(full), out, atol=1e-4)


def test_mask_augment_picks_detected_concepts_and_masked_targets():
    ds = presence_task(64, K=3, N=4, D=6, seed=3)
    # One image with nothing detected must never be masked.
    ds.graphs.present[5] = 0
    ds.teacher.masked_logits[5] = float("nan")
    g = torch.Generator().manual_seed(0)
    graphs, target, mask = mask_augment(ds.graphs, ds.teacher, 1.0, g)
    per_image = mask.flatten(1).sum(1)
    assert per_image[5] == 0 and torch.equal(target[5], ds.teacher.logits[5])
    others = torch.arange(64) != 5
    assert (per_image[others] == 1).all()
    assert ds.graphs.present[mask].eq(1).all()                     # only detected concepts
    bi, ki, ni = mask.nonzero().unbind(1)
    assert torch.equal(target[bi], ds.teacher.masked_logits[bi, ki, ni])   # the right masked row
    assert graphs.present[mask].eq(0).all() and graphs.x[mask].eq(DUMMY_EPS).all()
    assert torch.equal(graphs.present[~mask], ds.graphs.present[~mask])
    # Probability 0: nothing masked, targets are the plain logits.
    g0, t0, m0 = mask_augment(ds.graphs, ds.teacher, 0.0, torch.Generator().manual_seed(0))
    assert not m0.any() and torch.equal(t0, ds.teacher.logits)
    # Probability 0.5 masks about half of the images, reproducibly for a seed.
    _, _, m5 = mask_augment(ds.graphs, ds.teacher, 0.5, torch.Generator().manual_seed(1))
    _, _, m5b = mask_augment(ds.graphs, ds.teacher, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(m5, m5b) and 16 <= int(m5.sum()) <= 48


def test_distill_loss_and_split():
    out = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    tgt = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    p = torch.sigmoid(torch.tensor(2.0))
    assert torch.isclose(distill_loss(out, tgt), (2 * p - 2 * (1 - p)) / 2)
    assert distill_loss(out, out) == 0
    # Higher temperature flattens both distributions: a smaller gap.
    assert distill_loss(out, tgt, temperature=4.0) < distill_loss(out, tgt)
    ids = [f"im{i // 2}" for i in range(40)]       # two rows per image
    s = make_split(ids, 0.2, 0.2, seed=5)
    rows = torch.cat([s.train, s.val, s.test]).sort().values
    assert torch.equal(rows, torch.arange(40))
    for a in (s.train, s.val, s.test):
        for other in (s.train, s.val, s.test):
            if a is not other:
                assert not {ids[i] for i in a.tolist()} & {ids[i] for i in other.tolist()}
    assert len(s.test) == 8 and len(s.val) == 8
    assert torch.equal(make_split(ids, 0.2, 0.2, seed=5).test, s.test)
    assert not torch.equal(make_split(ids, 0.2, 0.2, seed=6).test, s.test)
    with pytest.raises(ConfigError):
        make_split(2, 0.5, 0.5)


def test_grn_is_built_for_the_shape_of_the_data():
    batch = random_batch(k=3, n=4, d=10)
    model = GRN.for_graphs(batch, SMALL)
    assert model.graph_shape == GraphShape(3, 4, 10) == batch.graph_shape
    assert model.config == SMALL and model.class_names == batch.class_names
    same = GRN(SMALL, GraphShape(3, 4, 10), batch.class_names)    # default generator: seed 0
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="class names"):
        GRN(SMALL, GraphShape(3, 4, 10), ["a", "b"])
    with pytest.raises(ConfigError, match="N >= 2"):
        GRN(SMALL, GraphShape(3, 1, 10))
    assert GRN(dataclasses.replace(SMALL, message_passing=False, use_edge_features=False),
               GraphShape(3, 1, 10))(random_batch(n=1, d=10)).shape == (4, 3)


def test_configs_are_frozen_validated_and_round_trip():
    arch = GRNConfig(hidden=[8, 4], head_hidden=[6])
    assert arch.hidden == (8, 4) and arch.head_hidden == (6,)
    assert GRNConfig.from_dict(arch.to_dict()) == arch
    assert DistillConfig.from_dict(DistillConfig(epochs=3).to_dict()) == DistillConfig(epochs=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.edge_dim = 3  # type: ignore[misc]
    for cls, bad in ((GRNConfig, {"hidden": []}), (GRNConfig, {"dependency": "relu"}),
                     (GRNConfig, {"edge_dim": 0}), (GRNConfig, {"epochs": 3}),
                     (DistillConfig, {"mask_prob": 1.5}), (DistillConfig, {"temperature": 0}),
                     (DistillConfig, {"val_fraction": 0.5, "test_fraction": 0.5}),
                     (DistillConfig, {"hidden": (8,)})):
        with pytest.raises(ConfigError):
            cls.from_dict(bad)
    # The settings module and the package load no torch (the command line shows the defaults).
    probe = "import sys, vrx.grn, vrx.grn.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_seeds_early_stopping_and_save_load(tmp_path):
    ds = presence_task(120, K=2, N=3, D=6, seed=1)
    cfg = DistillConfig(epochs=4, patience=2, seed=7, batch_size=BATCH)
    fitted = Distiller(SMALL, cfg)
    assert fitted.fit(ds) is fitted                  # fit returns the estimator, the GRN is model_
    a, b = fitted.model_, Distiller(SMALL, cfg).fit(ds).model_
    c = Distiller(SMALL, dataclasses.replace(cfg, seed=8)).fit(ds).model_
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    # Best weights are restored: the model's validation loss is the best one seen.
    d = Distiller(SMALL, dataclasses.replace(cfg, epochs=40, lr=0.05)).fit(ds)
    model = d.model_
    val = ds.subset(d.split_.val)
    assert len(d.history_) <= 40 and d.best_epoch_ == min(d.history_, key=lambda h: h["val_loss"])["epoch"]
    val_loss = distill_loss(model.predict(val.graphs), val.teacher.logits, d.distill.temperature)
    assert abs(float(val_loss) - d.best_val_loss_) < 1e-6
    # Save / load gives identical outputs.
    save_grn(tmp_path / "grn", model)
    back = load_grn(tmp_path / "grn")
    assert torch.equal(back.predict(ds.graphs), model.predict(ds.graphs))
    assert back.class_names == ds.class_names and back.config == model.config
    assert back.graph_shape == model.graph_shape == ds.graphs.graph_shape
    with pytest.raises(ArtifactError, match="config.json"):
        load_grn(tmp_path)                        # the run folder is no GRN folder
    meta = json.loads((tmp_path / "grn" / "config.json").read_text())
    meta["config"]["hidden"] = [8, 8]
    (tmp_path / "grn" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="edited or damaged"):   # its meta_hash finds the edit
        load_grn(tmp_path / "grn")
    del meta["meta_hash"]   # unsealed, as an older vrx wrote it: the weights' shapes still disagree
    (tmp_path / "grn" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="model.safetensors"):
        load_grn(tmp_path / "grn")
    with pytest.raises(ArtifactError, match="config.json"):
        load_grn(tmp_path / "nowhere")


def test_grn_folder_records_architecture_shape_classes_and_split(tmp_path):
    ds = presence_task(60, K=2, N=3, D=5, seed=2)
    distill = DistillConfig(epochs=3, batch_size=BATCH, seed=4)
    d = Distiller(SMALL, distill).fit(ds)
    assert d.save(tmp_path / "grn") == tmp_path / "grn"
    meta = json.loads((tmp_path / "grn" / "config.json").read_text())
    assert meta["format_version"] == 2
    assert meta["config"] == SMALL.to_dict() and meta["distill"] == distill.to_dict()
    assert meta["shape"] == {"num_classes": 2, "num_nodes": 3, "feature_dim": 5}
    assert meta["class_names"] == ds.class_names and meta["split"] == d.split_.to_dict()
    assert meta["best_epoch"] == d.best_epoch_ and len(meta["history"]) == len(d.history_)
    # A version-1 folder (N, K, D and training settings in one config) is still read.
    v1 = {**meta, "format_version": 1, "config": {**meta["config"], **meta["distill"], "N": 3, "K": 2, "D": 5}}
    del v1["shape"], v1["distill"], v1["meta_hash"], v1["weights_hash"]
    (tmp_path / "grn" / "config.json").write_text(json.dumps(v1))
    old = load_grn(tmp_path / "grn")
    assert old.config == SMALL and old.graph_shape == GraphShape(2, 3, 5)
    assert torch.equal(old.predict(ds.graphs), d.model_.predict(ds.graphs))
    (tmp_path / "grn" / "config.json").write_text(json.dumps({**meta, "format_version": 3}))
    with pytest.raises(ArtifactError, match="format version"):
        load_grn(tmp_path / "grn")
    with pytest.raises(ConfigError, match="shape"):          # extra cannot overwrite what save_grn writes
        save_grn(tmp_path / "other", d.model_, extra={"shape": 1, "split": {}})


def test_training_leaves_the_thread_setting_alone():
    ds = presence_task(40, K=2, N=3, D=4, seed=0)
    with threads(torch_threads=2):
        d = Distiller(SMALL, DistillConfig(epochs=1, batch_size=BATCH)).fit(ds)
        evaluate(d.model_, ds)
        assert torch.get_num_threads() == 2


def test_presence_teacher_is_distilled_with_high_agreement():
    ds = presence_task(300, K=3, N=4, D=12, seed=0)
    d = Distiller(SMALL, DistillConfig(epochs=40, patience=10, lr=1e-2, batch_size=BATCH)).fit(ds)
    m = evaluate(d.model_, ds, d.split_.test)
    assert m["n_images"] == len(d.split_.test) == 45
    assert m["fidelity_top1"] >= 0.9 and m["fidelity_l1"] < 0.15
    assert m["masked_fidelity_top1"] >= 0.85 and m["masked_effect_corr"] > 0.8
    # An untrained GRN is far from the teacher: the metric can fail.
    untrained = evaluate(GRN.for_graphs(ds.graphs, d.config), ds, d.split_.test)
    assert untrained["fidelity_l1"] > 3 * m["fidelity_l1"]


def test_structure_task_needs_edge_features():
    ds = structure_task(300, N=3, D=6, seed=0)
    cfg = DistillConfig(epochs=50, patience=12, lr=1e-2, batch_size=BATCH)
    split = make_split(ds.image_ids, 0.15, 0.25, seed=0)
    full = evaluate(Distiller(SMALL, cfg).fit(ds, split).model_, ds, split.test)
    no_edges = evaluate(Distiller(dataclasses.replace(SMALL, use_edge_features=False), cfg).fit(ds, split).model_,
                        ds, split.test)
    assert full["fidelity_top1"] >= 0.85
    assert full["fidelity_top1"] - no_edges["fidelity_top1"] >= 0.25
    assert no_edges["fidelity_l1"] > 2 * full["fidelity_l1"]


def test_train_cli_end_to_end(tmp_path, capsys):
    from vrx.cli import train

    ds = presence_task(60, K=2, N=3, D=5, seed=2)
    save_graph_dataset(tmp_path / "graphs", ds)
    parser = argparse.ArgumentParser(prog="vrx")
    train.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--run", str(tmp_path), "--epochs", "3", "--hidden", "8,8",
                              "--input-proj", "8", "--batch-size", "16"])
    assert args.func(args) == 0
    metrics = json.loads((tmp_path / "grn" / "metrics.json").read_text())
    for key in ("fidelity_top1", "fidelity_l1", "n_train", "n_val", "n_test", "masked_fidelity_top1",
                "masked_fidelity_l1", "ablations"):
        assert key in metrics
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 60
    assert set(metrics["ablations"]) == {"no_edge_features", "shared_edges", "nodes_only"}
    assert all({"fidelity_top1", "fidelity_l1"} <= set(v) for v in metrics["ablations"].values())
    assert 0.0 <= metrics["fidelity_top1"] <= 1.0
    assert load_grn(tmp_path / "grn").config.hidden == (8, 8)
    assert "nodes_only" in capsys.readouterr().out
    # A missing graphs folder is a clear error, not a traceback.
    bad = parser.parse_args(["train", "--run", str(tmp_path / "empty"), "--no-ablations"])
    with pytest.raises(ArtifactError, match="graphs"):
        bad.func(bad)


def test_fit_and_evaluate_reports_baseline_and_labels():
    ds = presence_task(90, K=3, N=3, D=5, seed=4)
    d, m = fit_and_evaluate(ds, SMALL, DistillConfig(epochs=2, batch_size=BATCH), ablations=False)
    assert m["ablations"] == {} and 0 <= m["baseline_top1"] <= 1
    assert m["config"] == SMALL.to_dict() and m["distill"]["epochs"] == 2
    assert m["shape"] == d.model_.graph_shape.to_dict() and m["epochs_run"] == len(d.history_)
    assert m["teacher_label_accuracy"] is not None and m["n_masked_test"] > 0
    json.dumps(m)                                   # JSON-ready (no NaN, no tensors)


def test_absent_concepts_contribute_nothing_and_block_head_reads_own_graph():
    from vrx.interpret import Interpreter

    batch = random_batch(b=3)
    model = model_for(batch)                      # zero_absent by default
    con = Interpreter(model).contributions(batch)
    absent = batch.present == 0                   # [B, K, N]
    assert absent.any()
    assert con.node.permute(0, 2, 3, 1)[absent].abs().max() == 0   # every output, every absent node
    # Without zero_absent an absent node adds a learned constant (the paper's dummy).
    old = Interpreter(model_for(batch, zero_absent=False)).contributions(batch)
    assert old.node.permute(0, 2, 3, 1)[absent].abs().max() > 0
    # Block head: output c does not move when another class graph changes.
    block = model_for(batch, head="block")
    other = SCGBatch(batch.x.clone(), batch.present, batch.pos, batch.class_names)
    other.x[:, 1] += 3.0
    out, out2 = block(batch), block(other)
    torch.testing.assert_close(out[:, [0, 2]], out2[:, [0, 2]])
    assert not torch.allclose(out[:, 1], out2[:, 1])
    assert Interpreter(block).contributions(batch).residual.abs().max() < 1e-4
    with pytest.raises(ConfigError, match="block head is linear"):
        GRNConfig(head="block", head_hidden=(8,))


def test_effect_loss_trains_the_response_to_a_masked_concept():
    from vrx.grn.distill import effect_loss

    p = torch.tensor([[2.0, 0.0, 0.0]])
    assert effect_loss(p, p - torch.tensor([[1.0, 0, 0]]), p, p - torch.tensor([[1.0, 0, 0]])) == 0
    assert effect_loss(p, p, p, p - torch.tensor([[1.0, 0, 0]])) > 0.1
    ds = presence_task(96, K=3, N=4, D=6, seed=2)
    cfg = dataclasses.replace(DistillConfig(epochs=40, seed=0), effect_weight=4.0)
    m = evaluate(Distiller(SMALL, cfg).fit(ds).model_, ds)
    assert m["fidelity_top1"] > 0.9 and m["masked_fidelity_top1"] > 0.9 and m["masked_effect_corr"] > 0.7


def test_one_concept_per_class_still_trains_and_says_so():
    ds = presence_task(60, K=3, N=1, D=6, seed=1)
    _, m = fit_and_evaluate(ds, SMALL, DistillConfig(epochs=5))
    assert "without message passing" in m["note"] and m["ablations"] == {}
    assert m["config"]["message_passing"] is False and m["fidelity_top1"] is not None
    from vrx.grn.fidelity import format_table

    assert "note: the bank has at most 1 concept per class" in format_table(m)


def test_position_permutation_control_moves_positions_only():
    from vrx.grn.fidelity import permute_positions

    batch = random_batch(b=6)
    p = permute_positions(batch, torch.Generator().manual_seed(0))
    assert torch.equal(p.x, batch.x) and torch.equal(p.present, batch.present)
    assert not torch.equal(p.pos, batch.pos)
    for k in range(batch.num_classes):           # each slot keeps the same multiset of positions
        for n in range(batch.num_nodes):
            rows = batch.present[:, k, n] > 0
            a, b = batch.pos[rows, k, n], p.pos[rows, k, n]
            assert torch.equal(a[a[:, 0].argsort()], b[b[:, 0].argsort()])
    assert (p.pos[batch.present == 0] == 0).all()
    ds = structure_task(200, seed=0)             # where only the layout decides
    _, m = fit_and_evaluate(ds, SMALL, DistillConfig(epochs=60, seed=0), ablations=False)
    assert m["fidelity_top1"] - m["position_permuted_top1"] > 0.2

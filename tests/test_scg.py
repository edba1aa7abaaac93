"""The SCG data type: shape, edges, PyG export, masking, and the graph dataset and its folder."""

from __future__ import annotations

import math

import pytest
import torch

from vrx.errors import ArtifactError, ConfigError, VRXError
from vrx.graphs.dataset import GraphDataset, load_graph_dataset, save_graph_dataset
from vrx.graphs.scg import (
    DUMMY_EPS,
    GraphShape,
    SCGBatch,
    SCGShapeError,
    edge_index,
    edge_position,
)
from vrx.graphs.teacher import Teacher
from vrx.store import read_json, write_json


def three_node_batch() -> SCGBatch:
    """One image, two class graphs of 3 nodes; node 1 of graph 1 is a dummy."""
    pos = torch.tensor([[[0.1, 0.2], [0.5, 0.6], [0.9, 0.3]],
                        [[0.7, 0.7], [0.0, 0.0], [0.2, 0.8]]])[None]
    present = torch.tensor([[[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]])
    x = torch.arange(1 * 2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    x[0, 1, 1] = DUMMY_EPS
    return SCGBatch(x, present, pos, ["cat", "dog"])


def small_dataset(b: int = 5, k: int = 2, n: int = 3, d: int = 4, seed: int = 0) -> GraphDataset:
    g = torch.Generator().manual_seed(seed)
    present = (torch.rand(b, k, n, generator=g) > 0.3).float()
    x = torch.where(present[..., None] > 0, torch.randn(b, k, n, d, generator=g),
                    torch.full((b, k, n, d), DUMMY_EPS))
    pos = torch.rand(b, k, n, 2, generator=g) * present[..., None]
    masked = torch.randn(b, k, n, k, generator=g)
    masked[present == 0] = float("nan")
    return GraphDataset(SCGBatch(x, present, pos, [f"c{i}" for i in range(k)]),
                        Teacher(torch.randn(b, k, generator=g), masked),
                        [f"im{i}" for i in range(b)], [i % k for i in range(b)],
                        image_paths=[f"/data/im{i}.png" for i in range(b)], config={"t": 0.5})


def test_edge_index_order_and_position():
    ei = edge_index(3)
    assert ei.tolist() == [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    assert edge_index(4).shape == (2, 12)
    for p, (j, i) in enumerate(edge_index(5).t().tolist()):
        assert edge_position(5, j, i) == p
    with pytest.raises(SCGShapeError):
        edge_position(3, 1, 1)


def test_edge_attr_of_hand_made_graph():
    batch = three_node_batch()
    ea = batch.edge_attr()
    assert ea.shape == (1, 2, 6, 4)
    # Edge 2 -> 0 of graph 0: source (0.9, 0.3), target (0.1, 0.2).
    assert torch.allclose(ea[0, 0, edge_position(3, 2, 0)], torch.tensor([0.9, 0.3, 0.1, 0.2]))
    assert torch.allclose(ea[0, 0, edge_position(3, 0, 1)], torch.tensor([0.1, 0.2, 0.5, 0.6]))
    # Edges touching the dummy node 1 of graph 1 are flagged absent, the others present.
    ep = batch.edge_present()[0, 1]
    for p, (j, i) in enumerate(edge_index(3).t().tolist()):
        assert ep[p] == (0.0 if 1 in (j, i) else 1.0)
    assert batch.edge_present()[0, 0].eq(1).all()


def test_to_pyg_shapes_and_values():
    batch = SCGBatch.concat([three_node_batch(), three_node_batch()])
    pyg = batch.to_pyg()
    assert pyg.num_graphs == 4
    assert pyg.graph_class.tolist() == [0, 1, 0, 1]
    assert pyg.image_row.tolist() == [0, 0, 1, 1]
    data = pyg.get_example(1)
    assert data.x.shape == (3, 4) and data.edge_index.shape == (2, 6)
    assert data.edge_attr.shape == (6, 4) and data.present.tolist() == [1.0, 0.0, 1.0]
    assert torch.equal(data.x, batch.x[0, 1])
    assert torch.equal(data.edge_attr, batch.edge_attr()[0, 1])
    assert pyg.x.shape == (12, 4) and pyg.edge_index.shape == (2, 24)


def test_indexing_and_mask_nodes():
    batch = SCGBatch.concat([three_node_batch()] * 3)
    assert len(batch) == 3 and len(batch[1]) == 1 and len(batch[-1]) == 1
    assert len(batch[torch.tensor([0, 2])]) == 2 and len(batch[[2, 1, 0]]) == 3
    mask = torch.zeros(3, 2, 3, dtype=torch.bool)
    mask[1, 0, 2] = True
    masked = batch.mask_nodes(mask)
    assert masked.present[1, 0, 2] == 0 and masked.present[0, 0, 2] == 1
    assert torch.all(masked.x[1, 0, 2] == DUMMY_EPS) and torch.all(masked.pos[1, 0, 2] == 0)
    assert torch.equal(masked.x[0], batch.x[0])          # other images untouched
    assert batch.present[1, 0, 2] == 1                   # the original is not modified


def test_bad_shapes_raise_vrx_errors():
    b = three_node_batch()
    with pytest.raises(SCGShapeError):
        SCGBatch(b.x, b.present[..., :2], b.pos, b.class_names)
    with pytest.raises(SCGShapeError):
        SCGBatch(b.x, b.present, b.pos, ["only-one"])
    with pytest.raises(VRXError):
        Teacher(torch.zeros(1, 2), torch.zeros(1, 2, 3, 3)).validate(b)
    with pytest.raises(SCGShapeError):
        GraphDataset(b, Teacher(torch.zeros(1, 2), torch.zeros(1, 2, 3, 2)), ["a", "b"], [0])


def test_scgbatch_save_load(tmp_path):
    b = three_node_batch()
    b.save(tmp_path / "g.safetensors")
    assert (tmp_path / "g.json").exists()
    back = SCGBatch.load(tmp_path / "g.safetensors")
    assert torch.equal(back.x, b.x) and torch.equal(back.pos, b.pos)
    assert back.class_names == ["cat", "dog"]


def test_graph_shape_of_a_batch():
    b = three_node_batch()
    assert b.graph_shape == GraphShape(num_classes=2, num_nodes=3, feature_dim=4)
    assert GraphShape.from_dict(b.graph_shape.to_dict()) == b.graph_shape
    for bad in ({"num_classes": 0, "num_nodes": 3, "feature_dim": 4}, {"num_classes": 2, "num_nodes": 3}):
        with pytest.raises(ConfigError):
            GraphShape.from_dict(bad)


def test_graph_dataset_round_trip(tmp_path):
    ds = small_dataset()
    # The dataset is written into the folder it is given, nothing is appended to it.
    assert save_graph_dataset(tmp_path / "graphs", ds) == tmp_path / "graphs"
    assert (tmp_path / "graphs" / "graphs.safetensors").exists()
    back = load_graph_dataset(tmp_path / "graphs", class_names=["c0", "c1"])
    assert torch.equal(back.graphs.x, ds.graphs.x)
    assert torch.equal(back.teacher.logits, ds.teacher.logits)
    # NaN marks undetected concepts in the masked logits and must survive the round trip.
    assert torch.equal(torch.isnan(back.teacher.masked_logits), torch.isnan(ds.teacher.masked_logits))
    assert torch.allclose(back.teacher.masked_logits.nan_to_num(), ds.teacher.masked_logits.nan_to_num())
    assert back.image_ids == ds.image_ids and back.labels == ds.labels
    assert back.image_paths == ds.image_paths and back.config == {"t": 0.5}
    sub = back.subset([3, 1])
    assert sub.image_ids == ["im3", "im1"] and torch.equal(sub.graphs.x[0], ds.graphs.x[3])
    assert math.isclose(read_json(tmp_path / "graphs" / "graphs.json")["eps"], DUMMY_EPS)


def test_graph_dataset_errors_name_the_file(tmp_path):
    folder = tmp_path / "graphs"
    with pytest.raises(ArtifactError, match="graphs.json"):
        load_graph_dataset(folder)
    save_graph_dataset(folder, small_dataset())
    with pytest.raises(ArtifactError, match="graphs.json"):
        load_graph_dataset(tmp_path)                 # the folder above is no graph dataset
    with pytest.raises(ArtifactError, match="class list"):
        load_graph_dataset(folder, class_names=["c1", "c0"])
    meta_path = folder / "graphs.json"
    meta = read_json(meta_path)
    write_json(meta_path, {**meta, "N": 7})
    with pytest.raises(ArtifactError, match="graphs.json: edited or damaged"):   # its meta_hash
        load_graph_dataset(folder)
    del meta["meta_hash"]   # unsealed, as an older vrx wrote it: each inconsistency is still named
    write_json(meta_path, {**meta, "N": 7})
    with pytest.raises(ArtifactError, match="graphs.safetensors"):
        load_graph_dataset(folder)
    write_json(meta_path, {**meta, "labels": meta["labels"][:-1]})
    with pytest.raises(ArtifactError, match="labels"):
        load_graph_dataset(folder)
    write_json(meta_path, {**meta, "format_version": 99})
    with pytest.raises(ArtifactError, match="format_version"):
        load_graph_dataset(folder)
    write_json(meta_path, meta)
    (folder / "graphs.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="graphs.safetensors"):
        load_graph_dataset(folder)

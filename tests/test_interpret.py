"""Visual Decision Interpreter: contributions (eq. 5-6), why / why-not sentences, the figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vrx.concepts.bank import Concept, ConceptBank
from vrx.errors import InvalidImageError, UnknownClassError
from vrx.graphs.scg import SCGBatch, edge_position
from vrx.grn.config import GRNConfig
from vrx.grn.model import GRN
from vrx.grn.synthetic import presence_task
from vrx.interpret import (
    ClassExplanation, EdgeContribution, Explanation, Interpreter, NodeContribution, check_completeness,
    draw_explanation, rank_reasons, relation_word, why_not_sentence, why_sentence,
)

K, N, D = 3, 4, 8


@pytest.fixture(scope="module")
def graphs() -> SCGBatch:
    return presence_task(24, K=K, N=N, D=D, seed=3).graphs


def make_grn(graphs: SCGBatch, seed: int = 0, **changes) -> GRN:
    """A small GRN with random (not uniform) dependencies, so edges and nodes all differ."""
    cfg = GRNConfig(input_proj=12, hidden=(12, 12), edge_dim=4, **changes)
    grn = GRN.for_graphs(graphs, cfg, generator=torch.Generator().manual_seed(seed))
    if grn.dependency_logits is not None:
        with torch.no_grad():
            grn.dependency_logits.normal_(generator=torch.Generator().manual_seed(seed + 1))
    return grn.eval()


def test_contributions_add_up_to_each_output_with_linear_head(graphs):
    grn = make_grn(graphs)
    interp = Interpreter(grn)
    con = interp.contributions(graphs)
    assert con.node.shape == (len(graphs), K, K, N) and con.edge.shape == (len(graphs), K, K, N * (N - 1))
    expected = grn.predict(graphs)
    torch.testing.assert_close(con.scores, expected, atol=1e-6, rtol=0)
    total = con.node.sum((-1, -2)) + con.edge.sum((-1, -2)) + con.bias
    assert (total - expected).abs().max() < 1e-5
    assert con.residual.abs().max() < 1e-5
    # The same through the per-image Explanation objects, and s_k is the sum of graph k's parts.
    for expl in interp.explain(graphs):
        assert expl.exact and check_completeness(expl) < 1e-5
        for ce in expl.classes.values():
            for g in expl.class_names:
                parts = sum(n.contribution for n in ce.nodes if n.class_graph == g) + \
                    sum(e.contribution for e in ce.edges if e.class_graph == g)
                assert ce.graph_contribution[g] == pytest.approx(parts, abs=1e-5)


def test_sign_convention_with_a_hand_set_head(graphs):
    grn = make_grn(graphs)
    lay = grn.layout
    size = lay.size
    head = grn.head[-1]
    one = graphs[0]
    # A detected node (its embedding is not all zero), not in graph 0, to catch index mix-ups.
    k, n = (int(v) for v in (one.present[0, 1:] > 0).nonzero()[0])
    k += 1
    for sign in (1.0, -1.0):
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            # y_0 = sign * (sum of the embedding of node n of graph k): a node that raises y_0.
            sl = lay.node_slice(n)
            head.weight[0, k * size + sl.start: k * size + sl.stop] = sign
        [expl] = Interpreter(grn).explain(one)
        ce = expl.classes[one.class_names[0]]
        node = ce.node(one.class_names[k], n + 1)
        emb_sum = float(grn.embed(one).detach()[0, k, sl].sum())
        assert emb_sum > 0
        assert node.contribution == pytest.approx(sign * emb_sum, rel=1e-5)
        others = [m.contribution for m in ce.nodes if m is not node] + [e.contribution for e in ce.edges]
        assert max(abs(v) for v in others) == 0.0


def test_removing_a_positive_contribution_lowers_the_output(graphs):
    grn = make_grn(graphs, seed=4)
    one = graphs[1]
    interp = Interpreter(grn)
    con = interp.contributions(one)
    emb = grn.embed(one).detach()
    y0 = grn.head_forward(emb)[0].detach()
    c = 0
    # The present node with the largest positive contribution to y_c; zeroing its slice removes it.
    vals = torch.where(one.present[0] > 0, con.node[0, c], torch.tensor(-float("inf")))
    k, n = divmod(int(vals.argmax()), N)
    assert vals[k, n] > 0
    cut = emb.clone()
    cut[0, k, grn.layout.node_slice(n)] = 0
    y1 = grn.head_forward(cut)[0].detach()
    assert y1[c] < y0[c]
    assert float(y0[c] - y1[c]) == pytest.approx(float(con.node[0, c, k, n]), abs=1e-5)
    # Scaling an edge slice by (1 + t) moves the output by t times its contribution (linear head).
    kk = int((one.present[0].sum(-1) >= 2).nonzero()[0])
    j, i = (int(v) for v in one.present[0, kk].nonzero().flatten()[:2])
    scaled = emb.clone()
    scaled[0, kk, grn.layout.edge_slice(j, i)] *= 1.5
    dy = grn.head_forward(scaled)[0, c].detach() - y0[c]
    want = 0.5 * float(con.edge[0, c, kk, edge_position(N, j, i)])
    assert want != 0.0 and float(dy) == pytest.approx(want, abs=1e-5)


def test_absent_nodes_marked_absent_and_their_edges_contribute_zero(graphs):
    grn = make_grn(graphs, seed=2)
    expls = Interpreter(grn).explain(graphs)
    constants: dict[tuple, set] = {}
    seen_absent = 0
    for b, expl in enumerate(expls):
        for c, ce in expl.classes.items():
            for node in ce.nodes:
                k = graphs.class_names.index(node.class_graph)
                assert node.present == bool(graphs.present[b, k, node.concept - 1])
                if not node.present:
                    seen_absent += 1
                    assert node.position is None
                    constants.setdefault((c, node.class_graph, node.concept), set()).add(
                        round(node.contribution, 5))
            for e in ce.edges:
                k = graphs.class_names.index(e.class_graph)
                both = bool(graphs.present[b, k, e.source - 1] and graphs.present[b, k, e.target - 1])
                assert e.present == both
                if not both:
                    assert e.contribution == 0.0
    assert seen_absent > 0
    # With a linear head an absent concept contributes one learned constant per (output, graph, slot).
    assert all(len(v) == 1 for v in constants.values())


def test_why_not_margins_and_explicit_target(graphs):
    grn = make_grn(graphs, seed=5)
    interp = Interpreter(grn)
    one = graphs[2]
    [expl] = interp.explain(one, target="class1")
    assert expl.target == "class1" and expl.why.kind == "why" and expl.why.margin is None
    assert expl.predicted == graphs.class_names[int(grn.predict(one)[0].argmax())]
    for ce in expl.why_not:
        assert ce.kind == "why not"
        assert ce.margin == pytest.approx(expl.scores["class1"] - ce.score, abs=1e-6)
        parts = sum(n.margin_contribution for n in ce.nodes) + sum(e.margin_contribution for e in ce.edges)
        bias_gap = expl.classes["class1"].bias - ce.bias
        assert ce.margin == pytest.approx(parts + bias_gap, abs=1e-5)
        for n in ce.nodes:
            want = expl.why.node(n.class_graph, n.concept).contribution - n.contribution
            assert n.margin_contribution == pytest.approx(want, abs=1e-6)
    assert interp.explain(one, target=1)[0].target == "class1"
    assert [e.target for e in interp.explain(graphs[:3], target=["class2", 0, "class1"])] == \
        ["class2", "class0", "class1"]
    with pytest.raises(UnknownClassError, match="nope"):
        interp.explain(one, target="nope")


def test_batch_explanations_match_single_images(graphs):
    grn = make_grn(graphs)
    interp = Interpreter(grn, batch_size=5)   # several chunks
    many = interp.explain(graphs[:7], image_ids=[f"im{i}" for i in range(7)])
    assert isinstance(many, list) and len(many) == 7
    for i in (0, 6):
        explained = interp.explain(graphs[i])        # a list for one image too: one return type
        assert isinstance(explained, list) and len(explained) == 1
        single = explained[0]
        assert isinstance(single, Explanation) and many[i].image_id == f"im{i}"
        a, b = many[i].why, single.why
        assert a.class_name == b.class_name
        assert max(abs(x.contribution - y.contribution) for x, y in zip(a.nodes, b.nodes)) < 1e-6


def test_json_round_trip(graphs):
    [expl] = Interpreter(make_grn(graphs)).explain(graphs[0], image_ids=["img0"])
    text = json.dumps(expl.to_dict())
    d = json.loads(text)
    assert {"predicted", "target", "scores", "classes", "exact", "class_names"} <= set(d)
    ce = d["classes"][d["predicted"]]
    assert {"score", "graph_contribution", "nodes", "edges", "bias", "sentence", "kind"} <= set(ce)
    assert {"concept", "class_graph", "present", "position", "contribution"} <= set(ce["nodes"][0])
    assert {"source", "target", "class_graph", "contribution"} <= set(ce["edges"][0])
    assert len(ce["nodes"]) == K * N and len(ce["edges"]) == K * N * (N - 1)
    assert Explanation.from_dict(d) == expl


def test_mlp_head_contributions_without_completeness(graphs):
    grn = make_grn(graphs, head_hidden=(16,))
    [expl] = Interpreter(grn).explain(graphs[0])
    assert not expl.exact and expl.why.bias is None
    vals = [n.contribution for n in expl.why.nodes] + [e.contribution for e in expl.why.edges]
    assert all(np.isfinite(vals)) and max(abs(v) for v in vals) > 0
    # The residual is what gradient x embedding leaves unexplained; scores still match the model.
    assert expl.why.score == pytest.approx(float(grn.predict(graphs[0])[0].max()), abs=1e-6)
    total = sum(vals) + expl.why.residual
    assert total == pytest.approx(expl.why.score, abs=1e-5)


def test_no_edge_features_gives_no_edges(graphs):
    grn = make_grn(graphs, use_edge_features=False)
    [expl] = Interpreter(grn).explain(graphs[0])
    assert all(not ce.edges for ce in expl.classes.values())
    assert check_completeness(expl) < 1e-5


# -- sentences ---------------------------------------------------------------------------------

def test_relation_words_use_image_coordinates():
    assert relation_word([0.5, 0.8], [0.5, 0.2]) == "below"      # y grows downwards
    assert relation_word([0.5, 0.1], [0.5, 0.6]) == "above"
    assert relation_word([0.9, 0.5], [0.2, 0.45]) == "right of"
    assert relation_word([0.1, 0.5], [0.6, 0.55]) == "left of"
    assert relation_word([0.3, 0.3], [0.3, 0.3]) == "at the same place as"


def hand_made(values: dict[int, float], edges: dict[tuple[int, int], float], positions: dict[int, list],
              margin: dict[int, float] | None = None) -> Explanation:
    """Two classes; graph 'bus' has the given node and edge contributions to y_bus (and margins)."""
    def nodes(graph: str, own: bool) -> list[NodeContribution]:
        return [NodeContribution(r, graph, r in positions, positions.get(r),
                                 values.get(r, 0.0) if own else 0.0,
                                 None if margin is None else (margin.get(r, 0.0) if own else 0.0))
                for r in (1, 2, 3, 4)]

    def edge_rows(graph: str, own: bool) -> list[EdgeContribution]:
        return [EdgeContribution(j, i, graph, j in positions and i in positions,
                                 edges.get((j, i), 0.0) if own else 0.0, None)
                for j in (1, 2, 3, 4) for i in (1, 2, 3, 4) if i != j]

    total = sum(values.values()) + sum(edges.values())
    bus = ClassExplanation("bus", "why", total, 0.0, 0.0, {"bus": total, "van": 0.0},
                           nodes("bus", True) + nodes("van", False),
                           edge_rows("bus", True) + edge_rows("van", False))
    m = None if margin is None else sum(margin.values())
    van_nodes = [NodeContribution(n.concept, n.class_graph, n.present, n.position, 0.0,
                                  n.margin_contribution) for n in nodes("bus", True) + nodes("van", False)]
    van = ClassExplanation("van", "why not", total - (m or 0.0), 0.0, 0.0, {"bus": 0.0, "van": 0.0},
                           van_nodes, edge_rows("van", False), margin=m,
                           margin_graph_contribution={"bus": m or 0.0, "van": 0.0})
    return Explanation(["bus", "van"], "bus", "bus", {"bus": bus.score, "van": van.score},
                       {"bus": bus, "van": van}, exact=True)


def test_why_sentence_names_top_concept_and_relation():
    pos = {1: [0.5, 0.2], 2: [0.2, 0.5], 3: [0.5, 0.8]}    # 3 below 1; concept 4 not found
    expl = hand_made({1: 0.4, 2: -0.3, 3: 1.5, 4: -0.2}, {(3, 1): 0.9, (1, 3): 0.1, (2, 1): -0.25}, pos)
    names = {("bus", 1): "window row", ("bus", 3): "wheel"}
    s = why_sentence(expl, names)
    assert s.startswith("why bus")
    assert "concepts 3 (wheel, +1.5) and 1 (window row, +0.4) support it" in s
    assert "concept 2 (-0.3) speaks against it" in s
    assert "the relation 3→1 (wheel below window row, +0.9) supports it most" in s
    assert "relation 2→1 (2 left of window row, -0.25) speaks against it most" in s
    assert "concept 4 was not found, which counts against it" in s
    concepts, relations, missing, _ = rank_reasons(expl.why, names, own_graph="bus")
    assert [r.value for r in concepts] == [1.5, 0.4, -0.3]
    assert relations[0].text.startswith("the relation 3→1")


def test_why_not_sentence_uses_the_margin():
    pos = {1: [0.5, 0.2], 2: [0.2, 0.5], 3: [0.5, 0.8]}
    # Contributions to y_bus and margins y_bus - y_van deliberately disagree in ranking.
    expl = hand_made({1: 2.0, 3: 0.1}, {}, pos, margin={1: -0.5, 3: 1.2, 2: 0.3})
    s = why_not_sentence(expl, "van")
    assert s.startswith("why not van")
    assert "bus concepts 3 (+1.2) and 2 (+0.3) favour bus over van" in s
    assert "bus concept 1 (-0.5) favours van" in s


# -- figure ------------------------------------------------------------------------------------

def fake_bank(classes: list[str]) -> ConceptBank:
    rng = np.random.default_rng(0)
    return ConceptBank({c: [Concept(c, r, r, np.zeros(4, np.float32), 0.9, 0.1, 0.01, True, 0.9, 5,
                                    thumbnails=rng.integers(0, 255, (3, 10, 10, 3), dtype=np.uint8))
                            for r in (1, 2, 3, 4)] for c in classes}, "toy", "layer", {})


def node_colours(fig) -> dict[str, tuple]:
    return {p.get_gid(): p.get_facecolor() for ax in fig.axes for p in ax.patches
            if (p.get_gid() or "").startswith("node:")}


def test_figure_panels_colour_bars_and_signed_colours(tmp_path):
    import matplotlib.pyplot as plt

    pos = {1: [0.5, 0.2], 2: [0.2, 0.5], 3: [0.5, 0.8]}
    # Every contribution positive: a rank-based colouring would paint some node red anyway.
    expl = hand_made({1: 0.4, 2: 0.05, 3: 1.5}, {(3, 1): 0.9, (1, 3): 0.1, (2, 1): 0.2}, pos)
    image = np.random.default_rng(1).random((40, 60, 3)).astype(np.float32)
    out = tmp_path / "why.png"
    fig = draw_explanation(image, expl, bank=fake_bank(["bus", "van"]), path=out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []          # never registered with pyplot
    bars = sorted(ax.get_xlabel() for ax in fig.axes if ax.get_xlabel().startswith("contribution to"))
    assert bars == ["contribution to bus", "contribution to van"]
    image_axes = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape[:2] == (40, 60)]
    assert len(image_axes) == 2
    colours = node_colours(fig)
    bus = {g: c for g, c in colours.items() if g.startswith("node:bus:")}
    assert set(bus) == {"node:bus:1", "node:bus:2", "node:bus:3"}   # concept 4 is absent: no circle
    assert all(c[2] >= c[0] for c in bus.values())                  # blue side (RdBu), never red
    assert bus["node:bus:3"][0] < 0.2                               # the strongest is deep blue
    # Contributions of 0 (the van panel) sit at the white centre of the map.
    assert all(abs(c[0] - c[2]) < 0.05 for g, c in colours.items() if g.startswith("node:van:"))


def test_figure_negative_colours_edge_limit_and_zero_length_arrows():
    pos = {1: [0.5, 0.2], 2: [0.5, 0.2], 3: [0.5, 0.8], 4: [0.1, 0.1]}   # 1 and 2 coincide
    edges = {(j, i): 0.1 * (j + i) for j in (1, 2, 3, 4) for i in (1, 2, 3, 4) if i != j}
    edges[(1, 2)] = edges[(2, 1)] = 5.0                                 # strongest, but zero-length
    expl = hand_made({1: -1.0, 2: 0.5, 3: 0.2, 4: -0.1}, edges, pos)
    fig = draw_explanation(np.zeros((32, 32, 3)), expl, max_edges=4)
    colours = node_colours(fig)
    assert colours["node:bus:1"][0] > colours["node:bus:1"][2]      # negative is red
    assert colours["node:bus:2"][2] > colours["node:bus:2"][0]
    arrows = [p.get_gid() for ax in fig.axes for p in ax.patches
              if (p.get_gid() or "").startswith("edge:bus")]
    assert 0 < len(arrows) <= 4 and "edge:bus:1:2" not in arrows and "edge:bus:2:1" not in arrows


def test_figure_rejects_bad_images():
    expl = hand_made({1: 1.0}, {}, {1: [0.5, 0.5]})
    with pytest.raises(InvalidImageError, match="HxWx3"):
        draw_explanation(np.zeros((4, 4, 5)), expl)
    with pytest.raises(InvalidImageError, match=r"\[0, 1\]"):
        draw_explanation(np.full((4, 4, 3), 7.0), expl)

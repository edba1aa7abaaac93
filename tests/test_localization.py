"""Localisation of concept nodes on ground-truth parts: precision, recall, scopes and held-out images."""

from __future__ import annotations

import numpy as np

from vrx.metrics.localization import localization


def test_localization_counts_nodes_on_their_parts():
    parts = ["body", "wheel", "ladder"]
    maps = {}
    for i in range(4):
        m = np.ones((40, 40), np.int64)           # body everywhere
        m[30:38, 5:13] = 2                        # a wheel at the bottom left
        if i < 3:
            m[2:6, 10:30] = 3                     # a ladder on top, in three images
        maps[f"im{i}"] = m
    present = np.zeros((4, 2, 2), np.float32)
    pos = np.zeros((4, 2, 2, 2), np.float32)
    # class 0 concept 1 = ladder: detected on it in images 0 and 1, off it in image 2, absent in 3.
    present[[0, 1, 2], 0, 0] = 1
    pos[0, 0, 0] = pos[1, 0, 0] = (0.5, 0.1)
    pos[2, 0, 0] = (0.5, 0.6)
    # class 0 concept 2 = wheel: on the wheel everywhere.
    present[:, 0, 1] = 1
    pos[:, 0, 1] = (0.22, 0.85)
    # class 1 concept 1 = body (not counted overall).
    present[:, 1, 0] = 1
    pos[:, 1, 0] = (0.5, 0.5)
    cp = {("a", 1): ("ladder", 0.9), ("a", 2): ("wheel", 0.6), ("b", 1): ("body", 1.0)}
    labels = [0, 0, 0, 1]
    f = localization(present, pos, list(maps), labels, ["a", "b"], cp, maps.get, parts)
    rows = {(c["class"], c["rank"]): c for c in f["concepts"]}
    lad = rows[("a", 1)]["own_class"]
    assert (lad["detected"], lad["on_part"], lad["visible"], lad["visible_detected"]) == (3, 2, 3, 3)
    assert lad["precision"] == round(2 / 3, 4) and lad["recall"] == 1.0 and lad["recall_on_part"] == round(2 / 3, 4)
    assert rows[("a", 1)]["counted"] and not rows[("a", 2)]["counted"] and not rows[("b", 1)]["counted"]
    assert rows[("a", 2)]["all_images"]["precision"] == 1.0      # image 3 is class b's: only in all_images
    assert rows[("a", 2)]["own_class"]["detected"] == 3 and rows[("a", 2)]["all_images"]["detected"] == 4
    assert f["overall"]["own_class"]["precision"] == round(2 / 3, 4)   # only the ladder is counted
    assert f["per_class"]["a"]["detected"] == 3
    # Held-out images only.
    held = localization(present, pos, list(maps), labels, ["a", "b"], cp, maps.get, parts, held_out={"im2"})
    assert held["n_images"] == 1 and held["held_out"]
    assert held["overall"]["own_class"]["precision"] == 0.0

"""``vrx report``: a self-contained page, checked as text and in a real headless browser (Debian's chromium).

The browser test skips when playwright or chromium is missing (``make browser`` installs chromium),
unless ``VRX_REQUIRE_BROWSER=1`` (as in CI), where a missing browser is a failure.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import shutil

import pytest

from vrx.errors import ArtifactError
from vrx.report import render_report

CHROMIUM = os.environ.get("VRX_CHROMIUM", "/usr/bin/chromium")
ABLATIONS = ("no_edge_features", "shared_edges", "nodes_only")
N_SAMPLES = 4


@pytest.fixture(scope="module")
def report(vrx_run):
    """RUN/report.html written by the ``vrx report`` command."""
    from vrx.cli import report as report_cli

    parser = argparse.ArgumentParser(prog="vrx")
    report_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--run", str(vrx_run), "--samples", str(N_SAMPLES)])
    assert args.func(args) == 0
    path = vrx_run / "report.html"
    return path, path.read_text(encoding="utf-8")


def _expected_samples(vrx_run) -> int:
    split = json.loads((vrx_run / "grn" / "config.json").read_text())["split"]
    return min(N_SAMPLES, len(split["test"]))


def _check_samples(text: str, vrx_run) -> None:
    """The explanations section (as text) counts the test images right and wrong, and shows about
    half of the samples from each group, every card in its own group, or says there is none."""
    n_test = len(json.loads((vrx_run / "grn" / "config.json").read_text())["split"]["test"])
    m = re.search(r"Images of the test split: (\d+); the GRN and the classifier are both right on (\d+) "
                  r"and at least one is wrong on (\d+)\.", " ".join(text.split()))
    assert m, text[:400]
    n, n_right, n_wrong = (int(v) for v in m.groups())
    assert n == n_test and n_right + n_wrong == n
    head, wrong = text.split("Where the classifier is wrong or the GRN disagrees with it")
    right = head.split("Where the GRN and the classifier are right")[1]
    shown_wrong = min(n_wrong, N_SAMPLES // 2)
    shown_right = min(n_right, N_SAMPLES - shown_wrong)
    shown_wrong = min(n_wrong, N_SAMPLES - shown_right)
    right_cards, wrong_cards = right.split("true class:")[1:], wrong.split("true class:")[1:]
    assert (len(right_cards), len(wrong_cards)) == (shown_right, shown_wrong)
    assert shown_right + shown_wrong == _expected_samples(vrx_run)
    for card in right_cards:
        assert "classifier right" in card and "GRN agrees with the classifier" in card, card
        assert "why " in card and "why not " in card          # the why and why-not sentences
    for card in wrong_cards:
        assert "classifier wrong" in card or "GRN disagrees with the classifier" in card, card
        assert "why " in card and "why not " in card
    for group, available in ((right, n_right), (wrong, n_wrong)):
        assert ("There is no such image in this split." in group) == (available == 0)


def test_report_is_self_contained_with_every_section(report, vrx_run):
    path, page = report
    assert path.stat().st_size > 10_000
    for section in ("classes", "fidelity", "explanations"):
        assert page.count(f'id="{section}"') == 1
    # Nothing is fetched: no script, no stylesheet link, no remote or relative source.
    assert "<script" not in page and 'rel="stylesheet"' not in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), sources
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == page.count("<img ")
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    bank = json.loads((vrx_run / "concepts" / "bank.json").read_text())
    n_classes = len(bank["classes"])
    assert len(images) == n_classes + _expected_samples(vrx_run)   # one gallery per class, one figure per sample
    for cls, concepts in bank["classes"].items():
        assert f'id="class-{cls}"' in page
        for c in concepts:
            assert f"<td class=l>{cls}/{c['rank']}</td>" in page
    metrics = json.loads((vrx_run / "grn" / "metrics.json").read_text())
    assert f"{metrics['fidelity_top1']:.3f}" in page
    section = page.split('<section id="explanations">', 1)[1]
    _check_samples(html.unescape(re.sub(r"<[^>]+>", " ", section)), vrx_run)
    for name in ABLATIONS:
        assert f"<td class=l>{name}</td>" in page


@pytest.fixture(scope="session")
def playwright_api():
    """playwright's sync API, checked before the run is built so that a skip costs nothing."""
    return _browser_or_skip()


def test_report_in_headless_chromium(playwright_api, report, vrx_run):
    path, page = report
    sync_playwright = playwright_api
    problems, requests = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            tab = browser.new_page()
            tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                   if m.type in ("error", "warning") else None)
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(path.as_uri(), wait_until="load")
            images = tab.evaluate("[...document.images].map(i => ({alt: i.alt, complete: i.complete, "
                                  "width: i.naturalWidth, shown: i.getBoundingClientRect().width}))")
            sections = tab.evaluate("['classes', 'fidelity', 'explanations'].map(id => "
                                    "document.getElementById(id) ? document.getElementById(id).innerText : null)")
            title = tab.title()
        finally:
            browser.close()
    assert problems == []
    # Only the page itself was loaded from disk: every image is inline.
    assert [u for u in requests if not u.startswith("data:")] == [path.as_uri()]
    bank = json.loads((vrx_run / "concepts" / "bank.json").read_text())
    assert len(images) == len(bank["classes"]) + _expected_samples(vrx_run)
    for img in images:
        assert img["complete"] and img["width"] > 0 and img["shown"] > 0, img
    classes, fidelity, explanations = sections
    assert title.startswith("vrx report")
    assert classes is not None and all(c in classes for c in bank["classes"])
    for cls, concepts in bank["classes"].items():
        if not concepts:
            assert f"No significant concept was found for {cls}" in classes
    assert fidelity is not None and "full GRN" in fidelity and all(a in fidelity for a in ABLATIONS)
    assert explanations is not None and "why " in explanations
    _check_samples(explanations, vrx_run)
    assert sum(f"explanation of {c}/" in " ".join(i["alt"] for i in images) for c in bank["classes"]) >= 1


def test_report_without_grn_says_to_train_and_without_concepts_fails(vrx_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(vrx_run / "concepts", run / "concepts")
    page = render_report(run)
    assert page.count("vrx train --run") == 2          # fidelity and explanations both say what to do
    assert 'id="classes"' in page and "<img " in page
    with pytest.raises(ArtifactError, match="vrx discover"):
        render_report(tmp_path / "empty")


def _browser_or_skip():
    """playwright's sync API, or skip (fail with VRX_REQUIRE_BROWSER=1) saying what is missing."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright, reason = None, "playwright is not installed (it is in the test extras)"
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = f"no chromium at {CHROMIUM} (`make browser` installs Debian's chromium)"
    if reason is not None:
        if os.environ.get("VRX_REQUIRE_BROWSER") == "1":
            pytest.fail(f"VRX_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return sync_playwright


def test_select_samples_mixes_right_and_wrong_and_classes():
    from types import SimpleNamespace

    from vrx.report import select_samples

    def item(name, cls, label, agrees=True):
        return SimpleNamespace(image=name, classifier_class=cls, label=label, agrees=agrees)

    right = [item(f"r{i}", "ab"[i % 2], "ab"[i % 2]) for i in range(5)]
    wrong = [item("w0", "a", "b"), item("w1", "b", "b", agrees=False), item("w2", "a", None, agrees=False)]
    r, w = select_samples(right + wrong, 4)
    assert [x.image for x in r] == ["r0", "r1"] and [x.image for x in w] == ["w0", "w1"]   # both classes
    r, w = select_samples(right + wrong, 1)
    assert len(r) == 1 and w == []
    r, w = select_samples(wrong, 10)
    assert r == [] and sorted(x.image for x in w) == ["w0", "w1", "w2"]
    assert select_samples(right + wrong, 0) == ([], [])

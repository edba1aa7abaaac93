"""Fuzz and fault suite (docs/reliability.md): hostile images, damaged artifacts, kills, two writers.

Every case must end in exit 0 with the right result, or exit 1/2 with one-line messages; never a
traceback. The normal run draws a few cases of each kind (the suite's count is printed at the
end); ``VRX_FUZZ_LONG=1`` draws ten times as many in the tests marked slow, e.g.
``VRX_FUZZ_LONG=1 pytest tests/test_reliability_fuzz.py``.
"""

from __future__ import annotations

import collections
import contextlib
import io
import multiprocessing
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vrxcli import Result, copy_run, thread_env, toy_model_spec, vrx

LONG = os.environ.get("VRX_FUZZ_LONG") == "1"
#: Cases run, by kind, and those that ended in a traceback, a silent wrong result or a lost file.
CASES: collections.Counter[str] = collections.Counter()
BAD: collections.Counter[str] = collections.Counter()


def n_examples(n: int) -> int:
    return 10 * n if LONG else n


def fuzz_settings(n: int):
    return settings(max_examples=n_examples(n), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def record(kind: str, r: Result, ok: bool) -> None:
    """Count a case; a traceback or a wrong result also fails the test (with the case)."""
    CASES[kind] += 1
    if r.exc is not None or "Traceback" in r.err:
        BAD["traceback"] += 1
    elif not ok:
        BAD["wrong result"] += 1


def summary_line() -> str:
    """The suite's count of cases and of bad endings (printed at the end of the test session)."""
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(CASES.items()))
    return (f"reliability fuzz: {sum(CASES.values())} cases ({kinds}); tracebacks {BAD['traceback']}, "
            f"silent wrong results {BAD['wrong result']}, lost files {BAD['lost file']}")


# ======================================================================== images
@pytest.fixture(scope="module")
def toy_model(tmp_path_factory) -> str:
    """An untrained (seeded) toy CNN saved as a toy:DIR model (no training: the fuzz needs a model,
    not a good one)."""
    import torch

    from vrx.models.toycnn import ToyCNN, init_toy_cnn, save_toy_model

    folder = tmp_path_factory.mktemp("toy_model")
    model = init_toy_cnn(ToyCNN(num_classes=3), torch.Generator().manual_seed(0))
    save_toy_model(folder, model, {"class_names": ["ambulance", "fire_engine", "school_bus"],
                                   "mean": [0.5] * 3, "std": [0.25] * 3})
    return f"toy:{folder}"


def _encode(array: np.ndarray, mode: str, fmt: str) -> bytes:
    from PIL import Image

    im = Image.fromarray(array)
    if mode == "I;16":
        im = Image.fromarray((array[..., 0].astype(np.uint16) * 257))
    elif mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


VALID_MODES = [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("1", "PNG"),
               ("I;16", "PNG"), ("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "BMP"),
               ("RGB", "GIF"), ("RGB", "TIFF"), ("RGBA", "WEBP")]


@st.composite
def valid_images(draw) -> tuple[bytes, str]:
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    mode, fmt = draw(st.sampled_from(VALID_MODES))
    array = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return _encode(array, mode, fmt), f"valid {mode} {fmt} {w}x{h}"


@st.composite
def damaged_images(draw) -> tuple[bytes, str]:
    data, what = draw(valid_images())
    kind = draw(st.sampled_from(["truncate", "flip", "random", "header+random", "empty", "huge header"]))
    if kind == "truncate":
        cut = draw(st.integers(0, max(len(data) - 1, 0)))
        return data[:cut], f"{what} truncated at {cut}"
    if kind == "flip":
        k = draw(st.integers(0, len(data) - 1))
        return data[:k] + bytes([data[k] ^ draw(st.integers(1, 255))]) + data[k + 1:], f"{what} byte {k} flipped"
    if kind == "random":
        return draw(st.binary(max_size=600)), "random bytes"
    if kind == "header+random":
        return b"\x89PNG\r\n\x1a\n" + draw(st.binary(max_size=400)), "PNG signature + random bytes"
    if kind == "empty":
        return b"", "empty file"
    # A PNG header claiming a huge image (a decompression bomb): refused before decoding.
    side = draw(st.integers(8000, 60000))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    import zlib

    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + b"\x00" * 64, f"PNG header of {side}x{side}")


def _classify(model: str, data: bytes, name: str = "img.png", *extra: str) -> tuple[Result, Path, str]:
    tmp = tempfile.mkdtemp(prefix="vrxfuzz")
    path = Path(tmp) / name
    path.write_bytes(data)
    r = vrx("classify", "--model", model, path, "--json", "--top", "3", *extra)
    return r, path, tmp


def _expected_top(model: str, path: Path) -> list[tuple[str, float]]:
    from vrx.data.images import load_image
    from vrx.models import load, to_tensor

    adapter = load(model)
    preds = adapter.predict([to_tensor(load_image(path), size=adapter.input_size)], top=3)[0]
    return [(p.class_name, round(p.probability, 6)) for p in preds]


def _check_image_case(model: str, data: bytes, what: str, must_read: bool) -> None:
    r, path, tmp = _classify(model, data)
    try:
        ok = r.clean()
        if ok and r.rc == 0:
            # The right result: the same top classes the library gives for the decoded pixels.
            got = [(t["class_name"], t["probability"]) for t in json.loads(r.out)[0]["top"]]
            ok = got == _expected_top(model, path)
        elif ok:
            ok = r.rc == 1 and str(path) in r.err and not must_read
        record("image", r, ok)
        assert ok, f"{what}: {r}"
    finally:
        shutil.rmtree(tmp)


@fuzz_settings(40)
@given(case=valid_images())
def test_fuzz_valid_images_are_classified(toy_model, case):
    data, what = case
    _check_image_case(toy_model, data, what, must_read=True)


@fuzz_settings(100)
@given(case=damaged_images())
def test_fuzz_damaged_images_are_named_errors(toy_model, case):
    data, what = case
    _check_image_case(toy_model, data, what, must_read=False)


@pytest.mark.parametrize("name", ["dir.png", "missing.png"])
def test_a_folder_or_missing_file_as_image(toy_model, tmp_path, name):
    path = tmp_path / name
    if name == "dir.png":
        path.mkdir()
    r = vrx("classify", "--model", toy_model, path)
    ok = r.rc == 1 and r.clean() and str(path) in r.err
    record("image", r, ok)
    assert ok, r


# ======================================================================== damaged artifacts
ARTIFACTS = ["run.json", "concepts/bank.json", "concepts/bank.safetensors", "concepts/purity.json",
             "graphs/graphs.json", "graphs/graphs.safetensors", "grn/config.json", "grn/model.safetensors",
             "grn/metrics.json"]


def _json_paths(obj, prefix=()):
    """Every key path of a JSON value (dict keys and list indices)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:5]):   # the first few list items: lists are long and alike
            yield prefix + (i,)
            yield from _json_paths(v, prefix + (i,))


def _delete(obj, path):
    for key in path[:-1]:
        obj = obj[key]
    del obj[path[-1]]


def _damage(file: Path, kind: str, pick: int) -> str:
    """Damage ``file`` in place; returns what was done."""
    data = file.read_bytes()
    if kind == "delete file":
        file.unlink()
        return "file deleted"
    if kind == "truncate":
        cut = pick % max(len(data), 1)
        file.write_bytes(data[:cut])
        return f"truncated at {cut} of {len(data)} bytes"
    if file.suffix == ".json":
        meta = json.loads(data)
        paths = list(_json_paths(meta))
        path = paths[pick % len(paths)]
        _delete(meta, path)
        file.write_text(json.dumps(meta))
        return f"key {'/'.join(map(str, path))} deleted"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(file))
    if kind == "flip":
        k = 8 + pick % (len(data) - 8)
        file.write_bytes(data[:k] + bytes([data[k] ^ 0x10]) + data[k + 1:])
        return f"byte {k} of {len(data)} flipped"
    name = sorted(tensors)[pick % len(tensors)]
    del tensors[name]
    save_file(tensors, str(file))
    return f"tensor {name} deleted"


@pytest.fixture(scope="module")
def fuzz_run(vrx_run, toy_world, tmp_path_factory):
    """A pristine run copy, the fixed place its damaged copies go, and reference outputs from there."""
    base = tmp_path_factory.mktemp("fuzz_run")
    pristine = base / "pristine"
    shutil.copytree(vrx_run, pristine, ignore=shutil.ignore_patterns("cache"))
    image = toy_world / "ambulance" / "000001.png"
    work = base / "run"
    refs = {}
    _fresh(pristine, work, vrx_run)
    r = vrx("explain", "--run", work, "--out", base / "ref_explain", image)
    assert r.rc == 0, r
    refs["explain"] = json.loads((base / "ref_explain" / "000001.json").read_text())
    r = vrx("report", "--run", work, "--samples", "1")
    assert r.rc == 0, r
    refs["report"] = (work / "report.html").read_text()
    return {"pristine": pristine, "work": work, "image": image, "refs": refs, "base": base, "cache": vrx_run}


def _fresh(pristine: Path, work: Path, cached_run: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(pristine, work)
    # The patch cache is content-keyed and written atomically: shared, not copied, to keep cases fast.
    (work / "cache").symlink_to(Path(cached_run, "cache").resolve(), target_is_directory=True)


def _strip_names(record: dict) -> dict:
    """An explanation record without concept names and the sentences that use them: the names come
    from purity.json alone, and an edited purity.json renames concepts, which is no wrong answer."""
    record = json.loads(json.dumps(record))
    record.pop("sentences", None)
    for cls in record["classes"].values():
        cls.pop("sentence", None)
        for node in cls["nodes"]:
            node.pop("name", None)
    return record


@fuzz_settings(60)
@given(artifact=st.sampled_from(ARTIFACTS), kind=st.sampled_from(["delete key or tensor", "truncate",
                                                                    "delete file", "flip"]),
       pick=st.integers(0, 10_000))
def test_fuzz_damaged_artifacts_fail_cleanly_or_give_the_same_answer(fuzz_run, artifact, kind, pick):
    work = fuzz_run["work"]
    _fresh(fuzz_run["pristine"], work, fuzz_run["cache"])
    if kind == "flip" and not artifact.endswith(".safetensors"):
        kind = "truncate"
    what = f"{artifact}: {_damage(work / artifact, kind, pick)}"
    report = artifact.startswith(("graphs/", "grn/metrics"))
    if report:
        r = vrx("report", "--run", work, "--samples", "1")
        ok = r.clean()
        if ok and r.rc == 0:
            # Unchanged, or changed with a warning on stderr / in the log (e.g. a figure left out).
            ok = (work / "report.html").read_text() == fuzz_run["refs"]["report"] or bool(r.warnings)
    else:
        out = fuzz_run["base"] / "out"
        shutil.rmtree(out, ignore_errors=True)
        r = vrx("explain", "--run", work, "--out", out, fuzz_run["image"])
        ok = r.clean() and r.rc in (0, 2)
        if ok and r.rc == 0:
            got, ref = json.loads((out / "000001.json").read_text()), fuzz_run["refs"]["explain"]
            ok = got == ref or (artifact.endswith("purity.json") and _strip_names(got) == _strip_names(ref))
    record("artifact", r, ok)
    assert ok, f"{what}: {r}"


def test_a_run_without_provenance_still_reads_with_a_warning(fuzz_run):
    """A run made by an older vrx (no made_from): the same answer, and a warning that it is unchecked."""
    work = fuzz_run["work"]
    _fresh(fuzz_run["pristine"], work, fuzz_run["cache"])
    older = {"graphs/graphs.json": ["made_from", "image_paths_base", "meta_hash"],
             "grn/config.json": ["made_from", "weights_hash", "metrics_hash", "meta_hash"]}
    for name, keys in older.items():
        meta = json.loads((work / name).read_text())
        for key in keys:
            del meta[key]
        (work / name).write_text(json.dumps(meta))
    r = vrx("report", "--run", work, "--samples", "1")
    ok = r.rc == 0 and any("records no provenance" in w for w in r.warnings)
    ok = ok and (work / "report.html").read_text() == fuzz_run["refs"]["report"]
    record("artifact", r, ok)
    assert ok, r


# ======================================================================== outputs
OUT_SETUPS = ["input in --out", "another image's record", "a user's png", "a folder named like the output",
              "its own earlier output"]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


@fuzz_settings(10)
@given(setup=st.lists(st.sampled_from(OUT_SETUPS), max_size=3, unique=True))
def test_fuzz_explain_never_loses_a_file(fuzz_run, setup):
    """Whatever --out already holds, no file in it is lost: only this image's own earlier explanation
    may be rewritten."""
    work, base = fuzz_run["work"], fuzz_run["base"]
    _fresh(fuzz_run["pristine"], work, fuzz_run["cache"])
    out, src = base / "out_fuzz", base / "in"
    for folder in (out, src):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    image = (out if "input in --out" in setup else src) / "photo.png"
    shutil.copy(fuzz_run["image"], image)
    if "its own earlier output" in setup:   # (refused itself when the input lies in --out)
        assert vrx("explain", "--run", work, "--out", out, image).rc == (2 if image.parent == out else 0)
    if "another image's record" in setup and not (out / "photo.json").exists():
        (out / "photo.json").write_text(json.dumps({**fuzz_run["refs"]["explain"], "image": "elsewhere/photo.png"}))
    if "a user's png" in setup and not (out / "photo.png").exists():
        (out / "photo.png").write_bytes(b"the user's picture")
    if "a folder named like the output" in setup and not (out / "photo.json").exists():
        (out / "photo.json").mkdir()
    before = _snapshot(out)
    r = vrx("explain", "--run", work, "--out", out, image)
    after = _snapshot(out)
    own = before.get("photo.json") is not None and json.loads(before["photo.json"]).get("image") == str(image)
    lost = [name for name, data in before.items() if after.get(name, b"") != data
            and not (own and name in ("photo.json", "photo.png"))]
    ok = r.clean() and not lost
    if ok and r.rc == 0:
        ok = json.loads((out / "photo.json").read_text())["image"] == str(image)
    CASES["output"] += 1
    if lost:
        BAD["lost file"] += 1
    elif not ok:
        BAD["wrong result" if r.exc is None else "traceback"] += 1
    assert ok, f"{setup}: lost {lost}: {r}"


# ======================================================================== kills and two writers
# The killed commands run in a forked copy of this process (torch already imported: a fresh
# interpreter would spend most of a short run importing), killed with SIGKILL like any process.
def _forked(argv: list[str]) -> multiprocessing.Process:
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(argv,))
    proc.start()
    return proc


def _child(argv: list[str]) -> None:
    import traceback

    from vrx.cli import main

    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        try:
            code = main(argv)
        except BaseException:  # noqa: BLE001  a traceback: reported by the exit code
            traceback.print_exc()
            code = 99
    os._exit(code)   # no pytest teardown in the child


def _discover_args(model: str, images: Path, out: Path) -> list[str]:
    return ["discover", "--model", model, "--images", str(images), "--classes", "ambulance,fire_engine",
            "--max-images", "2", "--out", str(out), "--seed", "0", "--preset", "toyworld"]


def _bank_state(run: Path) -> tuple[str, dict[str, bytes]]:
    from vrx.concepts.bank import bank_fingerprint

    galleries = {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "concepts").glob("*/gallery.png"))}
    return bank_fingerprint(run / "concepts"), galleries


def _graphs_state(run: Path) -> bytes:
    return (run / "graphs" / "graphs.json").read_bytes() + (run / "graphs" / "graphs.safetensors").read_bytes()


@pytest.fixture(scope="module")
def discovered_reference(vrx_run, toy_world, tmp_path_factory):
    """``vrx discover`` run to completion once, uninterrupted, and how long it took."""
    out = tmp_path_factory.mktemp("discover_ref") / "run"
    t0 = time.perf_counter()
    r = vrx(*_discover_args(toy_model_spec(vrx_run), toy_world, out))
    assert r.rc == 0, r
    return out, time.perf_counter() - t0


def _kill_then_rerun(argv: list[str], delay: float) -> tuple[Result, bool]:
    proc = _forked(argv)
    proc.join(delay)
    killed = proc.is_alive()
    if killed:
        proc.kill()
    proc.join()
    assert killed or proc.exitcode == 0, f"the command ended with {proc.exitcode} before the kill"
    return vrx(*argv), killed


def _kill_seeds(n: int) -> list[int]:
    return list(range(n_examples(n)))


@pytest.mark.parametrize("seed", _kill_seeds(1))
def test_sigkill_during_discover_then_rerun_gives_the_same_bank(vrx_run, toy_world, discovered_reference,
                                                                tmp_path, seed):
    ref, seconds = discovered_reference
    delay = random.Random(seed).uniform(0.1, 0.9) * seconds
    out = tmp_path / "run"
    r, killed = _kill_then_rerun(_discover_args(toy_model_spec(vrx_run), toy_world, out), delay)
    ok = r.rc == 0 and _bank_state(out) == _bank_state(ref)
    record("kill" if killed else "kill (ended first)", r, ok)
    assert ok, f"killed={killed} after {delay:.2f}s: {r}"


@pytest.mark.parametrize("seed", _kill_seeds(1))
def test_sigkill_during_graphs_then_rerun_gives_the_same_graphs(vrx_run, toy_world, tmp_path, seed):
    """The graphs of the tiny run are rebuilt from scratch (no patch cache), killed at a random point,
    rebuilt again: byte for byte the graphs the run had."""
    target = copy_run(vrx_run, tmp_path / "run")
    shutil.rmtree(target / "cache")
    shutil.rmtree(target / "graphs")
    delay = random.Random(100 + seed).uniform(0.3, 3.0)
    r, killed = _kill_then_rerun(["graphs", "--run", str(target), "--images", str(toy_world)], delay)
    ok = r.rc == 0 and _graphs_state(target) == _graphs_state(vrx_run)
    record("kill" if killed else "kill (ended first)", r, ok)
    assert ok, f"killed={killed} after {delay:.2f}s: {r}"


@pytest.mark.parametrize("seed", _kill_seeds(1))
def test_two_discovers_on_one_run_at_once(vrx_run, toy_world, discovered_reference, tmp_path, seed):
    """Both end cleanly (one may be refused by the lock), and the bank is the one a single run makes."""
    ref, seconds = discovered_reference
    out = tmp_path / "run"
    argv = _discover_args(toy_model_spec(vrx_run), toy_world, out)
    first = _forked(argv)
    time.sleep(random.Random(200 + seed).uniform(0.0, 0.5) * seconds)
    second = subprocess.run([sys.executable, "-m", "vrx", *argv], capture_output=True, text=True,
                            env=thread_env(), timeout=300)
    first.join(300)
    results = [Result(first.exitcode, "", ""), Result(second.returncode, second.stdout, second.stderr)]
    ok = all(r.rc in (0, 2) for r in results) and any(r.rc == 0 for r in results) and results[1].clean()
    ok = ok and (results[1].rc == 0 or "another vrx command is writing" in results[1].err)
    ok = ok and _bank_state(out) == _bank_state(ref)
    for r in results:
        record("two writers", r, ok)
    assert ok, "\n".join(map(str, results))

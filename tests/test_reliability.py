"""The cases of the reliability probe (docs/reliability.md): each one a lost file, a silent wrong
answer, a traceback or code run from a run folder before; now a clear error or the right result."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from vrxcli import copy_run, save_png, toy_model_spec, vrx, vrx_process


def _image(world: Path, cls: str = "ambulance", k: int = 0) -> Path:
    return world / cls / f"{k:06d}.png"


# ---------------------------------------------------------------- data loss
def test_explain_never_overwrites_an_input_image(vrx_run, toy_world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(_image(toy_world), "photo.png")
    before = Path("photo.png").read_bytes()
    r = vrx("explain", "--run", vrx_run, "--out", ".", "photo.png")
    assert r.rc == 2 and r.clean(), r
    assert "photo.png" in r.err and "overwrite" in r.err
    assert Path("photo.png").read_bytes() == before
    assert not Path("photo.json").exists()


def test_explain_never_overwrites_another_images_explanation(vrx_run, toy_world, tmp_path):
    out = tmp_path / "out"
    assert vrx("explain", "--run", vrx_run, "--out", out, _image(toy_world, "ambulance")).rc == 0
    first = (out / "000000.json").read_bytes(), (out / "000000.png").read_bytes()
    # Another image of the same file name: its outputs would replace the first image's.
    r = vrx("explain", "--run", vrx_run, "--out", out, _image(toy_world, "fire_engine"))
    assert r.rc == 2 and r.clean() and "000000.json" in r.err, r
    assert ((out / "000000.json").read_bytes(), (out / "000000.png").read_bytes()) == first
    # The same image again rewrites its own explanation.
    assert vrx("explain", "--run", vrx_run, "--out", out, _image(toy_world, "ambulance")).rc == 0
    # A file vrx did not write is never replaced either.
    (out / "000001.png").write_bytes(b"the user's own picture")
    r = vrx("explain", "--run", vrx_run, "--out", out, _image(toy_world, "ambulance", 1))
    assert r.rc == 2 and r.clean() and "000001.png" in r.err, r
    assert (out / "000001.png").read_bytes() == b"the user's own picture"


def test_explain_out_that_is_a_file_is_a_clear_error(vrx_run, toy_world, tmp_path):
    (tmp_path / "afile").write_text("keep me")
    r = vrx("explain", "--run", vrx_run, "--out", tmp_path / "afile", _image(toy_world))
    assert r.rc == 2 and r.clean() and "is a file" in r.err, r
    assert (tmp_path / "afile").read_text() == "keep me"


# ---------------------------------------------------------------- silent wrong results
def test_a_grn_from_another_run_is_refused(vrx_run, toy_world, tmp_path):
    """Run B discovers its own concepts (another seed) for the same classes; A's GRN copied into B
    must not explain B's images with A's network, nor show A's fidelity in B's report."""
    from vrx import stages
    from vrx.data.images import load_image_folder
    from vrx.run import Run
    from vrx.runtime import threads

    other = Run(copy_run(vrx_run, tmp_path / "other"))
    config = dataclasses.replace(other.bank().config, seed=1)
    with threads(torch_threads=1, blas_threads=1):
        stages.discover(other, other.adapter(), load_image_folder(toy_world, max_images_per_class=6), config,
                        show_progress=False)
    assert other.bank().class_names == Run(vrx_run).bank().class_names
    assert _concepts(other.bank()) != _concepts(Run(vrx_run).bank())
    r = vrx("explain", "--run", other.path, "--out", tmp_path / "out", _image(toy_world))
    assert r.rc == 2 and r.clean() and "another concept bank" in r.err and "vrx train" in r.err, r
    r = vrx("report", "--run", other.path)
    assert r.rc == 2 and r.clean() and "another concept bank" in r.err, r
    assert not other.report_path.exists()


def _concepts(bank) -> list[tuple[str, int, float, list[float]]]:
    return [(c.class_name, c.cluster, c.p_value, c.center.tolist()) for cs in bank.concepts.values() for c in cs]


def test_discovery_again_with_the_same_settings_keeps_the_grn_valid(vrx_run, toy_world, tmp_path):
    from vrx import stages
    from vrx.data.images import load_image_folder
    from vrx.run import Run
    from vrx.runtime import threads

    again = Run(copy_run(vrx_run, tmp_path / "again"))
    with threads(torch_threads=1, blas_threads=1):
        stages.discover(again, again.adapter(), load_image_folder(toy_world, max_images_per_class=6),
                        again.bank().config, show_progress=False)
    assert again.bank_hash() == Run(vrx_run).bank_hash()   # same concepts, other timings
    assert vrx("explain", "--run", again.path, "--out", tmp_path / "out", _image(toy_world)).rc == 0


def test_graph_image_paths_resolve_from_any_directory(vrx_run, toy_world, tmp_path, monkeypatch):
    """Graphs built with a relative --images folder; the report is written from elsewhere and still
    has every sample's figure."""
    run = copy_run(vrx_run, tmp_path / "run")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(toy_world, work / "world")
    monkeypatch.chdir(work)
    assert vrx("graphs", "--run", run, "--images", "world", "--max-images", "4").rc == 0
    assert vrx("train", "--run", run, "--epochs", "3", "--no-ablations", "--hidden", "8", "--input-proj", "8",
               "--edge-dim", "4", "--test-fraction", "0.3").rc == 0
    stored = json.loads((run / "graphs" / "graphs.json").read_text())["image_paths"]
    assert all(Path(p).is_absolute() for p in stored)   # the images lie outside the run folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = vrx("report", "--run", run.resolve(), "--samples", "2")
    assert r.rc == 0, r
    page = (run / "report.html").read_text()
    assert "No figure" not in page and page.count('alt="explanation of') == 2


def test_paths_inside_the_run_folder_are_stored_relative_to_it(vrx_run, tmp_path, monkeypatch):
    from vrx.graphs.builder import Matches
    from vrx.run import Run

    run = Run(copy_run(vrx_run, tmp_path / "run"))
    ds = run.graphs()
    (run.path / "images").mkdir()
    inside = []
    for k, p in enumerate(ds.image_paths):
        shutil.copy(p, run.path / "images" / f"{k}.png")
        inside.append(f"run/images/{k}.png")   # relative to the working directory, as a user types it
    monkeypatch.chdir(tmp_path)
    ds.image_paths = inside
    run.save_graphs(ds, Matches.load(run.matches_path))
    stored = json.loads((run.graphs_dir / "graphs.json").read_text())["image_paths"]
    assert stored[0] == "images/0.png"
    monkeypatch.chdir("/")
    assert all(Path(p).is_file() for p in Run(tmp_path / "run").graphs().image_paths)


def test_classify_warns_about_a_tiny_image(vrx_run, tmp_path):
    tiny = save_png(tmp_path / "tiny.png", 1, 1)
    r = vrx("classify", "--model", toy_model_spec(vrx_run), tiny, "--top", "2")
    assert r.rc == 0 and r.clean(), r
    assert "warning" in r.err and "tiny.png" in r.err and "1x1" in r.err


# ---------------------------------------------------------------- tracebacks
def test_discovery_with_one_image_per_class_is_a_clear_error(vrx_run, toy_world, tmp_path):
    images = tmp_path / "images"
    for cls in ("ambulance", "fire_engine"):
        (images / cls).mkdir(parents=True)
        shutil.copy(_image(toy_world, cls), images / cls / "a.png")
    shutil.copytree(toy_world / "random", images / "random")
    r = vrx("discover", "--model", toy_model_spec(vrx_run), "--images", images, "--out", tmp_path / "run")
    assert r.rc == 2 and r.clean() and "1 usable image" in r.err and "at least 2" in r.err, r


def test_a_cav_from_one_example_is_a_clear_error():
    import numpy as np

    from vrx.concepts.tcav import train_cav
    from vrx.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 2"):
        train_cav(np.ones((1, 4)), np.zeros((5, 4)), seed=0)


def test_bank_json_without_a_key_is_a_clear_error(vrx_run, toy_world, tmp_path):
    run = copy_run(vrx_run, tmp_path / "run")
    meta = json.loads((run / "concepts" / "bank.json").read_text())
    del meta["layer"]
    (run / "concepts" / "bank.json").write_text(json.dumps(meta))
    r = vrx("explain", "--run", run, "--out", tmp_path / "out", _image(toy_world))
    assert r.rc == 2 and r.clean() and "'layer'" in r.err, r


def test_graphs_rebuilt_without_retraining_is_a_clear_error(vrx_run, toy_world, tmp_path):
    run = copy_run(vrx_run, tmp_path / "run")
    assert vrx("graphs", "--run", run, "--images", toy_world, "--max-images", "3").rc == 0
    r = vrx("report", "--run", run)
    assert r.rc == 2 and r.clean() and "rebuilt" in r.err and "vrx train" in r.err, r
    # New images are still explained: the GRN belongs to the run's bank.
    assert vrx("explain", "--run", run, "--out", tmp_path / "out", _image(toy_world)).rc == 0


def test_a_second_writer_of_a_run_fails_with_a_clear_message(vrx_run, toy_world, tmp_path):
    from vrx.run import Run

    from filelock import FileLock

    run = Run(copy_run(vrx_run, tmp_path / "run"))
    before = (run.concepts_dir / "bank.json").read_bytes()
    with FileLock(run.path / ".vrx.lock"):   # another command is writing this run
        r = vrx_process("discover", "--model", toy_model_spec(vrx_run), "--images", toy_world,
                        "--max-images", "2", "--out", run.path)
    assert r.rc == 2 and r.clean() and "another vrx command is writing" in r.err, r
    assert (run.concepts_dir / "bank.json").read_bytes() == before


@pytest.mark.parametrize("top", ["-1", "0"])
def test_classify_top_out_of_range_is_a_clear_error(vrx_run, toy_world, top):
    r = vrx("classify", "--model", toy_model_spec(vrx_run), _image(toy_world), "--top", top)
    assert r.rc == 2 and r.clean() and "--top" in r.err, r


def test_classify_top_above_the_class_count_lists_every_class(vrx_run, toy_world):
    r = vrx("classify", "--model", toy_model_spec(vrx_run), _image(toy_world), "--top", "50", "--json")
    assert r.rc == 0, r
    assert len(json.loads(r.out)[0]["top"]) == 3


# ---------------------------------------------------------------- code from a run folder
def _hostile_run(vrx_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A run whose run.json names a python: model file that leaves a mark when it runs."""
    run = copy_run(vrx_run, tmp_path / "run")
    mark = tmp_path / "code-ran"
    (tmp_path / "model.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(mark)!r}).write_text('yes')\n"
        "from vrx.models import load\n"
        f"def make():\n    return load({toy_model_spec(vrx_run)!r})\n")
    manifest = json.loads((run / "run.json").read_text())
    manifest["model"]["model"] = f"python:{tmp_path / 'model.py'}:make"
    (run / "run.json").write_text(json.dumps(manifest))
    return run, mark


def test_a_run_folder_never_runs_code_by_itself(vrx_run, toy_world, tmp_path):
    run, mark = _hostile_run(vrx_run, tmp_path)
    for argv in (["explain", "--run", run, "--out", tmp_path / "out", _image(toy_world)],
                 ["graphs", "--run", run, "--images", toy_world, "--max-images", "2"]):
        r = vrx(*argv)
        assert r.rc == 2 and r.clean() and "runs Python code" in r.err and "--trust-run" in r.err, r
    assert not mark.exists()


def test_python_specs_load_on_purpose(vrx_run, toy_world, tmp_path):
    run, mark = _hostile_run(vrx_run, tmp_path)
    spec = json.loads((run / "run.json").read_text())["model"]["model"]
    assert vrx("explain", "--run", run, "--out", tmp_path / "a", _image(toy_world), "--trust-run").rc == 0
    assert mark.exists()
    mark.unlink()
    assert vrx("explain", "--run", run, "--out", tmp_path / "b", _image(toy_world), "--model", spec).rc == 0
    assert mark.exists()


# ---------------------------------------------------------------- small
def test_explain_names_the_file_of_a_tiny_image(vrx_run, tmp_path):
    tiny = save_png(tmp_path / "tiny.png", 1, 1)
    r = vrx("explain", "--run", vrx_run, "--out", tmp_path / "out", tiny)
    assert r.rc == 1 and r.clean(), r
    assert f"{tiny}: image is 1x1, too small" in r.err and "array:" not in r.err


def test_the_pixel_limit_has_a_flag(vrx_run, toy_world, tmp_path):
    image = _image(toy_world)  # 128 x 128 = 0.016 megapixels
    r = vrx("classify", "--model", toy_model_spec(vrx_run), image, "--max-megapixels", "0.01")
    assert r.rc == 1 and r.clean() and "exceeds the limit" in r.err and str(image) in r.err, r
    r = vrx("explain", "--run", vrx_run, "--out", tmp_path / "out", image, "--max-megapixels", "0.01")
    assert r.rc == 1 and r.clean() and "exceeds the limit" in r.err, r
    assert vrx("classify", "--model", toy_model_spec(vrx_run), image, "--max-megapixels", "0").rc == 0
    r = vrx("classify", "--model", toy_model_spec(vrx_run), image, "--max-megapixels", "-1")
    assert r.rc == 2 and r.clean(), r


def test_report_out_that_is_a_folder_is_a_clear_error(vrx_run, tmp_path):
    r = vrx("report", "--run", vrx_run, "--out", tmp_path)
    assert r.rc == 2 and r.clean() and "is a folder" in r.err, r


def test_a_missing_run_folder_is_not_created(tmp_path, toy_world):
    r = vrx("graphs", "--run", tmp_path / "typo", "--images", toy_world)
    assert r.rc == 2 and r.clean(), r
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("argv", [["toyworld", "render", "--n-per-class", "1", "--out"],
                                  ["toyworld", "train", "--data", "nowhere", "--out"],
                                  ["compare", "--images", "nowhere", "--out"]])
def test_an_output_folder_that_is_a_file_is_a_clear_error(tmp_path, argv):
    (tmp_path / "afile").write_text("keep me")
    r = vrx(*argv, tmp_path / "afile")
    assert r.rc == 2 and r.clean() and "is a file" in r.err, r
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("split", ['{"train": ["a"], "test": [1]}', '[1, 2]', '{"val": [1]}', '{"train": [true]}'])
def test_a_malformed_split_file_is_a_clear_error(tmp_path, split):
    (tmp_path / "split.json").write_text(split)
    r = vrx("train", "--run", tmp_path / "run", "--split", tmp_path / "split.json")
    assert r.rc == 2 and r.clean() and "split" in r.err, r


def test_discover_and_graphs_take_the_pixel_limit(vrx_run, toy_world, tmp_path):
    # Every toyworld image (0.016 MP) is above 0.01 MP: each is named and skipped, then nothing is left.
    r = vrx("discover", "--model", toy_model_spec(vrx_run), "--images", toy_world, "--out", tmp_path / "r",
            "--max-megapixels", "0.01")
    assert r.rc == 2 and r.clean() and "exceeds the limit" in r.err, r
    assert not (tmp_path / "r" / "concepts").exists()
    r = vrx("graphs", "--run", vrx_run, "--images", toy_world, "--max-megapixels", "0.01")
    assert r.rc == 2 and r.clean() and "exceeds the limit" in r.err, r

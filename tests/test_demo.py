"""The demo pipeline's stage cache: a second run with the same settings redoes nothing."""

from vrx.demo import DemoConfig, Pipeline


def test_second_run_skips_finished_stages(tmp_path):
    cfg = DemoConfig(n_train_per_class=2, n_images_per_class=2, n_random=2)
    first = Pipeline(tmp_path, cfg)
    first.render()
    assert first.skipped == [] and set(first.seconds) == {"render_train", "render_images"}
    again = Pipeline(tmp_path, cfg)
    again.render()
    assert again.skipped == ["render_train", "render_images"]
    changed = Pipeline(tmp_path, DemoConfig(n_train_per_class=3, n_images_per_class=2, n_random=2))
    changed.render()
    assert changed.skipped == []


def test_a_smaller_render_leaves_no_stale_images(tmp_path):
    Pipeline(tmp_path, DemoConfig(n_train_per_class=3, n_images_per_class=1, n_random=1)).render()
    small = Pipeline(tmp_path, DemoConfig(n_train_per_class=2, n_images_per_class=1, n_random=1))
    small.render()
    assert len(list((small.train_data / "ambulance").glob("*.parts.png"))) == 2


def test_stage_settings_and_downstream_stages_rerun(tmp_path):
    calls = []

    def run_all(extra):
        p = Pipeline(tmp_path, DemoConfig())
        for name, ex in (("a", None), ("b", extra), ("c", None)):
            p.stage(name, lambda: True, lambda name=name: calls.append(name), ex)
        return p

    run_all({"k": 1})
    assert calls == ["a", "b", "c"]
    calls.clear()
    assert run_all({"k": 1}).skipped == ["a", "b", "c"] and calls == []
    # A change of b's own settings reruns b, and c after it, which reads what b wrote.
    p = run_all({"k": 2})
    assert calls == ["b", "c"] and p.skipped == ["a"]

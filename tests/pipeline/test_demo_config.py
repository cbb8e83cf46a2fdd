"""configs/demo.yaml parses, its quick: sizes apply under --quick, and a bad key is one line naming file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrm_jax.pipeline.demo import demo_stages, verdict
from agentrm_jax.pipeline.demo_config import DemoConfig
from agentrm_jax.pipeline.stages import fingerprints

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "demo.yaml"


def test_the_shipped_config_and_its_quick_sizes():
    full, quick = DemoConfig.from_yaml(CONFIG), DemoConfig.from_yaml(CONFIG, quick=True)
    assert full.eval.held_in == ("shop",) and full.eval.held_out and "shop" not in full.eval.held_out
    assert quick.quick and not full.quick
    assert quick.sft.steps < full.sft.steps and quick.eval.seeds <= full.eval.seeds
    assert quick.explore.env == full.explore.env == "shop"  # quick keeps what it does not override
    names = [s.name for s in demo_stages(quick)]
    assert names == ["demos", "sft", "explore", "samples", "rm", "eval", "report"]
    # the sizes decide the fingerprints: quick and full outputs never pass for each other
    a, b = fingerprints(demo_stages(full)), fingerprints(demo_stages(quick))
    assert all(a[n] != b[n] for n in ("demos", "sft", "rm", "eval", "report"))


@pytest.mark.parametrize("text, where, what", [
    ("rm:\n  steps: 4\n  stpes: 2\n", ":3:", "unknown key 'stpes'"),
    ("eval:\n  held_out: [babyai]\n", ":2:", "'babyai' is not one of the families"),
    ("sft:\n  steps: 0\n", ":2:", "sft.steps must be an integer >= 1"),
    ("evaluate: {}\n", ":1:", "unknown key 'evaluate'"),
    ("eval:\n  beam: 2by2\n", ":2:", "eval.beam"),
])
def test_bad_values_are_one_line_naming_file_and_line(tmp_path, text, where, what):
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        DemoConfig.from_yaml(path)
    message = str(err.value)
    assert "\n" not in message and f"{path}{where}" in message and what in message


def test_the_verdict_says_plainly_when_the_rm_does_not_beat_random_pick():
    cfg = DemoConfig()
    n = cfg.eval.best_of_n

    def row(env, success, progress, rnd_success, rnd_progress):
        return {"env": env, "method": "best_of_n", "params": {"n": n}, "success": success, "progress": progress,
                "baselines": {"random_pick_success": rnd_success, "random_pick_progress": rnd_progress}}

    held_out = cfg.eval.held_out[0]
    tie = [row(held_out, False, 0.2, 0.0, 0.2), row("shop", True, 1.0, 0.0, 0.0)]  # held-in rows do not count
    assert "did NOT beat random pick" in verdict(tie, cfg) and "(1 episodes)" in verdict(tie, cfg)
    win = [row(held_out, False, 0.5, 0.0, 0.2)]
    assert verdict(win, cfg).startswith("the RM beat random pick")
    assert "no held-out Best-of-N" in verdict([], cfg)


def test_a_bad_quick_value_points_at_the_quick_line(tmp_path):
    from agentrm_jax.pipeline.demo_config import DemoConfig

    path = tmp_path / "demo.yaml"
    path.write_text("rm:\n  steps: 16\nquick:\n  rm: {steps: 0}\n", encoding="utf-8")
    DemoConfig.from_yaml(path)  # the full sizes are fine
    with pytest.raises(ValueError) as err:
        DemoConfig.from_yaml(path, quick=True)
    assert str(err.value).startswith(f"{path}:4: quick.rm.steps must be an integer >= 1, got 0"), str(err.value)

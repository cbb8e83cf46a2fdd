"""Eval configs: every mistake is caught before anything slow, with an error that names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrm_jax.cli import main
from agentrm_jax.evaluate import EvalConfig, Method, parse_methods

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_key_the_file_and_the_line(tmp_path):
    path = _write(tmp_path, "policy: expert\nenvs: [maze]\nseedz: 3\n")
    with pytest.raises(ValueError) as err:
        EvalConfig.from_yaml(path)
    message = str(err.value)
    assert "'seedz'" in message and f"{path}:3" in message and "seeds" in message  # known keys are listed


def test_unknown_env_is_named_with_the_registered_ones(tmp_path):
    path = _write(tmp_path, "envs: [maze, mazee]\n")
    with pytest.raises(ValueError, match=r"unknown env 'mazee'.*registered: .*maze"):
        EvalConfig.from_yaml(path)


@pytest.mark.parametrize("shape", ["2x", "0x2", "2*2", "two", "2x2x2"])
def test_bad_beam_shape_is_refused(tmp_path, shape):
    path = _write(tmp_path, f"methods:\n  beam: ['{shape}']\n")
    with pytest.raises(ValueError, match="WxK"):
        EvalConfig.from_yaml(path)


@pytest.mark.parametrize("n", ["0", "-1", "four", "true"])
def test_bad_best_of_n_is_refused(tmp_path, n):
    path = _write(tmp_path, f"methods:\n  best_of_n: [{n}]\n")
    with pytest.raises(ValueError, match="best_of_n N"):
        EvalConfig.from_yaml(path)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown method 'mcts'"):
        parse_methods(["greedy", "mcts=4"])


def test_method_forms_agree():
    expected = (Method("greedy"), Method("best_of_n", n=1), Method("best_of_n", n=4),
                Method("beam", width=2, expansions=2), Method("beam", width=4, expansions=3))
    assert parse_methods({"greedy": True, "best_of_n": [1, 4], "beam": ["2x2", "4x3"]}) == expected
    assert parse_methods(["greedy", "best_of_n=1,4", "beam=2x2,4x3"]) == expected
    assert parse_methods(["greedy", {"bon": [1, 4]}, {"beam": "2x2, 4x3"}, "greedy"]) == expected  # dupes dropped
    assert [m.label for m in expected] == ["greedy", "best_of_n N=1", "best_of_n N=4", "beam 2x2", "beam 4x3"]


def test_seeds_count_list_and_offset():
    assert EvalConfig(seeds=3).task_seeds == (0, 1, 2)
    assert EvalConfig(seeds=3, seed_offset=10).task_seeds == (10, 11, 12)
    assert EvalConfig(seeds=(4, 0, 9)).task_seeds == (4, 0, 9)
    with pytest.raises(ValueError, match="twice"):
        EvalConfig(seeds=(1, 1))
    with pytest.raises(ValueError, match="non-negative"):
        EvalConfig(seeds=(1, -2))


@pytest.mark.parametrize("field, value, match", [
    ("policy", "gpt5", "policy must be"), ("rm", "best", "rm must be"), ("rm", "random:x", "integer seed"),
    ("rm", "implicit:only_one", "two model paths"), ("noise", 1.5, r"noise must be in \[0, 1\]"),
    ("temperature", -1.0, "temperature"), ("max_turns", 0, "max_turns"), ("workers", 0, "workers"),
    ("split", "dev", "split"),
])
def test_bad_values_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        EvalConfig(**{field: value})


def test_noise_only_with_the_expert():
    with pytest.raises(ValueError, match="noise applies to policy 'expert' only"):
        EvalConfig(policy="random", noise=0.2)


def test_overrides_replace_file_values(tmp_path):
    path = _write(tmp_path, "envs: [maze]\nseeds: 20\nmethods: {greedy: true}\n")
    cfg = EvalConfig.from_yaml(path, {"seeds": [3, 5], "methods": ["beam=2x2"], "workers": None})
    assert cfg.envs == ("maze",) and cfg.task_seeds == (3, 5)
    assert cfg.methods == (Method("beam", width=2, expansions=2),)
    assert cfg.workers == 1  # None leaves the default
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg  # to_dict round-trips
    assert cfg.replace(seeds=2, temperature=None).task_seeds == (0, 1) and cfg.replace().temperature == cfg.temperature


@pytest.mark.parametrize("name", ["eval_scripted.yaml", "eval_bundled.yaml"])
def test_shipped_eval_configs_parse(name):
    cfg = EvalConfig.from_yaml(CONFIGS / name)
    assert cfg.rm == "oracle" and cfg.methods[0] == Method("greedy")


def test_bundled_config_is_the_measurement_the_issue_asks_for():
    cfg = EvalConfig.from_yaml(CONFIGS / "eval_bundled.yaml")
    assert cfg.policy == "bundled" and set(cfg.envs) == {"maze", "babyai", "pddl"} and len(cfg.task_seeds) == 20
    assert [m.label for m in cfg.methods] == ["greedy", "best_of_n N=1", "best_of_n N=2", "best_of_n N=4",
                                              "best_of_n N=8", "beam 2x2", "beam 4x4"]


def test_cli_reports_config_errors_before_running(tmp_path, capsys):
    path = _write(tmp_path, "envs: [maze]\nbogus: 1\n")
    assert main(["eval", "--config", str(path)]) == 2
    assert f"{path}:2" in capsys.readouterr().err
    assert main(["eval", "--config", str(CONFIGS / "eval_scripted.yaml"), "--methods", "beam=3"]) == 2
    assert "WxK" in capsys.readouterr().err
    out = tmp_path / "never.jsonl"
    assert main(["eval", "--policy", "expert", "--rm", str(tmp_path / "no_rm"), "--methods", "best_of_n=2",
                 "--out", str(out), "--no-progress"]) == 2
    assert "no_rm" in capsys.readouterr().err and not out.exists()  # a missing RM directory fails before any episode


def test_cli_dry_run_lists_every_episode_key(capsys):
    code = main(["eval", "--config", str(CONFIGS / "eval_scripted.yaml"), "--envs", "maze", "--seeds", "0,7",
                 "--methods", "greedy", "best_of_n=2", "--dry-run"])
    assert code == 0
    keys = capsys.readouterr().out.split()
    assert len(keys) == 4 and len(set(keys)) == 4
    assert keys[0].startswith("maze|test|0|greedy|") and keys[-1].startswith("maze|test|7|best_of_n=2|T=1|")


def test_eval_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    for flag in ("--config", "--envs", "--seeds", "--methods", "--policy", "--rm", "--out", "--workers",
                 "--max-turns", "--temperature", "--noise"):
        assert flag in out
    assert "resum" in out


def test_an_explicit_rm_may_be_a_training_run_directory(tmp_path):
    """`rm: explicit:RUN` names an `agentrm train` run (scored at its latest checkpoint, as `agentrm score`
    does): the path check accepts it, and still refuses a folder that is neither a run nor an RM."""
    import json

    from agentrm_jax.evaluate.config import EvalConfig
    from agentrm_jax.evaluate.runner import check_paths
    from agentrm_jax.runs import TRAIN_CONFIG_FILE

    run = tmp_path / "run"
    run.mkdir()
    (run / TRAIN_CONFIG_FILE).write_text(json.dumps({"kind": "explicit"}))
    cfg = EvalConfig.from_dict({"policy": "expert", "rm": f"explicit:{run}", "envs": ["maze"], "seeds": 1,
                                "methods": ["best_of_n=2"]}, source="test")
    check_paths(cfg)  # no error
    other = tmp_path / "other"
    other.mkdir()
    bad = EvalConfig.from_dict({"policy": "expert", "rm": f"explicit:{other}", "envs": ["maze"], "seeds": 1,
                                "methods": ["best_of_n=2"]}, source="test")
    with pytest.raises(FileNotFoundError, match="not an RM directory"):
        check_paths(bad)

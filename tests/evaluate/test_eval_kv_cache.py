"""`kv_cache_mb`: the user's switch for the in-process policy's prefix KV cache, from an eval config to its
rows (a tiny random model saved as an HF directory with the bundled tokenizer, played by `run_eval`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from trainer_helpers import save_tiny_model  # noqa: E402

from agentrm_jax.evaluate import EvalConfig, parse_methods, read_rows, run_eval  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, bundled_tokenizer):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", bundled_tokenizer)


def _rows(model_dir, out, kv_cache_mb):
    cfg = EvalConfig(policy=str(model_dir), rm="oracle", envs=("maze",), seeds=2, methods=parse_methods(["greedy"]),
                     max_turns=3, max_new_tokens=8, lockstep=2, kv_cache_mb=kv_cache_mb, output=str(out))
    run_eval(cfg, progress=False)
    return {r["key"]: r for r in read_rows(out)}


def test_a_cached_eval_reports_hits_and_plays_the_same_episodes(tiny_model_dir, tmp_path):
    cached = _rows(tiny_model_dir, tmp_path / "cached.jsonl", kv_cache_mb=16)
    plain = _rows(tiny_model_dir, tmp_path / "plain.jsonl", kv_cache_mb=0)
    assert cached.keys() == plain.keys() and len(cached) == 2  # the switch is not part of an episode's key
    for key in cached:
        assert cached[key]["trajectory"] == plain[key]["trajectory"], key  # exact: same actions both ways
        c, p = cached[key]["costs"], plain[key]["costs"]
        assert len(cached[key]["trajectory"]["steps"]) >= 2, key  # a later turn can reuse an earlier one
        assert c["cache_hit_tokens"] > 0 and p["cache_hit_tokens"] == 0, key
        assert c["prompt_tokens"] == p["prompt_tokens"], key
        assert c["prefilled_tokens"] < p["prefilled_tokens"], key


@pytest.mark.parametrize("bad", [-1, "lots", float("nan"), True])
def test_a_bad_kv_cache_mb_is_one_line_naming_the_key(bad):
    with pytest.raises(ValueError, match=r"^config: kv_cache_mb must be a number of MB >= 0 \(0 turns"):
        EvalConfig.from_dict({"kv_cache_mb": bad}, source="config")


def test_make_policy_turns_the_cache_on_with_its_budget(tiny_model_dir):
    from agentrm_jax.agents.factory import make_policy

    assert make_policy(str(tiny_model_dir), kv_cache_mb=4).sampler.cache.budget_bytes == 4 * 2**20
    assert make_policy(str(tiny_model_dir)).sampler.cache is None  # off unless asked for
    with pytest.raises(ValueError, match="kv_cache_mb must be a number of MB >= 0"):
        make_policy(str(tiny_model_dir), kv_cache_mb=-2)


def test_the_flags_reach_the_configs_and_the_policy(monkeypatch, capsys):
    from agentrm_jax.agents import factory
    from agentrm_jax.agents.policies import ScriptedPolicy
    from agentrm_jax.cli import build_parser, main
    from agentrm_jax.evaluate.commands import _config_from_args
    from agentrm_jax.explore.commands import _config as explore_config

    parser = build_parser()
    assert _config_from_args(parser.parse_args(["eval", "--kv-cache-mb", "256"])).kv_cache_mb == 256.0
    explore = explore_config(parser.parse_args(["explore", "--env", "maze", "--seeds", "0", "--kv-cache-mb", "64"]))
    assert explore.kv_cache_mb == 64.0
    # the cache is exact, so it does not decide the trees: a resumed run with another budget continues them
    assert explore.fingerprint() == explore.replace(kv_cache_mb=0.0).fingerprint()
    assert main(["explore", "--env", "maze", "--seeds", "0", "--kv-cache-mb", "-1"]) != 0
    assert "--kv-cache-mb: kv_cache_mb must be a number of MB >= 0" in capsys.readouterr().err

    seen = {}

    def fake_make_policy(spec, env=None, **kwargs):
        seen.update(kwargs)
        return ScriptedPolicy.expert(env)

    monkeypatch.setattr(factory, "make_policy", fake_make_policy)
    assert main(["play", "--env", "maze", "--policy", "expert", "--kv-cache-mb", "32", "--max-turns", "1"]) == 0
    assert seen["kv_cache_mb"] == 32.0


def test_concurrency_reaches_a_served_policy_from_flags_and_configs(capsys):
    """`concurrency` (a served policy's requests in flight) goes from eval / explore flags and configs
    to the OpenAIPolicy; it decides no tree; a bad value is one line naming the key."""
    from agentrm_jax.agents.factory import make_policy
    from agentrm_jax.cli import build_parser, main
    from agentrm_jax.evaluate.commands import _config_from_args
    from agentrm_jax.evaluate.runner import EpisodeRunner
    from agentrm_jax.explore.commands import _config as explore_config

    parser = build_parser()
    url = "http://127.0.0.1:9/v1#served"  # a named model: no request is made
    cfg = _config_from_args(parser.parse_args(["eval", "--policy", url, "--concurrency", "4"]))
    assert cfg.concurrency == 4 and EvalConfig().concurrency == 1
    assert EpisodeRunner(cfg).policy_for("maze", 0).concurrency == 4
    assert make_policy(url).concurrency == 1
    explore = explore_config(parser.parse_args(["explore", "--env", "maze", "--seeds", "0", "--concurrency", "3"]))
    assert explore.concurrency == 3 and explore.fingerprint() == explore.replace(concurrency=1).fingerprint()
    with pytest.raises(ValueError, match=r"^config: concurrency must be an integer >= 1"):
        EvalConfig.from_dict({"concurrency": 0}, source="config")
    assert main(["explore", "--env", "maze", "--seeds", "0", "--concurrency", "0"]) != 0
    assert "concurrency must be an integer >= 1" in capsys.readouterr().err


def test_drop_tokens_reaches_the_policy_and_labels_the_rows_only_when_set(tiny_model_dir, capsys):
    """`drop_tokens` (how an overlong context is cut) goes from eval / explore / play flags and configs to
    the JaxPolicy; it changes what the model sees, so a set value is part of the policy label and of the
    tree fingerprint, while the default leaves both as they were before the knob existed."""
    from agentrm_jax.agents.factory import make_policy
    from agentrm_jax.cli import build_parser, main
    from agentrm_jax.evaluate.commands import _config_from_args
    from agentrm_jax.evaluate.runner import EpisodeRunner
    from agentrm_jax.explore.commands import _config as explore_config

    model = str(tiny_model_dir)
    parser = build_parser()
    cfg = _config_from_args(parser.parse_args(["eval", "--policy", model, "--drop-tokens", "40"]))
    assert cfg.drop_tokens == 40 and cfg.policy_label == f"{model}(drop_tokens=40)"
    assert EvalConfig(policy=model).policy_label == model
    assert cfg.replace(max_new_tokens=8).policy_label == f"{model}(max_new_tokens=8,drop_tokens=40)"
    assert EpisodeRunner(cfg).policy_for("maze", 0).drop_tokens == 40
    default = make_policy(model)
    assert default.drop_tokens == default.max_positions // 4

    explore = explore_config(parser.parse_args(["explore", "--env", "maze", "--seeds", "0", "--policy", "bundled"]))
    assert "drop_tokens" not in explore.tree_fields()
    assert explore.replace(drop_tokens=40).fingerprint() != explore.fingerprint()

    with pytest.raises(ValueError, match=r"^config: drop_tokens must be a number of tokens >= 1"):
        EvalConfig.from_dict({"policy": model, "drop_tokens": 0}, source="config")
    with pytest.raises(ValueError, match="drop_tokens applies to in-process model policies only"):
        EvalConfig.from_dict({"policy": "expert", "drop_tokens": 40}, source="config")
    assert main(["play", "--env", "maze", "--policy", "expert", "--drop-tokens", "0"]) != 0
    assert "--drop-tokens must be a number of tokens >= 1" in capsys.readouterr().err
    assert main(["explore", "--env", "maze", "--seeds", "0", "--drop-tokens", "-3"]) != 0
    assert "--drop-tokens: drop_tokens must be a number of tokens >= 1" in capsys.readouterr().err
    # a knob the policy would ignore is refused, not silently kept in a label or a fingerprint
    assert main(["play", "--env", "maze", "--policy", "expert", "--drop-tokens", "40"]) != 0
    assert "--drop-tokens applies to in-process model policies only" in capsys.readouterr().err
    assert main(["explore", "--env", "maze", "--seeds", "0", "--policy", "expert", "--drop-tokens", "40"]) != 0
    assert "drop_tokens applies to in-process model policies only" in capsys.readouterr().err

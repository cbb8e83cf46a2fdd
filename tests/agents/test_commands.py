"""`agentrm serve` / `agentrm play` registered on a fresh argparse parser."""

from __future__ import annotations

import argparse
import threading

import pytest

from agentrm_jax.agents import commands, factory
from agentrm_jax.agents.commands import register
from agentrm_jax.agents.factory import make_env, make_policy
from agentrm_jax.agents.policies import OpenAIPolicy, RandomPolicy, ScriptedPolicy


def _parser():
    parser = argparse.ArgumentParser(prog="agentrm")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


def test_register_adds_serve_and_play_with_help(capsys):
    parser = _parser()
    args = parser.parse_args(["serve", "--port", "0"])
    assert args.command == "serve" and args.host == "127.0.0.1" and args.model is None and callable(args.func)
    args = parser.parse_args(["play", "--env", "maze", "--seed", "3", "--policy", "expert", "--max-turns", "4"])
    assert (args.env, args.seed, args.split, args.policy, args.max_turns) == ("maze", 3, "train", "expert", 4)
    assert args.func is not parser.parse_args(["serve"]).func
    for sub in ("serve", "play"):
        with pytest.raises(SystemExit):
            parser.parse_args([sub, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "OpenAI-compatible" in text or "OpenAI- compatible" in text
        assert "--model" in text and ("--port" in text if sub == "serve" else "--policy" in text)
    with pytest.raises(SystemExit):
        parser.parse_args(["play"])  # --env is required
    capsys.readouterr()




def _need_maze():
    import agentrm_jax.envs.maze  # noqa: F401  (registers maze)


def _summary(out: str) -> dict[str, str]:
    """The labelled rows after `=== summary ===` ("label   value" -> {label: value})."""
    tail = out.split("=== summary ===\n", 1)[1]
    rows = {}
    for line in tail.strip().splitlines():
        label, _, value = line.partition(" ")
        rows[label] = value.strip()
    return rows


@pytest.mark.parametrize("policy", ["expert", "random"])
def test_play_prints_the_episode(policy, capsys):
    _need_maze()
    assert _run(["play", "--env", "maze", "--seed", "3", "--policy", policy, "--max-turns", "25"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"agentrm play: maze (train split), task 3, policy {policy}\n")
    assert "Task: You are in a" in out and "--- turn 1 of 25 (" in out and "Action: move " in out
    rows = _summary(out)
    assert set(rows) == {"environment", "policy", "success", "progress", "turns", "actions", "time"}
    assert rows["environment"] == "maze, train task 3" and rows["policy"] == f"{policy}, greedy"
    if policy == "expert":
        assert rows["success"] == "yes" and rows["progress"].startswith("1.00 (fraction")
        assert "(the episode ended)" in rows["turns"]
    else:
        assert rows["success"] in ("yes", "no") and rows["time"].endswith("s a turn)")


def test_play_summary_says_when_one_action_repeats(monkeypatch, capsys):
    _need_maze()
    env = make_env("maze", seed=3)
    wall = next(d for d in ("north", "south", "east", "west")
                if env.step(f"move {d}")[0].startswith("You bump") or env.reset(3) is None)
    monkeypatch.setattr(factory, "make_policy", lambda *a, **k: ScriptedPolicy([f"move {wall}"] * 10))
    assert _run(["play", "--env", "maze", "--seed", "3", "--policy", "random", "--max-turns", "3"]) == 0
    rows = _summary(capsys.readouterr().out)
    assert rows["actions"] == "1 distinct of 3, one action repeated every turn"
    assert rows["turns"] == "3 of at most 3" and rows["success"] == "no"


def test_play_writes_the_trajectory(tmp_path, capsys):
    _need_maze()
    from agentrm_jax.records import read_jsonl

    out = tmp_path / "t.jsonl"
    assert _run(["play", "--env", "maze", "--seed", "1", "--split", "test", "--policy", "expert",
                 "--output", str(out)]) == 0
    (traj,) = read_jsonl(out)
    assert traj.success and traj.id == "maze/test/1"
    capsys.readouterr()


def test_play_argument_errors():
    with pytest.raises(KeyError, match="unknown environment"):
        _run(["play", "--env", "no_such_env", "--policy", "random"])
    with pytest.raises(ValueError, match=r"unknown environment 'mazee' \(did you mean 'maze'\?\); registered: "):
        _run(["play", "--env", "mazee", "--policy", "random"])
    with pytest.raises(ValueError, match="max-turns"):
        _run(["play", "--env", "maze", "--policy", "random", "--max-turns", "0"])
    _need_maze()
    with pytest.raises(ValueError, match="--policy must be"):
        _run(["play", "--env", "maze", "--policy", "smart"])


def test_make_policy_kinds():
    _need_maze()
    env = make_env("maze", seed=2)
    assert isinstance(make_policy("expert", env), ScriptedPolicy)
    assert isinstance(make_policy("random", env), RandomPolicy)
    remote = make_policy("http://127.0.0.1:9/v1", env, model="m")  # no request made when the model is named
    assert isinstance(remote, OpenAIPolicy) and remote.model == "m"


def test_play_against_a_served_model(capsys):
    _need_maze()
    from agentrm_jax.agents.server import start_server, stop_server
    from agentrm_jax.models.config import ModelConfig
    from agentrm_jax.models.llama import init_model

    class Tok:  # the k-th generated token decodes to CHUNKS[k]
        CHUNKS = ["Thought:", " east", "\n", "Action:", " move east", "\n", "Observation:"] + [" x"] * 100
        eos_token_id, pad_token_id = None, 0

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [3 + (sum(map(ord, w)) % 90) for w in text.split()] or [3]}

        def decode(self, ids, skip_special_tokens=True):
            return "".join(self.CHUNKS[k] for k in range(len(ids)))

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
            return " ".join(m["content"] for m in messages)[-600:]

    model = init_model(ModelConfig.tiny(vocab_size=97, eos_token_ids=(), max_position_embeddings=1024), seed=0)
    server, thread = start_server(model, Tok(), "127.0.0.1", 0, model_name="served-tiny")
    try:
        assert _run(["play", "--env", "maze", "--seed", "0", "--policy", server.url, "--max-turns", "2",
                     "--max-new-tokens", "24", "-v"]) == 0
    finally:
        stop_server(server, thread)
    out = capsys.readouterr().out
    assert out.count("\nAction: move east\n") == 2 and "Thought: east" in out and "[raw]" in out
    assert _summary(out)["turns"] == "2 of at most 2"


def test_serve_starts_and_stops_cleanly(monkeypatch, capsys):
    import agentrm_jax.agents.server as server_mod
    import agentrm_jax.models as models

    calls = {}
    monkeypatch.setattr(models, "from_pretrained", lambda path, dtype="float32": ("MODEL", "TOK"))

    class FakeServer:
        url = "http://127.0.0.1:1234/v1"

    def fake_start(model, tokenizer, host, port, **kw):
        calls["start"] = (model, tokenizer, host, port, kw)
        thread = threading.Thread(target=lambda: None)
        thread.start()  # finishes at once: serve returns as after Ctrl-C
        return FakeServer(), thread

    monkeypatch.setattr(server_mod, "start_server", fake_start)
    monkeypatch.setattr(server_mod, "stop_server", lambda server, thread: calls.setdefault("stop", True))
    assert _run(["serve", "--model", "/tmp/m.gguf", "--port", "0", "--model-name", "mine"]) == 0
    assert calls["start"][:4] == ("MODEL", "TOK", "127.0.0.1", 0) and calls["start"][4]["model_name"] == "mine"
    assert calls["stop"] is True
    assert "serving mine" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--port"):
        _run(["serve", "--port", "70000"])


def test_commands_module_exports():
    assert set(commands.__all__) == {"register"}
    assert set(factory.__all__) == {"check_drop_tokens", "check_kv_cache_mb", "make_env", "make_policy"}


@pytest.mark.real_model
def test_play_with_the_bundled_model(bundled_ours, monkeypatch, capsys):
    _need_maze()
    import agentrm_jax.models as models

    monkeypatch.setattr(models, "from_pretrained", lambda path, dtype="float32": bundled_ours)
    assert _run(["play", "--env", "maze", "--seed", "2", "--policy", "bundled", "--max-turns", "2",
                 "--max-new-tokens", "32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("agentrm play: maze (train split), task 2, policy the bundled SmolLM2-135M-Instruct")
    assert "never fine-tuned" in out and "loading the model" in out and "compiling the sampler" in out
    assert "--- turn 2 of 2 (" in out and "Action:" in out
    rows = _summary(out)
    assert rows["turns"] == "2 of at most 2" and rows["time"].startswith("") and "model load" in rows["time"]

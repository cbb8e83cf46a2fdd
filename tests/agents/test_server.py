"""The OpenAI-compatible server: request validation, HTTP behaviour, and parity with the in-process policy."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from agentrm_jax.agents.policies import JaxPolicy, OpenAIPolicy
from agentrm_jax.agents.prompts import build_messages, parse_step
from agentrm_jax.agents.server import (MAX_BODY, RequestError, completion_chunks, parse_request, start_server,
                                      stop_server)
from agentrm_jax.records import Step, Trajectory

MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "go"}]


# ------------------------------------------------------------------------------------------ validation

def test_parse_request_defaults_and_values():
    args = parse_request({"messages": MESSAGES})
    assert args["n"] == 1 and args["temperature"] == 1.0 and args["top_p"] == 1.0 and args["stop"] == []
    args = parse_request({"messages": MESSAGES, "n": 3, "temperature": 0, "top_p": 0.9, "max_tokens": 7,
                          "stop": "\nObs", "seed": -1, "logprobs": None, "frequency_penalty": 0})
    assert (args["n"], args["temperature"], args["top_p"], args["max_tokens"]) == (3, 0.0, 0.9, 7)
    assert args["stop"] == ["\nObs"] and 0 <= args["seed"] < 2**31
    parts = parse_request({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                      {"type": "text", "text": "b"}]}]})
    assert parts["messages"] == [{"role": "user", "content": "ab"}]
    assert parse_request({"messages": MESSAGES, "max_completion_tokens": 5})["max_tokens"] == 5


@pytest.mark.parametrize("body, param", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": MESSAGES, "n": 0}, "n"),
    ({"messages": MESSAGES, "n": 1.5}, "n"),
    ({"messages": MESSAGES, "n": True}, "n"),
    ({"messages": MESSAGES, "temperature": -1}, "temperature"),
    ({"messages": MESSAGES, "temperature": "hot"}, "temperature"),
    ({"messages": MESSAGES, "top_p": 0}, "top_p"),
    ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ({"messages": MESSAGES, "stop": [1]}, "stop"),
    ({"messages": MESSAGES, "seed": "x"}, "seed"),
    ({"messages": [{"role": "user", "content": "a\ud800b"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]}, "messages[0].content"),
    ({"messages": MESSAGES, "stop": ["ok", "\ud800"]}, "stop"),
    ({"messages": MESSAGES, "stream": "yes"}, "stream"),
    ({"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": 1}}, "stream_options"),
])
def test_parse_request_names_the_bad_field(body, param):
    with pytest.raises(RequestError) as err:
        parse_request(body)
    assert err.value.param == param and err.value.status == 400
    assert param.split("[")[0] in str(err.value)


# ------------------------------------------------------------------------------------- HTTP (tiny model)

class WordTokenizer:
    """A stand-in tokenizer: the k-th generated token decodes to CHUNKS[k] whatever its id."""

    CHUNKS = ["Thought:", " go", "\n", "Action:", " move east", "\n", "Observation:", " z"] + [" more"] * 300
    eos_token_id = None
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + (sum(map(ord, w)) % 90) for w in text.split()] or [3]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.CHUNKS[k] for k in range(len(ids)))

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        if any(m["role"] == "assistant" and m["content"] == "REJECT" for m in messages):
            raise ValueError("roles must alternate")
        return " ".join(f"{m['role']} {m['content']}" for m in messages) + " assistant"


@pytest.fixture(scope="module")
def tiny_server():
    from agentrm_jax.models.config import ModelConfig
    from agentrm_jax.models.llama import init_model

    model = init_model(ModelConfig.tiny(vocab_size=97, eos_token_ids=(), max_position_embeddings=256), seed=0)
    server, thread = start_server(model, WordTokenizer(), "127.0.0.1", 0, model_name="tiny")
    yield server, model
    stop_server(server, thread)
    assert not thread.is_alive()


def _call(server, method, path, body=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_chat_completion_response_shape(tiny_server):
    server, _ = tiny_server
    status, out = _call(server, "POST", "/v1/chat/completions",
                        {"model": "whatever", "messages": MESSAGES, "n": 2, "temperature": 0.8, "max_tokens": 40,
                         "stop": ["\nObservation"], "seed": 3})
    assert status == 200 and out["object"] == "chat.completion" and out["model"] == "whatever"
    assert [c["index"] for c in out["choices"]] == [0, 1]
    for c in out["choices"]:
        assert c["message"] == {"role": "assistant", "content": "Thought: go\nAction: move east"}
        assert c["finish_reason"] == "stop"
    usage = out["usage"]
    assert usage["prompt_tokens"] == len(server.sampler.encode(MESSAGES))
    assert usage["completion_tokens"] == 2 * 7  # the kept tokens: through the one that completes the stop string
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    status, out = _call(server, "POST", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 5})
    assert status == 200 and out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 5


def test_models_and_routes(tiny_server):
    server, _ = tiny_server
    status, out = _call(server, "GET", "/v1/models")
    assert status == 200 and out["data"][0]["id"] == "tiny" and out["object"] == "list"
    assert _call(server, "GET", "/nope")[0] == 404
    assert _call(server, "POST", "/v1/completions", {"prompt": "x"})[0] == 404
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.mark.parametrize("body, raw, param, words", [
    ({"messages": MESSAGES, "n": -1}, None, "n", "'n'"),
    ({"messages": MESSAGES, "max_tokens": 10_000}, None, "max_tokens", "positions"),
    ({"messages": [{"role": "assistant", "content": "REJECT"}]}, None, "messages", "chat template"),
    (None, b"{not json", None, "not valid JSON"),
    (None, b"[1, 2]", None, "JSON object"),
])
def test_bad_requests_get_json_400s(tiny_server, body, raw, param, words):
    server, _ = tiny_server
    status, out = _call(server, "POST", "/v1/chat/completions", body, raw)
    assert status == 400 and out["error"]["type"] == "invalid_request_error"
    assert out["error"]["param"] == param and words in out["error"]["message"]
    assert _call(server, "GET", "/v1/models")[0] == 200  # still serving


def test_concurrent_requests_are_serialized_and_all_answered(tiny_server):
    server, _ = tiny_server
    results = []

    def worker(i):
        results.append(_call(server, "POST", "/v1/chat/completions",
                             {"messages": MESSAGES, "max_tokens": 12, "temperature": 0, "seed": i}))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4 and all(status == 200 for status, _ in results)
    assert len({out["choices"][0]["message"]["content"] for _, out in results}) == 1


def test_openai_policy_against_the_tiny_server(tiny_server):
    server, model = tiny_server
    remote = OpenAIPolicy(server.url, "tiny", max_tokens=40)
    local = JaxPolicy(model, WordTokenizer(), max_new_tokens=40)
    contexts = [MESSAGES, MESSAGES + [{"role": "assistant", "content": "Action: x"}, {"role": "user", "content": "o"}]]
    assert remote.sample(contexts, n=2) == local.sample(contexts, n=2)
    assert parse_step(remote.sample(contexts[:1])[0][0]) == ("go", "move east")


# ------------------------------------------------------------------------ hostile bodies, stalls, limits

def _raw(server, data: bytes, *, wait: float = 10.0) -> tuple[bytes, float]:
    """Send raw bytes, then read until the server closes (at most `wait` s): (everything read, seconds taken)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=wait) as sock:
        sock.sendall(data)
        got = b""
        try:
            while piece := sock.recv(65536):
                got += piece
        except TimeoutError:
            pass
    return got, time.monotonic() - t0


@pytest.mark.parametrize("raw", [b"[" * 200_000, b'{"messages": ' + b"[" * 200_000, b'{"a": ' * 100_000],
                         ids=["arrays", "in-messages", "objects"])
def test_deeply_nested_json_gets_a_400(tiny_server, raw):
    server, _ = tiny_server
    status, out = _call(server, "POST", "/v1/chat/completions", raw=raw)
    assert status == 400 and "nested too deeply" in out["error"]["message"]
    assert _call(server, "GET", "/v1/models")[0] == 200


def test_lone_surrogate_gets_a_400_naming_the_field(tiny_server):
    server, _ = tiny_server
    raw = b'{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "go \\ud800 east"}]}'
    status, out = _call(server, "POST", "/v1/chat/completions", raw=raw)
    assert status == 400 and out["error"]["param"] == "messages[1].content"
    assert "messages[1].content" in out["error"]["message"] and "surrogate" in out["error"]["message"]


def test_body_limits_get_413_and_411(tiny_server):
    server, _ = tiny_server
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    got, _ = _raw(server, head + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert got.startswith(b"HTTP/1.1 413") and b"at most" in got
    got, _ = _raw(server, head + b"\r\n")
    assert got.startswith(b"HTTP/1.1 411") and b"Content-Length" in got


@pytest.fixture(scope="module")
def impatient_server(tiny_server):
    """The tiny model again, with a 0.5 s read timeout."""
    server, thread = start_server(tiny_server[1], WordTokenizer(), "127.0.0.1", 0, read_timeout=0.5)
    yield server
    stop_server(server, thread)


def test_a_stalled_client_is_answered_and_dropped_within_the_read_timeout(impatient_server):
    server = impatient_server
    stalls = {
        "body": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
        "headers": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
        "idle": b"",
    }
    results = {}

    def stall(name):
        results[name] = _raw(server, stalls[name], wait=10)

    threads = [threading.Thread(target=stall, args=(name,)) for name in stalls]
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert _call(server, "GET", "/v1/models")[0] == 200  # served while three clients stall
    for t in threads:
        t.join(15)
    assert set(results) == set(stalls)
    got, took = results["body"]
    assert got.startswith(b"HTTP/1.1 408") and b"0.5 s" in got and took < 5  # answered, then closed
    for name in ("headers", "idle"):
        got, took = results[name]
        assert got == b"" and took < 5  # closed without an answer: the thread is free again
    assert _call(server, "GET", "/v1/models")[0] == 200


# ---------------------------------------------------------------------------------- API key, streaming

def _openai_client(server, api_key="unused"):
    import httpx
    import openai

    return openai.OpenAI(base_url=server.url, api_key=api_key, max_retries=0, timeout=60,
                         http_client=httpx.Client(trust_env=False, timeout=60))


@pytest.fixture(scope="module")
def keyed_server(tiny_server):
    server, thread = start_server(tiny_server[1], WordTokenizer(), "127.0.0.1", 0, model_name="tiny",
                                  api_key="sk-test-key-123")
    yield server
    stop_server(server, thread)


def test_api_key_is_checked_on_every_request(keyed_server):
    import openai

    server = keyed_server
    good = _openai_client(server, "sk-test-key-123")
    assert [m.id for m in good.models.list().data] == ["tiny"]
    out = good.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5, temperature=0)
    assert out.choices[0].finish_reason == "length"
    for key in ("sk-test-key-12", "sk-test-key-1234", "wrong"):
        bad = _openai_client(server, key)
        with pytest.raises(openai.AuthenticationError) as err:
            bad.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5)
        assert err.value.status_code == 401 and "sk-test-key-123" not in str(err.value)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    for path in ("/v1/models", "/health"):  # no Authorization header at all
        status, out = _call(server, "GET", path)
        assert status == 401 and out["error"]["code"] == "invalid_api_key" and "API key" in out["error"]["message"]
    # the connection survives a 401 (its body was read), so a keep-alive client can go on
    assert [m.id for m in good.models.list().data] == ["tiny"]


def test_authorized_compares_the_bearer_token():
    from agentrm_jax.agents.server import ChatServer

    fake = ChatServer.__new__(ChatServer)  # only the key matters here; no socket, no model
    fake._key = b"k3y"
    assert fake.authorized("Bearer k3y") and fake.authorized("bearer  k3y ")
    for header in (None, "", "k3y", "Basic k3y", "Bearer k3", "Bearer k3yy", "Bearer \xe9"):
        assert not fake.authorized(header)
    fake._key = None
    assert fake.authorized(None)


def test_completion_chunks_shape():
    response = {"id": "c1", "object": "chat.completion", "created": 5, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"},
                            {"index": 1, "message": {"role": "assistant", "content": ""},
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    chunks = completion_chunks(response)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "c1" and "usage" not in c for c in chunks)
    deltas = [(c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]
    assert deltas == [(0, {"role": "assistant", "content": ""}, None), (0, {"content": "hi"}, None), (0, {}, "stop"),
                      (1, {"role": "assistant", "content": ""}, None), (1, {}, "length")]
    with_usage = completion_chunks(response, include_usage=True)
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"] == response["usage"]
    assert all(c["usage"] is None for c in with_usage[:-1])


def test_streaming_with_the_openai_client_equals_the_plain_answer(tiny_server):
    server, _ = tiny_server
    client = _openai_client(server)
    request = {"model": "tiny", "messages": MESSAGES, "n": 2, "temperature": 0, "max_tokens": 40,
               "stop": ["\nObservation"], "seed": 7}
    plain = client.chat.completions.create(**request)
    texts, finish, roles = {}, {}, {}
    usage = None
    for chunk in client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}):
        assert chunk.object == "chat.completion.chunk" and chunk.id.startswith("chatcmpl-")
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            roles.setdefault(c.index, c.delta.role)
            if c.finish_reason is not None:
                finish[c.index] = c.finish_reason
    assert texts == {c.index: c.message.content for c in plain.choices}
    assert texts[0] == "Thought: go\nAction: move east"
    assert finish == {c.index: c.finish_reason for c in plain.choices} == {0: "stop", 1: "stop"}
    assert roles == {0: "assistant", 1: "assistant"}
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_stream_is_server_sent_events_ending_with_done(tiny_server):
    server, _ = tiny_server
    req = urllib.request.Request(f"{server.url}/chat/completions", method="POST",
                                 data=json.dumps({"messages": MESSAGES, "max_tokens": 5, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        events = resp.read().decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # bad requests are still plain JSON errors
    assert _call(server, "POST", "/v1/chat/completions", {"messages": [], "stream": True})[0] == 400


def test_serve_reads_the_api_key_option_or_environment(monkeypatch):
    import agentrm_jax.agents.server as server_module
    import agentrm_jax.models as models
    from agentrm_jax.cli import build_parser

    seen = []

    class FakeServer:
        url = "http://127.0.0.1:1/v1"

    def fake_start(model, tokenizer, host, port, **kwargs):
        seen.append(kwargs["api_key"])
        return FakeServer(), threading.Thread(target=lambda: None)  # never started: serve returns at once

    monkeypatch.setattr(server_module, "start_server", fake_start)
    monkeypatch.setattr(server_module, "stop_server", lambda server, thread: None)
    monkeypatch.setattr(models, "from_pretrained", lambda path, dtype: (None, None))
    parser = build_parser()
    monkeypatch.delenv("AGENTRM_API_KEY", raising=False)
    for argv in (["serve"], ["serve", "--api-key", "opt-key"]):
        args = parser.parse_args(argv + ["--model", "m.gguf"])
        assert args.func(args) == 0
    monkeypatch.setenv("AGENTRM_API_KEY", "env-key")
    args = parser.parse_args(["serve", "--model", "m.gguf"])
    assert args.func(args) == 0
    assert seen == [None, "opt-key", "env-key"]


# -------------------------------------------------------------------------------------- real model

@pytest.mark.real_model
def test_served_bundled_model_matches_in_process_greedy(bundled_ours):
    model, tokenizer = bundled_ours
    traj = Trajectory(task="maze", instruction="You are in a 3x3 maze. The goal is at (1, 0). You are at (0, 0). "
                                               "North: wall. East: the goal. Actions: move north, move east.")
    contexts = [build_messages(traj, one_shot=False),
                build_messages(traj.append(Step("East is the goal.", "move north", "You bump into a wall.")),
                               one_shot=False)]
    server, thread = start_server(model, tokenizer, "127.0.0.1", 0)
    try:
        local = JaxPolicy(model, tokenizer, max_new_tokens=32)
        remote = OpenAIPolicy(server.url, "bundled", max_tokens=32, timeout=120)
        want = [local.sample([c])[0] for c in contexts]  # one context per call: the server's batch shape
        got = remote.sample(contexts)
        assert got == want
        assert all(isinstance(t, str) for row in got for t in row)
        assert remote.stats.prompt_tokens == sum(len(local.sampler.encode(c)) for c in contexts)
    finally:
        stop_server(server, thread)


# ------------------------------------------------------------------------------ serving an sft run

def _sft_run_dir(root, tokenizer):
    """An `agentrm sft` run directory as the trainer leaves it: train_config.json and policy/ holding LoRA
    adapters (non-zero, so they change the logits) over a tiny HF base directory."""
    import sys
    from pathlib import Path

    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from trainer_helpers import save_tiny_model, tiny_model

    from agentrm_jax.models.adapters import save_adapters
    from agentrm_jax.models.lora import add_lora

    base = save_tiny_model(root / "base", tokenizer)
    model = add_lora(tiny_model(), rank=2, alpha=4.0)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        for block in (layer.attn, layer.mlp):
            for name in vars(block):
                if name.endswith("_lora_b"):
                    var = getattr(block, name)
                    var.set_value(jnp.asarray(0.5 * rng.standard_normal(var.shape), var[...].dtype))
    run = root / "run"
    save_adapters(model, run / "policy", base=str(base), rank=2, alpha=4.0)
    (run / "train_config.json").write_text(json.dumps({"kind": "sft"}))
    return run, base


def test_serve_accepts_an_sft_run_directory(tmp_path, monkeypatch, bundled_tokenizer):
    """`agentrm serve --model RUN_DIR` serves the run's policy (base + adapters), the very model
    `--policy RUN_DIR` plays in-process, and not the bare base."""
    import agentrm_jax.serve_loop as serve_loop
    from agentrm_jax.agents.factory import make_policy
    from agentrm_jax.cli import build_parser
    from agentrm_jax.models.lora import has_lora

    run, base = _sft_run_dir(tmp_path, bundled_tokenizer)
    contexts = [MESSAGES, MESSAGES + [{"role": "assistant", "content": "Action: x"}, {"role": "user", "content": "o"}]]
    served = {}

    def one_request(thread, stop):  # instead of waiting for Ctrl-C: ask the running server, then stop it
        try:
            remote = OpenAIPolicy(served["url"], "run", max_tokens=8, timeout=120)
            served["texts"] = remote.sample(contexts)
        finally:
            stop()

    import agentrm_jax.agents.server as server_module

    real_start = server_module.start_server

    def start(model, tokenizer, host, port, **kwargs):
        served["lora"] = has_lora(model)
        server, thread = real_start(model, tokenizer, host, port, **kwargs)
        served["url"] = server.url
        return server, thread

    monkeypatch.setattr(server_module, "start_server", start)
    monkeypatch.setattr(serve_loop, "serve_until_interrupted", one_request)
    args = build_parser().parse_args(["serve", "--model", str(run), "--port", "0"])
    assert args.func(args) == 0
    assert served["lora"]
    local = make_policy(str(run), max_new_tokens=8)
    assert served["texts"] == [local.sample([c])[0] for c in contexts]  # one context per call: the server's shape
    bare = make_policy(str(base), max_new_tokens=8)
    assert served["texts"] != [bare.sample([c])[0] for c in contexts]

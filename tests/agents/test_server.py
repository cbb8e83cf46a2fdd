"""The OpenAI-compatible server: request validation, HTTP behaviour, and parity with the in-process policy."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from agentrm_jax.agents.policies import JaxPolicy, OpenAIPolicy
from agentrm_jax.agents.prompts import build_messages, parse_step
from agentrm_jax.agents.server import RequestError, parse_request, start_server, stop_server
from agentrm_jax.agents.trajectory import Step, Trajectory

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
    assert usage["completion_tokens"] == 2 * 16  # stopped at the first check after the stop string
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

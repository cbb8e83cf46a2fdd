"""Policies: scripted/random determinism, JaxPolicy's stop-after-the-action, OpenAIPolicy's HTTP behaviour."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentrm_jax.agents.policies import (JaxPolicy, OpenAIPolicy, PolicySampler, PolicyServerError, RandomPolicy,
                                         ScriptedPolicy, turn_of)
from agentrm_jax.agents.prompts import parse_step
from agentrm_jax.records import format_step

CTX0 = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
CTX1 = CTX0 + [{"role": "assistant", "content": "Action: a"}, {"role": "user", "content": "obs"}]
CTX2 = CTX1 + [{"role": "assistant", "content": "Action: b"}, {"role": "user", "content": "obs2"}]
ACTIONS = ["north", "south", "east", "west"]


# ------------------------------------------------------------------------------------- scripted/random

def test_turn_of_counts_assistant_turns():
    assert (turn_of(CTX0), turn_of(CTX1), turn_of(CTX2)) == (0, 1, 2)


def test_scripted_list_plays_by_turn():
    policy = ScriptedPolicy(["a1", "a2"], thought="plan", default="done")
    assert isinstance(policy, PolicySampler)
    out = policy.sample([CTX0, CTX1, CTX2], n=2)
    assert out == [[format_step("plan", "a1")] * 2, [format_step("plan", "a2")] * 2, [format_step("plan", "done")] * 2]
    assert parse_step(out[0][0]) == ("plan", "a1")
    assert policy.stats.samples == 6


def test_scripted_callable_and_noise_are_deterministic():
    policy = ScriptedPolicy(lambda ctx: f"step{turn_of(ctx)}", noise=0.5, actions=ACTIONS, seed=7)
    a = policy.sample([CTX0, CTX1, CTX2] * 5, n=4, seed=3)
    b = ScriptedPolicy(lambda ctx: f"step{turn_of(ctx)}", noise=0.5, actions=ACTIONS, seed=7).sample(
        [CTX0, CTX1, CTX2] * 5, n=4, seed=3)
    assert a == b
    flat = [parse_step(t)[1] for row in a[:3] for t in row]
    assert any(x in ACTIONS for x in flat) and any(x.startswith("step") for x in flat)
    # equal contexts draw equal samples wherever they sit in the batch
    assert a[0] == a[3] == a[6]
    assert policy.sample([CTX0], n=4, seed=4) != a[0] or policy.sample([CTX0], n=4, seed=5) != a[0]
    noiseless = ScriptedPolicy(lambda ctx: "x", noise=0.0).sample([CTX0], n=3)
    assert noiseless == [["Action: x"] * 3]
    always = ScriptedPolicy(lambda ctx: "x", noise=1.0, actions=lambda ctx: ACTIONS).sample([CTX0], n=8)
    assert all(parse_step(t)[1] in ACTIONS for t in always[0])


def test_scripted_rejects_bad_noise():
    with pytest.raises(ValueError, match="noise"):
        ScriptedPolicy(["a"], noise=1.5, actions=ACTIONS)
    with pytest.raises(ValueError, match="actions"):
        ScriptedPolicy(["a"], noise=0.1)


def test_random_policy_is_uniformish_and_deterministic():
    policy = RandomPolicy(lambda ctx: ACTIONS, seed=1)
    a = policy.sample([CTX0, CTX1], n=200, seed=0)
    assert a == RandomPolicy(lambda ctx: ACTIONS, seed=1).sample([CTX0, CTX1], n=200, seed=0)
    assert a != RandomPolicy(lambda ctx: ACTIONS, seed=2).sample([CTX0, CTX1], n=200, seed=0)
    counts = {x: 0 for x in ACTIONS}
    for t in a[0]:
        counts[parse_step(t)[1]] += 1
    assert all(20 <= c <= 80 for c in counts.values()), counts
    assert RandomPolicy([]).sample([CTX0]) == [["Action: "]]
    assert RandomPolicy(["only"]).sample([CTX0], n=2) == [["Action: only"] * 2]


def test_policies_validate_arguments():
    for policy in (ScriptedPolicy(["a"]), RandomPolicy(ACTIONS)):
        with pytest.raises(ValueError, match="n must be"):
            policy.sample([CTX0], n=0)
        with pytest.raises(ValueError, match="list of chat message lists"):
            policy.sample(CTX0)
        assert policy.sample([]) == []


def test_expert_policy_on_maze_follows_the_plan():
    import agentrm_jax.envs.maze as maze
    env = maze.MazeEnv()
    env.reset(5)
    plan = env.expert_actions()
    for replan in (False, True):
        policy = ScriptedPolicy.expert(env, replan=replan)
        ctx = list(CTX0)
        for t, expected in enumerate(plan):
            text = policy.sample([ctx])[0][0]
            assert parse_step(text)[1] == expected, (replan, t)
            ctx = ctx + [{"role": "assistant", "content": text}, {"role": "user", "content": "y"}]
    noisy = ScriptedPolicy.expert(env, noise=1.0, seed=3).sample([CTX0], n=10)[0]
    assert {parse_step(t)[1] for t in noisy} <= set(env.available_actions())


def test_replanning_expert_recovers_after_a_wrong_step():
    """After a step off the plan, the replanning expert still reaches the goal; the by-turn one does not."""
    import agentrm_jax.envs.maze as maze
    from agentrm_jax.agents.loop import run_episode

    probe = maze.MazeEnv()
    probe.reset(5)
    plan = probe.expert_actions()
    opposite = {"north": "south", "south": "north", "east": "west", "west": "east"}
    detour = f"move {opposite[plan[0].split()[1]]}"  # undoes nothing useful: a wall bump or a step back

    def play(replan):
        expert = ScriptedPolicy.expert(probe, replan=replan)
        first = {"n": 0}

        class Detour:  # the first step goes the wrong way, then the expert takes over
            def sample(self, contexts, n=1, temperature=0.0, seed=0):
                if first["n"] == 0:
                    first["n"] = 1
                    return [[f"Action: {detour}"]]
                return expert.sample(contexts, n=n, temperature=temperature, seed=seed)

        env = maze.MazeEnv()
        return run_episode(env, Detour(), seed=5, max_turns=len(plan) + 4, env_name="maze")

    assert play(True).success
    assert not play(False).success
    with pytest.raises(ValueError, match="replan=False"):
        ScriptedPolicy.expert(RandomPolicy(ACTIONS), replan=True)


# ------------------------------------------------------------------------------------ JaxPolicy (tiny)

class ChunkTokenizer:
    """A stand-in tokenizer: whatever the ids, the k-th generated token decodes to CHUNKS[k].

    So a random tiny model "writes" a thought, an action line, then a made-up
    observation and a second step, which the policy must cut away.
    """

    CHUNKS = ["Thought:", " the goal", " is east", "\n", "Action:", " move", " east", "\n", "Observation:",
              " fake", "\n", "Thought:", " again", "\n", "Action:", " move west"] + [" more"] * 200
    eos_token_id = None
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + (sum(map(ord, w)) % 90) for w in text.split()] or [3]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.CHUNKS[k] for k in range(len(ids)))

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return " ".join(f"{m['role']} {m['content']}" for m in messages) + " assistant"


@pytest.fixture(scope="module")
def tiny_policy():
    from agentrm_jax.models.config import ModelConfig
    from agentrm_jax.models.llama import init_model

    model = init_model(ModelConfig.tiny(vocab_size=97, eos_token_ids=(), max_position_embeddings=256), seed=0)
    return JaxPolicy(model, ChunkTokenizer(), max_new_tokens=64)


def test_jax_policy_stops_after_the_action_line(tiny_policy):
    out = tiny_policy.sample([CTX0, CTX1], n=2, seed=1)
    assert out == [["Thought: the goal is east\nAction: move east"] * 2] * 2
    assert parse_step(out[0][0]) == ("the goal is east", "move east")
    stats = tiny_policy.stats
    assert stats.prefills == 2 and stats.samples == 4  # the n samples of a context share one prefill
    # decoding ended at the first stop check after the action line (one 16-token chunk), not at
    # max_new_tokens; the kept ids end at the newline that completes the action line (8 tokens)
    assert stats.generated_tokens == 4 * 8
    assert tiny_policy.sampler.stats.generated_tokens + tiny_policy.sampler.stats.discarded_tokens == 4 * 16


def test_jax_policy_drops_old_steps_of_an_overlong_context(tiny_policy):
    long_ctx = list(CTX0)
    for i in range(60):
        long_ctx += [{"role": "assistant", "content": f"Action: a{i} " + "w " * 5},
                     {"role": "user", "content": "obs " * 5}]
    out = tiny_policy.sample([long_ctx])
    assert parse_step(out[0][0])[1] == "move east"
    # the next turns extend the cut context (a prefix-cache hit) rather than cut it anew each turn
    assert tiny_policy.drop_tokens == 256 // 4
    ids = [tiny_policy._encode(long_ctx)]
    for i in range(3):
        long_ctx = long_ctx + [{"role": "assistant", "content": f"Action: b{i}"}, {"role": "user", "content": "obs"}]
        ids.append(tiny_policy._encode(long_ctx))
    assert all(len(ids[0]) < len(later) <= 256 - 64 and later[:len(ids[0])] == ids[0] for later in ids[1:])
    with pytest.raises(ValueError, match="drop_tokens"):
        JaxPolicy(tiny_policy.sampler.model, ChunkTokenizer(), drop_tokens=0)
    with pytest.raises(ValueError, match="task prompt alone"):
        tiny_policy.sample([[{"role": "user", "content": "w " * 400}]])


# ---------------------------------------------------------------------------------- OpenAIPolicy (HTTP)

class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def do_GET(self):  # noqa: N802
        self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    def do_POST(self):  # noqa: N802
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append((self.path, dict(self.headers), body))
            k = len(srv.requests)
            srv.in_flight += 1
            srv.most_in_flight = max(srv.most_in_flight, srv.in_flight)
        try:
            self._answer(srv, body, k)
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _answer(self, srv, body, k):
        mode = srv.mode
        if mode == "sleep":
            time.sleep(srv.sleep)
        if mode == "echo_key":
            self._json(401, {"error": f"bad key {self.headers.get('Authorization')}"})
            return
        if mode == "flaky" and k <= srv.failures:
            self._json(srv.fail_status, {"error": "try later"})
            return
        if mode == "status":
            self._json(srv.fail_status, {"error": {"message": "nope " + "x" * 2000}})
            return
        n = 1 if mode == "one_choice" else body.get("n", 1)
        choices = [{"index": i, "message": {"role": "assistant",
                                            "content": f"Thought: t{i}\nAction: act{body['seed']}_{i}\nObservation: z"},
                    "finish_reason": "stop"} for i in range(n)]
        usage = {"prompt_tokens": 5, "completion_tokens": 7 * n}
        if mode == "cached":  # as vLLM, llama.cpp and OpenAI report prompt-cache hits
            usage["prompt_tokens_details"] = {"cached_tokens": 3}
        self._json(200, {"choices": choices, "usage": usage})


@pytest.fixture()
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
    server.daemon_threads = True
    server.lock, server.requests, server.mode = threading.Lock(), [], "ok"
    server.sleep, server.failures, server.fail_status = 0.0, 0, 500
    server.in_flight = server.most_in_flight = 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _url(server, suffix="/v1"):
    return f"http://127.0.0.1:{server.server_address[1]}{suffix}"


def test_openai_policy_request_and_parsing(fake_server, monkeypatch):
    monkeypatch.setenv("MY_TEST_KEY", "sk-secret-123")
    policy = OpenAIPolicy(_url(fake_server), "m", api_key_env="MY_TEST_KEY", max_tokens=33)
    out = policy.sample([CTX0, CTX1], n=3, temperature=0.7, seed=11)
    assert len(out) == 2 and all(len(row) == 3 for row in out)
    assert out[0][1] == "Thought: t1\nAction: act11_1"  # cut after the action line
    path, headers, body = fake_server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-secret-123"
    assert body["messages"] == CTX0 and body["n"] == 3 and body["temperature"] == 0.7
    assert body["seed"] == 11 and body["max_tokens"] == 33 and body["model"] == "m"
    assert "\nObservation" in body["stop"]
    assert policy.stats.requests == 2 and policy.stats.generated_tokens == 42 and policy.stats.prompt_tokens == 10
    assert policy.models() == ["fake-model"]
    assert "sk-secret" not in repr(policy)
    # endpoint spellings
    for suffix in ("", "/v1/", "/v1/chat/completions"):
        assert OpenAIPolicy(_url(fake_server, suffix), "m").url == _url(fake_server, "/v1/chat/completions")


def test_openai_policy_concurrency_overlaps_requests_and_keeps_order(fake_server):
    contexts = [[*CTX0[:-1], {"role": "user", "content": f"task {i}"}] for i in range(4)]
    fake_server.mode, fake_server.sleep = "sleep", 0.3
    serial = OpenAIPolicy(_url(fake_server), "m")
    expected = serial.sample(contexts, seed=3)
    serial_seeds = sorted(r[2]["seed"] for r in fake_server.requests)
    fake_server.requests.clear()
    parallel = OpenAIPolicy(_url(fake_server), "m", concurrency=4)
    assert parallel.sample(contexts, seed=3) == expected  # each context keeps its own seed and place
    assert fake_server.most_in_flight > 1  # the requests were in flight together
    assert sorted(r[2]["seed"] for r in fake_server.requests) == serial_seeds
    assert (parallel.stats.requests, parallel.stats.contexts, parallel.stats.calls) == (4, 4, 1)
    assert parallel.stats.prompt_tokens == 20 and parallel.stats.generated_tokens == 28
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="concurrency"):
            OpenAIPolicy(_url(fake_server), "m", concurrency=bad)


def test_openai_policy_concurrent_failure_raises_one_error(fake_server):
    fake_server.mode, fake_server.fail_status = "status", 400  # not retried
    contexts = [[*CTX0[:-1], {"role": "user", "content": f"task {i}"}] for i in range(6)]
    policy = OpenAIPolicy(_url(fake_server), "m", concurrency=2, max_retries=0)
    with pytest.raises(PolicyServerError, match="status 400"):
        policy.sample(contexts)
    assert len(fake_server.requests) < 6  # the requests queued behind the failure were not sent


def test_openai_policy_counts_cached_prompt_tokens(fake_server):
    fake_server.mode = "cached"
    policy = OpenAIPolicy(_url(fake_server), "m")
    policy.sample([CTX0, CTX1])
    stats = policy.stats
    assert (stats.prompt_tokens, stats.cache_hit_tokens, stats.prefilled_tokens) == (10, 6, 4)
    fake_server.mode = "ok"  # a server that reports no cache: every prompt token was computed
    policy.sample([CTX0])
    assert (stats.prompt_tokens, stats.cache_hit_tokens, stats.prefilled_tokens) == (15, 6, 9)


def test_openai_policy_tops_up_missing_choices(fake_server):
    fake_server.mode = "one_choice"
    policy = OpenAIPolicy(_url(fake_server), "m")
    out = policy.sample([CTX0], n=3, seed=5)
    assert len(out[0]) == 3 and len(set(out[0])) == 3  # the extra requests use other seeds
    assert [r[2]["n"] for r in fake_server.requests] == [3, 1, 1]


def test_openai_policy_retries_5xx_and_429_then_succeeds(fake_server):
    for status in (503, 429):
        fake_server.requests.clear()
        fake_server.mode, fake_server.failures, fake_server.fail_status = "flaky", 2, status
        policy = OpenAIPolicy(_url(fake_server), "m", max_retries=3, backoff=0.01)
        assert parse_step(policy.sample([CTX0])[0][0])[1] == "act0_0"
        assert len(fake_server.requests) == 3 and policy.stats.attempts == 3


def test_openai_policy_gives_up_after_bounded_retries(fake_server):
    fake_server.mode, fake_server.fail_status = "status", 500
    policy = OpenAIPolicy(_url(fake_server), "m", max_retries=2, backoff=0.01)
    with pytest.raises(PolicyServerError, match="status 500") as err:
        policy.sample([CTX0])
    assert len(fake_server.requests) == 3
    assert len(str(err.value)) < 800  # a body excerpt, not the whole body


def test_openai_policy_does_not_retry_4xx(fake_server):
    fake_server.mode, fake_server.fail_status = "status", 400
    policy = OpenAIPolicy(_url(fake_server), "m", max_retries=3, backoff=0.01)
    with pytest.raises(PolicyServerError, match="status 400.*nope"):
        policy.sample([CTX0])
    assert len(fake_server.requests) == 1


def test_openai_policy_timeout(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-timeout-secret")
    fake_server.mode, fake_server.sleep = "sleep", 1.5
    policy = OpenAIPolicy(_url(fake_server), "m", timeout=0.3, max_retries=1, backoff=0.01)
    t0 = time.perf_counter()
    with pytest.raises(PolicyServerError, match=r"timed out after 0.3 s") as err:
        policy.sample([CTX0])
    assert time.perf_counter() - t0 < 3
    assert "2 attempts" in str(err.value) and policy.stats.attempts == 2
    time.sleep(0.2)
    assert len(fake_server.requests) == 2
    assert "sk-timeout-secret" not in str(err.value)


def test_openai_policy_unreachable_url(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-down-secret")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = OpenAIPolicy(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff=0.01)
    with pytest.raises(PolicyServerError, match=rf"http://127.0.0.1:{port}/v1/chat/completions is unreachable") as err:
        policy.sample([CTX0])
    assert policy.stats.attempts == 3 and "3 attempts" in str(err.value)
    assert "sk-down-secret" not in str(err.value) and "sk-down-secret" not in repr(policy)


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_policy_closed_port_fails_fast_naming_the_url():
    port = _closed_port()
    policy = OpenAIPolicy(f"http://127.0.0.1:{port}/v1", "m")  # the default retries, backoff and deadline
    t0 = time.monotonic()
    with pytest.raises(PolicyServerError) as err:
        policy.sample([CTX0])
    took = time.monotonic() - t0
    message = str(err.value)
    assert took < 10 and f"http://127.0.0.1:{port}/v1/chat/completions" in message
    assert "connection refused" in message and "4 attempts in" in message and "gave up after 3 retries" in message
    assert isinstance(err.value, ValueError)  # what `agentrm` prints as one line


@pytest.fixture()
def silent_port():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_openai_policy_silent_server_fails_within_the_deadline(silent_port):
    url = f"http://127.0.0.1:{silent_port}/v1"
    policy = OpenAIPolicy(url, "m", timeout=30, max_retries=5, backoff=0.01, deadline_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(PolicyServerError, match="timed out") as err:
        policy.sample([CTX0])
    assert time.monotonic() - t0 < 3  # not 6 x 30 s
    assert f"{url}/chat/completions" in str(err.value) and "deadline_s=1 reached" in str(err.value)
    # a backoff longer than what is left is not slept: one attempt, then the error
    policy = OpenAIPolicy(url, "m", timeout=0.3, max_retries=3, backoff=5, deadline_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(PolicyServerError, match=r"timed out after 0.3 s \(1 attempt in 0.\d s; deadline_s=1"):
        policy.models()
    assert time.monotonic() - t0 < 1.5 and policy.stats.attempts == 1


def test_openai_policy_rejects_bad_deadline():
    with pytest.raises(ValueError, match="deadline_s"):
        OpenAIPolicy("http://127.0.0.1:1/v1", "m", deadline_s=0)


def test_agentrm_play_prints_an_unreachable_server_as_one_line(capsys):
    from agentrm_jax.cli import main

    port = _closed_port()
    assert main(["play", "--env", "maze", "--policy", f"http://127.0.0.1:{port}/v1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("agentrm play: error: ")
    assert f"http://127.0.0.1:{port}/v1/models is unreachable (connection refused" in err


def test_api_key_never_appears_in_errors(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-echoed-secret")
    fake_server.mode = "echo_key"  # a server that echoes the Authorization header in its error body
    policy = OpenAIPolicy(_url(fake_server), "m", max_retries=0)
    with pytest.raises(PolicyServerError, match="status 401") as err:
        policy.sample([CTX0])
    assert "sk-echoed-secret" not in str(err.value) and "***" in str(err.value)
    assert "sk-echoed-secret" not in repr(policy) and "sk-echoed-secret" not in str(vars(policy))


def test_openai_policy_rejects_bad_url():
    with pytest.raises(ValueError, match="http"):
        OpenAIPolicy("localhost:8000", "m")

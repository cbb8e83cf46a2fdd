"""The AgentGym bridge: our client (`make("agentgym")`) against our server (`agentrm envserve`) on 127.0.0.1,
AgentGym servers' dialects against scripted fakes, and the one-line errors for every way a server can fail."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentrm_jax.envs.agentgym import DIALECTS, AgentGymEnv, AgentGymError
from agentrm_jax.envs.base import UnknownEnvironmentError, make
from agentrm_jax.envs.envserver import EnvServer, start_env_server, stop_env_server


FAST = {"timeout": 5, "deadline": 10}  # a broken test fails in seconds, not after the 120 s default deadline


@pytest.fixture(scope="module")
def maze_server():
    server, thread = start_env_server("maze", split="test", max_envs=8)
    yield server
    stop_env_server(server, thread)


@pytest.fixture(scope="module")
def pddl_server():
    server, thread = start_env_server("pddl", split="test", max_envs=8)
    yield server
    stop_env_server(server, thread)


def _one_line(err: BaseException, url: str) -> str:
    text = str(err)
    assert "\n" not in text and url in text, text
    return text


# -- our client against our server ------------------------------------------------------------------------
@pytest.mark.parametrize(("env_name", "seed"), [("maze", 0), ("maze", 5), ("pddl", 1)])
def test_expert_through_bridge_equals_direct_play(env_name, seed, maze_server, pddl_server):
    server = {"maze": maze_server, "pddl": pddl_server}[env_name]
    direct = make(env_name, seed=seed, split="test")
    bridge = make("agentgym", url=server.url, seed=seed, **FAST)
    assert bridge.instruction == direct.instruction
    assert bridge.available_actions() == direct.available_actions()
    expert = direct.expert_actions()
    assert bridge.expert_actions() == expert
    assert bridge.progress == direct.progress and not bridge.success
    for action in expert:
        want = direct.step(action)
        assert bridge.step(action) == want
        assert bridge.progress == pytest.approx(direct.progress, abs=1e-12)
        assert bridge.available_actions() == direct.available_actions()
    assert direct.success and bridge.success and bridge.done
    assert bridge.progress == 1.0
    assert bridge.turns == len(expert)


def test_first_observation_equals_reset(maze_server):
    direct = make("maze", seed=2, split="test")
    first = direct.reset(2)
    bridge = AgentGymEnv(url=maze_server.url, **FAST)
    assert bridge.reset(2) == first


def test_snapshot_restore_through_bridge_reproduces_observations(maze_server):
    env = make("agentgym", url=maze_server.url, seed=4, **FAST)
    moves = ["move north", "move east", "move south", "move west", "dance", "move north"]
    for a in moves[:3]:
        env.step(a)
    snap = env.snapshot()
    progress_then = env.progress
    later = [env.step(a) for a in moves[3:]]
    other = AgentGymEnv(url=maze_server.url, **FAST)
    other.restore(snap)
    assert other.turns == 3 and other.progress == progress_then
    assert [other.step(a) for a in moves[3:]] == later
    env.restore(snap)  # the same env, back in time
    assert [env.step(a) for a in moves[3:]] == later
    direct = make("maze", seed=4, split="test")
    assert [direct.step(a) for a in moves][3:] == later


def test_reset_closes_the_previous_instance(maze_server):
    env = AgentGymEnv(url=maze_server.url, **FAST)
    env.reset(0)
    live = maze_server.info()["live"]
    for seed in range(5):  # more resets than max_envs would allow if they leaked
        env.reset(seed)
    assert maze_server.info()["live"] == live
    env.close()
    assert maze_server.info()["live"] == live - 1


# -- AgentGym dialects against scripted fake servers ----------------------------------------------------------
class _Fake(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, respond):
        self.respond, self.requests = respond, []
        super().__init__(("127.0.0.1", 0), _FakeHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        body = json.loads(raw) if raw else None
        self.server.requests.append((method, path, query, body))
        status, data = self.server.respond(method, path, query, body)
        data = data if isinstance(data, bytes) else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")


@pytest.fixture
def fake():
    servers = []

    def start(respond):
        server = _Fake(respond)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_sciworld_dialect_scales_score_and_prepends_the_task(fake):
    scores = iter([25, 50, 100])

    def respond(method, path, query, body):
        if path == "/create":
            return 200, {"id": 7}
        if path == "/reset":
            return 200, {"task_description": "Your task is to boil water.", "observation": "You are in the kitchen.",
                         "reward": 0, "score": 0, "done": False}
        if path == "/step":
            score = next(scores)
            return 200, {"observation": f"score {score}", "reward": 25, "score": score, "done": score == 100}
        return 200, True

    server = fake(respond)
    env = make("agentgym", url=server.url, task="sciworld", seed=12, **FAST)
    assert env.instruction.startswith("Your task is to boil water.\nYou are in the kitchen.")
    assert ("POST", "/reset", "", {"id": 7, "data_idx": 12}) in server.requests
    env.step("look around")
    assert env.progress == 0.25 and not env.success
    env.step("open door")
    assert env.progress == 0.5
    obs, done = env.step("boil water")
    assert (obs, done, env.success, env.progress) == ("score 100", True, True, 1.0)
    assert ("POST", "/step", "", {"id": 7, "action": "boil water"}) in server.requests


def test_webshop_dialect_bare_id_env_idx_and_clickables(fake):
    def respond(method, path, query, body):
        if path == "/create":
            return 200, 4242
        if path == "/reset":
            return 200, ["WebShop [SEP] Instruction: [SEP] buy socks [SEP] Search", None]
        if path == "/observation":
            return 200, "WebShop [SEP] Instruction: [SEP] buy socks [SEP] Search"
        if path == "/available_actions":
            return 200, {"has_search_bar": False, "clickables": ["back to search", "b0001"]}
        if path == "/step":
            return 200, {"state": "Thank you for shopping", "reward": 0.75, "done": True, "info": None}
        return 200, True

    server = fake(respond)
    env = make("agentgym", url=server.url, task="webshop", seed=3, **FAST)
    assert env.instruction == "WebShop [SEP] Instruction: [SEP] buy socks [SEP] Search"
    assert ("POST", "/reset", "", {"env_idx": 4242, "session_id": 3}) in server.requests
    assert ("GET", "/observation", "env_idx=4242", None) in server.requests
    assert env.available_actions() == ["click[back to search]", "click[b0001]"]
    obs, done = env.step("click[buy now]")
    assert (obs, done, env.progress, env.success) == ("Thank you for shopping", True, 0.75, False)


def test_alfworld_dialect_game_field_and_actions_in_answers(fake):
    def respond(method, path, query, body):
        if path == "/create":
            return 200, {"id": 0}
        if path == "/reset":
            return 200, {"id": 0, "observation": "You are in a room.", "available_actions": ["look", "go to desk 1"],
                         "task_type": "pick"}
        if path == "/step":
            return 200, {"observation": "You win.", "reward": 1.0, "available_actions": ["look"], "done": True}
        return 200, True

    server = fake(respond)
    env = make("agentgym", url=server.url, task="alfworld", seed=9, **FAST)
    assert ("POST", "/reset", "", {"id": 0, "game": 9, "world_type": "Text"}) in server.requests
    assert env.available_actions() == ["look", "go to desk 1"]
    env.step("go to desk 1")
    assert env.success and env.progress == 1.0 and env.available_actions() == ["look"]


def test_progress_is_clamped_and_monotone_and_success_follows_the_server(fake):
    rewards = iter([0.4, -0.3, 0.2, 1.7, 0.1])

    def respond(method, path, query, body):
        if path == "/create":
            return 200, {"id": 0}
        if path == "/reset":
            return 200, {"observation": "start", "reward": -2.0, "done": False}
        if path == "/step":
            return 200, {"observation": "ok", "reward": next(rewards), "done": False}
        return 200, True

    env = make("agentgym", url=fake(respond).url, task="babyai", seed=0, **FAST)
    seen = [env.progress]
    for _ in range(3):
        env.step("go forward")
        seen.append(env.progress)
    assert seen == [0.0, 0.4, 0.4, 0.4] and not env.success
    _, done = env.step("go forward")
    assert (env.progress, env.success, done) == (1.0, True, True)  # a reward of 1 or more ends it


def test_server_success_flag_wins_over_the_reward(fake):
    def respond(method, path, query, body):
        if path == "/create":
            return 200, {"id": 0}
        if path == "/reset":
            return 200, {"observation": "start", "reward": 0.0, "done": False, "success": False}
        return 200, {"observation": "solved", "reward": 0.5, "done": True, "success": True}

    env = make("agentgym", url=fake(respond).url, seed=0, **FAST)
    env.step("solve")
    assert env.success and env.progress == 0.5


def test_registered_without_claiming_a_paper_task():
    from agentrm_jax.envs.base import REGISTRY
    from agentrm_jax.envs.split import load_split

    spec = REGISTRY["agentgym"]
    assert spec.factory is AgentGymEnv and spec.role == "held_out"
    # its stands_for names no split task: the env behind the URL decides, so no role can be implied
    assert not [e.task for e in load_split().entries if e.task.lower() in spec.stands_for.lower().replace(" ", "")]


def test_every_dialect_is_reachable_by_name():
    assert set(DIALECTS) == {"agentrm", "babyai", "sciworld", "alfworld", "textcraft", "webshop"}


# -- failures: one line naming the URL -----------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_closed_port_is_one_line():
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(AgentGymError) as err:
        make("agentgym", url=url, seed=0, timeout=2, deadline=5)
    assert "connection refused" in _one_line(err.value, url)
    assert "POST /create" in str(err.value)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1", "127.0.0.1:36001", "http://", "http://127.0.0.1:99999"])
def test_bad_url_is_one_line(url):
    with pytest.raises(AgentGymError) as err:
        AgentGymEnv(url=url)
    assert "\n" not in str(err.value) and repr(url) in str(err.value)


def test_missing_url_names_the_variable(monkeypatch):
    monkeypatch.delenv("AGENTRM_AGENTGYM_URL", raising=False)
    with pytest.raises(AgentGymError, match="AGENTRM_AGENTGYM_URL"):
        AgentGymEnv()


def test_url_from_the_environment_variable(monkeypatch, maze_server):
    monkeypatch.setenv("AGENTRM_AGENTGYM_URL", maze_server.url)
    assert make("agentgym", seed=1, **FAST).instruction == make("maze", seed=1, split="test").instruction


@pytest.mark.parametrize(("status", "data", "expected"), [
    (500, b"Internal Server Error: Traceback\n  File x\nKeyError: 3", "HTTP 500: Internal Server Error: Traceback"),
    (502, {"detail": "upstream died"}, "HTTP 502: upstream died"),
    (200, b"<html>definitely not json</html>", "the answer is not JSON ('<html>definitely not json</html>')"),
    (200, b"", "the answer is not JSON ('empty body')"),
    (200, {"error": "The id 0 is not valid."}, "the server says The id 0 is not valid."),
    (200, [1, 2], "no instance id"),
])
def test_server_errors_are_one_line(fake, status, data, expected):
    server = fake(lambda method, path, query, body: (status, data))
    with pytest.raises(AgentGymError) as err:
        make("agentgym", url=server.url, seed=0, timeout=5, deadline=10)
    text = _one_line(err.value, server.url)
    assert expected in text and "POST /create" in text


def test_error_mid_episode_names_the_route(fake):
    def respond(method, path, query, body):
        if path == "/create":
            return 200, {"id": 1}
        if path == "/reset":
            return 200, {"observation": "start", "reward": 0, "done": False}
        return 500, b"boom"

    server = fake(respond)
    env = make("agentgym", url=server.url, seed=0, **FAST)
    with pytest.raises(AgentGymError) as err:
        env.step("go")
    assert "POST /step failed: HTTP 500: boom" in _one_line(err.value, server.url)


def test_silent_server_times_out_within_the_deadline():
    listener = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        t0 = time.monotonic()
        with pytest.raises(AgentGymError) as err:
            make("agentgym", url=url, seed=0, timeout=0.3, deadline=1.0)
        assert time.monotonic() - t0 < 5
        assert "no answer within 0.3 s (timeout)" in _one_line(err.value, url)
    finally:
        listener.close()


def test_busy_server_is_retried_until_the_deadline(fake):
    server = fake(lambda method, path, query, body: (503, {"error": "busy"}))
    t0 = time.monotonic()
    with pytest.raises(AgentGymError) as err:
        make("agentgym", url=server.url, seed=0, timeout=1, deadline=0.6)
    assert time.monotonic() - t0 < 5
    assert len(server.requests) >= 2  # 503 is retried, as AgentGym's clients do
    assert "HTTP 503: busy" in _one_line(err.value, server.url)


def test_unknown_task_names_the_known_ones():
    with pytest.raises(AgentGymError) as err:
        AgentGymEnv(url="http://127.0.0.1:1", task="nosuch")
    assert "\n" not in str(err.value) and "'nosuch'" in str(err.value) and "webshop" in str(err.value)


def test_unknown_env_name_on_the_server():
    with pytest.raises(UnknownEnvironmentError) as err:
        EnvServer(("127.0.0.1", 0), "mazee")
    assert "'mazee'" in str(err.value) and "did you mean 'maze'" in str(err.value)


def test_cli_unknown_env_is_one_line(capsys):
    from agentrm_jax.cli import main

    assert main(["envserve", "--env", "nosuch", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("agentrm envserve: error: unknown environment 'nosuch'") and "\n" not in err


# -- the server's own protocol checks --------------------------------------------------------------------------
def _http(url: str, method: str, route: str, body=None, raw: bytes | None = None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"{url}{route}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_answers_agentgym_client_shapes(maze_server):
    url = maze_server.url
    status, created = _http(url, "POST", "/create")  # no body, as AgentGym's clients send it
    assert status == 200 and isinstance(created["id"], int)
    env_id = created["id"]
    status, reset = _http(url, "POST", "/reset", {"env_idx": env_id, "game": 3})  # WebShop's id, ALFWorld's index
    direct = make("maze", seed=3, split="test")
    assert status == 200 and reset["observation"] == direct.reset(3)
    assert {"observation", "reward", "score", "done", "success", "available_actions", "instruction"} <= set(reset)
    move = direct.expert_actions()[0]
    status, step = _http(url, "POST", "/step", {"id": env_id, "action": move})
    obs, _ = direct.step(move)
    assert status == 200 and step["observation"] == obs and step["reward"] == step["score"] == direct.progress
    assert _http(url, "GET", f"/observation?id={env_id}")[1]["observation"] == obs
    assert _http(url, "GET", f"/available_actions?id={env_id}")[1] == direct.available_actions()
    assert _http(url, "POST", "/close", {"id": env_id}) == (200, True)
    assert _http(url, "POST", "/close", {"id": env_id}) == (200, False)


@pytest.mark.parametrize(("method", "route", "body", "status", "fragment"), [
    ("POST", "/step", {"id": 10**6, "action": "x"}, 404, "no environment with id 1000000"),
    ("POST", "/step", {"action": "x"}, 400, "needs 'id'"),
    ("POST", "/reset", {"id": "zero", "data_idx": 0}, 400, "'id' must be an integer"),
    ("POST", "/nosuch", {}, 404, "no route POST /nosuch"),
    ("GET", "/observation?id=abc", None, 400, "'id' must be an integer"),
])
def test_server_bad_requests(maze_server, method, route, body, status, fragment):
    got, answer = _http(maze_server.url, method, route, body)
    assert got == status and fragment in answer["error"]


def test_server_bad_fields_on_a_live_instance(maze_server):
    url = maze_server.url
    env_id = _http(url, "POST", "/create")[1]["id"]
    try:
        got, answer = _http(url, "POST", "/step", {"id": env_id, "action": "move north"})
        assert got == 409 and "POST /reset" in answer["error"]
        got, answer = _http(url, "POST", "/reset", {"id": env_id, "data_idx": -1})
        assert got == 400 and "non-negative integer task index" in answer["error"]
        assert _http(url, "POST", "/reset", {"id": env_id, "data_idx": 0})[0] == 200
        got, answer = _http(url, "POST", "/step", {"id": env_id, "action": ["move", "north"]})
        assert got == 400 and "'action' must be a string" in answer["error"]
        got, answer = _http(url, "POST", "/step", raw=b"{not json")
        assert got == 400 and "not valid JSON" in answer["error"]
    finally:
        _http(url, "POST", "/close", {"id": env_id})


def test_server_caps_live_instances():
    server, thread = start_env_server("maze", max_envs=2)
    try:
        ids = [_http(server.url, "POST", "/create")[1]["id"] for _ in range(2)]
        got, answer = _http(server.url, "POST", "/create")
        assert got == 503 and "--max-envs 2" in answer["error"]
        _http(server.url, "POST", "/close", {"id": ids[0]})
        assert _http(server.url, "POST", "/create")[0] == 200
    finally:
        stop_env_server(server, thread)


def test_server_env_exception_is_500_and_keeps_serving(monkeypatch, maze_server):
    env = make("agentgym", url=maze_server.url, seed=0, **FAST)
    instance = maze_server.instance(env.env_id)
    monkeypatch.setattr(instance.env, "step", lambda action: (_ for _ in ()).throw(RuntimeError("simulator\ncrashed")))
    with pytest.raises(AgentGymError) as err:
        env.step("move north")
    assert "HTTP 500: maze: RuntimeError: simulator crashed" in _one_line(err.value, maze_server.url)
    env.reset(0)  # a fresh instance works
    assert env.step("dance")[1] is False


def test_cli_envserve_serves_until_sigterm():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agentrm_jax.cli", "envserve", "--env", "maze", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        assert line and "serving maze (test split) at http://127.0.0.1:" in line[0], line
        url = line[0].split(" at ", 1)[1].split()[0]
        bridge = make("agentgym", url=url, seed=1, timeout=10)
        assert bridge.instruction == make("maze", seed=1, split="test").instruction
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

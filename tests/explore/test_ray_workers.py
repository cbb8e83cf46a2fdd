"""`agentrm explore --ray`: Ray actors grow the same trees as local workers, through the same one writer.

The tests that start Ray are skipped only when ray is not importable (it is in the `test` extra); the
ones about running without Ray block its import and always run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentrm_jax.cli import main
from agentrm_jax.explore.config import ExploreConfig
from agentrm_jax.explore.runner import run_explore

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'agentrm_jax[ray]')")

MAZE = ["--env", "maze", "--policy", "expert", "--noise", "0.5", "--k", "3", "--rollouts", "2", "--max-turns", "12",
        "--simulations", "5", "--batch-trees", "2", "--no-progress"]
MOVES = ["move north", "move south", "move east", "move west"]


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def by_key(path) -> dict[str, dict]:
    return {r["key"]: r for r in lines(path)[1:]}


@needs_ray
def test_a_local_ray_head_with_two_actors_gives_the_trees_of_two_workers(tmp_path, capsys):
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main(["explore", *MAZE, "--seeds", "0-5", "--workers", "2", "--out", str(local)]) == 0
    assert main(["explore", *MAZE, "--seeds", "0-5", "--workers", "2", "--ray", "--out", str(on_ray)]) == 0
    assert "2 Ray actor(s) on a local runtime" in capsys.readouterr().err
    assert lines(on_ray)[0] == lines(local)[0]  # Ray is no part of the tree config
    trees = by_key(on_ray)
    assert len(lines(on_ray)) == 7 and trees == by_key(local)
    assert sum(len(t["nodes"]) for t in trees.values()) > 6  # trees, not bare roots


@needs_ray
def test_ray_resumes_a_torn_file_writing_each_missing_tree_once(tmp_path):
    whole, part = tmp_path / "whole.jsonl", tmp_path / "part.jsonl"
    assert main(["explore", *MAZE, "--seeds", "0-5", "--out", str(whole)]) == 0
    header, *rows = Path(whole).read_text().splitlines()
    kept = [r for r in rows if json.loads(r)["seed"] in (1, 4)]
    Path(part).write_text("\n".join([header, *kept]) + "\n" + rows[0][:40])  # a kill mid-write
    assert main(["explore", *MAZE, "--seeds", "0-5", "--workers", "2", "--ray", "--out", str(part)]) == 0
    keys = [r["key"] for r in lines(part)[1:]]
    assert len(keys) == 6 == len(set(keys))
    assert by_key(part) == by_key(whole)


class _MoveServer(ThreadingHTTPServer):
    """A stand-in inference server (OpenAI chat API): each choice is a maze move picked by a hash of the
    request's messages, seed and choice index, so its answers are a function of the request alone."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _MoveHandler)
        self.requests = 0
        self.mumble = False  # answer without an action
        self.lock = threading.Lock()


class _MoveHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self._send({"object": "list", "data": [{"id": "mover", "object": "model"}]})

    def do_POST(self):  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
        choices = []
        for j in range(req.get("n", 1)):
            digest = hashlib.sha256(json.dumps([req["messages"], req.get("seed"), j]).encode()).digest()
            text = ("I am not sure what to do here, let me think about it for a long while." if self.server.mumble
                    else f"Thought: go.\nAction: {MOVES[digest[0] % len(MOVES)]}")
            choices.append({"index": j, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
        self._send({"object": "chat.completion", "choices": choices})


@pytest.fixture
def move_server():
    server = _MoveServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@needs_ray
def test_ray_actors_share_one_served_policy(tmp_path, move_server):
    url = f"http://127.0.0.1:{move_server.server_address[1]}/v1"
    args = ["--env", "maze", "--policy", url, "--seeds", "0-3", "--simulations", "3", "--k", "2", "--rollouts", "1",
            "--rollout-depth", "3", "--max-turns", "8", "--batch-trees", "2", "--no-progress"]
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main(["explore", *args, "--out", str(local)]) == 0
    served_locally = move_server.requests
    assert main(["explore", *args, "--workers", "2", "--ray", "--out", str(on_ray)]) == 0
    assert move_server.requests - served_locally == served_locally > 0  # the actors asked the one server
    assert by_key(on_ray) == by_key(local) and len(by_key(on_ray)) == 4


@needs_ray
def test_an_actor_error_is_the_workers_one_line_not_a_ray_traceback(tmp_path, move_server, capsys):
    move_server.mumble = True
    url = f"http://127.0.0.1:{move_server.server_address[1]}/v1"
    out = tmp_path / "trees.jsonl"
    assert main(["explore", "--env", "maze", "--policy", url, "--seeds", "0-1", "--simulations", "2", "--ray",
                 "--no-progress", "--out", str(out)]) == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if "error:" in e]
    assert len(errors) == 1 and "maze/train/0: the policy returned no parsable action" in errors[0], errors
    assert len(lines(out)) == 1  # the header only


def test_without_ray_local_runs_work_and_ray_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    out = tmp_path / "trees.jsonl"
    assert main(["explore", *MAZE, "--seeds", "0-1", "--ray", "--out", str(out)]) == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if "error:" in e]
    assert len(errors) == 1 and "pip install 'agentrm_jax[ray]'" in errors[0], errors
    assert not out.exists()  # refused before anything is written
    assert main(["explore", *MAZE, "--seeds", "0-1", "--out", str(out)]) == 0
    assert len(lines(out)) == 3


def test_ray_settings_are_checked_and_no_part_of_the_tree_config(tmp_path):
    base = ExploreConfig(env="maze", seeds=(0,), output=str(tmp_path / "t.jsonl"))
    assert base.replace(ray="local", workers=4).fingerprint() == base.fingerprint()
    with pytest.raises(ValueError, match="ray must be local or a cluster address"):
        base.replace(ray="  ")
    with pytest.raises(ValueError, match=r"gpus_per_worker is for Ray actors; set ray \(--ray\) too"):
        base.replace(gpus_per_worker=1.0)
    with pytest.raises(ValueError, match="cannot be shipped to worker processes or Ray actors"):
        run_explore(base.replace(ray="local"), policy=object(), progress=False)

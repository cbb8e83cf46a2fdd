"""Serve one of our environments over AgentGym's HTTP protocol (standard library only).

    GET  /                               {"env", "split", "max_turns", "live", "max_envs", "protocol"}
    POST /create                         -> {"id": 0}
    POST /reset  {"id", "data_idx"}      -> payload + {"instruction"}
    POST /step   {"id", "action"}        -> payload
    GET  /observation?id=0               -> payload
    GET  /available_actions?id=0         -> ["move north", ...] or null where the set is not finite
    GET  /expert_actions?id=0            -> the env's oracle solution of the task (our addition)
    POST /close  {"id"}                  -> true

where payload = {"observation", "reward", "score", "done", "success", "turns",
"available_actions"}; reward and score are both the env's progress in [0, 1]
(AgentGym's BabyAI client reads `score`, the others `reward`), so an AgentGym
client and `make("agentgym", url=...)` read the same number. /reset also takes
the task index as `game` or `session_id` (ALFWorld's and WebShop's spellings),
and every route the instance id as `env_idx` (WebShop's).

Each instance is one env made from the registry; requests on one instance are
serialized by its lock, different instances run in parallel. At most
`max_envs` live at once: /create beyond that answers 503 until one is closed.
Errors are {"error": message} (AgentGym's shape) with a status: 400 a bad field
or body, 404 an unknown route or instance, 409 a step before /reset, 411 no
Content-Length, 413 a body over MAX_BODY bytes, 408 a body that does not
arrive within `read_timeout` (also the timeout of every socket operation, so a
stalled client frees its thread), 500 the env raised.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EnvServer", "start_env_server", "stop_env_server"]

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
DEFAULT_MAX_ENVS = 64
DEFAULT_READ_TIMEOUT = 30.0
_INDEX_FIELDS = ("data_idx", "game", "session_id")
_ID_FIELDS = ("id", "env_idx")


class _Fail(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Instance:
    def __init__(self, env):
        self.env = env
        self.lock = threading.Lock()
        self.reset_done = False
        self.last = ""  # the latest observation, for GET /observation


class EnvServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding env instances of one registered environment, keyed by integer id."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, env_name: str, *, split: str = "test", max_turns: int | None = None,
                 max_envs: int = DEFAULT_MAX_ENVS, read_timeout: float = DEFAULT_READ_TIMEOUT):
        import agentrm_jax.envs  # noqa: F401 - registers every environment
        from agentrm_jax.envs.base import REGISTRY, SPLITS, UnknownEnvironmentError

        if env_name not in REGISTRY:
            raise UnknownEnvironmentError(env_name, sorted(REGISTRY))
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if max_turns is not None and (isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1):
            raise ValueError(f"max_turns must be an integer >= 1, got {max_turns!r}")
        if isinstance(max_envs, bool) or not isinstance(max_envs, int) or max_envs < 1:
            raise ValueError(f"max_envs must be an integer >= 1, got {max_envs!r}")
        if not (read_timeout > 0 and math.isfinite(read_timeout)):
            raise ValueError(f"read_timeout must be a positive number of seconds, got {read_timeout!r}")
        self.spec = REGISTRY[env_name]
        self.env_name, self.split, self.max_turns = env_name, split, max_turns
        self.max_envs, self.read_timeout = max_envs, float(read_timeout)
        self.instances: dict[int, _Instance] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    # -- instances --------------------------------------------------------------------------------
    def create(self) -> int:
        """A new env instance's id (503 when `max_envs` are live)."""
        with self._lock:
            if len(self.instances) >= self.max_envs:
                raise _Fail(503, f"{len(self.instances)} environments are live, the most this server keeps "
                                 f"(--max-envs {self.max_envs}); POST /close one first")
            env_id, self._next_id = self._next_id, self._next_id + 1
        kwargs = {"split": self.split} if self.max_turns is None else {"split": self.split, "max_turns": self.max_turns}
        instance = _Instance(self.spec.factory(**kwargs))
        with self._lock:
            self.instances[env_id] = instance
        return env_id

    def instance(self, env_id: int) -> _Instance:
        with self._lock:
            found = self.instances.get(env_id)
        if found is None:
            raise _Fail(404, f"no environment with id {env_id} (closed, or never created): POST /create first")
        return found

    def close_instance(self, env_id: int) -> bool:
        with self._lock:
            found = self.instances.pop(env_id, None)
        if found is not None and hasattr(found.env, "close"):
            try:
                found.env.close()
            except Exception:  # noqa: BLE001 - the instance is gone either way
                log.exception("closing environment %s failed", env_id)
        return found is not None

    def info(self) -> dict[str, Any]:
        with self._lock:
            live = len(self.instances)
        return {"env": self.env_name, "split": self.split, "max_turns": self.max_turns, "live": live,
                "max_envs": self.max_envs, "protocol": "agentgym",
                "description": self.spec.description}

    # -- the protocol -------------------------------------------------------------------------------
    @staticmethod
    def payload(instance: _Instance, observation: str) -> dict[str, Any]:
        env = instance.env
        progress = float(env.progress)
        actions = env.available_actions()
        return {"observation": observation, "reward": progress, "score": progress, "done": bool(env.done),
                "success": bool(env.success), "turns": int(env.turns),
                "available_actions": None if actions is None else list(actions)}

    def reset(self, env_id: int, index: int) -> dict[str, Any]:
        instance = self.instance(env_id)
        with instance.lock:
            try:
                observation = instance.env.reset(index)
            except ValueError as e:  # a task index the env refuses
                raise _Fail(400, f"reset to task {index} failed: {e}") from None
            instance.reset_done = True
            instance.last = observation
            return {**self.payload(instance, observation), "instruction": instance.env.instruction}

    def _ready(self, env_id: int) -> _Instance:
        instance = self.instance(env_id)
        if not instance.reset_done:
            raise _Fail(409, f"environment {env_id} has no task yet: POST /reset {{\"id\": {env_id}, "
                             f"\"data_idx\": N}} first")
        return instance

    def step(self, env_id: int, action: str) -> dict[str, Any]:
        instance = self._ready(env_id)
        with instance.lock:
            observation, _ = instance.env.step(action)
            instance.last = observation
            return self.payload(instance, observation)

    def observation(self, env_id: int) -> dict[str, Any]:
        instance = self._ready(env_id)
        with instance.lock:
            return self.payload(instance, instance.last)

    def available_actions(self, env_id: int) -> list[str] | None:
        instance = self._ready(env_id)
        with instance.lock:
            actions = instance.env.available_actions()
        return None if actions is None else list(actions)

    def expert_actions(self, env_id: int) -> list[str]:
        instance = self._ready(env_id)
        with instance.lock:
            try:
                return list(instance.env.expert_actions())
            except NotImplementedError as e:
                raise _Fail(404, f"{self.env_name} has no expert: {e}") from None


def _field_id(fields: dict[str, Any]) -> int:
    for key in _ID_FIELDS:
        if key in fields:
            value = fields[key]
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Fail(400, f"'{key}' must be an integer environment id (from POST /create), got {value!r}")
            return value
    raise _Fail(400, "the request needs 'id' (the environment id POST /create returned)")


class _Handler(BaseHTTPRequestHandler):
    server: EnvServer
    protocol_version = "HTTP/1.1"
    server_version = "agentrm-envserve"

    def setup(self):
        self.timeout = self.server.read_timeout  # on the socket: a stalled client frees this thread
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            log.info("client %s left before the response", self.address_string())
            self.close_connection = True

    def _error(self, status: int, message: str, *, close: bool = False) -> None:
        if close:  # the body was not read: the connection cannot carry another request
            self.close_connection = True
        self._send(status, {"error": message})

    def _body(self) -> dict[str, Any]:
        """The JSON object in the body ({} for an empty body: /create takes none); raises _Fail."""
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise _Fail(411, "send the body with a Content-Length (chunked bodies are not supported)")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise _Fail(400, "the Content-Length header is not a non-negative integer")
        if length > MAX_BODY:
            self.close_connection = True
            raise _Fail(413, f"the body has {length} bytes; at most {MAX_BODY} are accepted")
        if length == 0:
            return {}
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise _Fail(408, f"the body did not arrive: nothing came for {self.server.read_timeout:g} s") from None
        if len(raw) < length:
            self.close_connection = True
            raise _Fail(400, f"the body ended after {len(raw)} of {length} bytes (Content-Length)")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _Fail(400, f"the body is not valid JSON: {e}") from None
        except RecursionError:
            raise _Fail(400, "the body is nested too deeply to parse") from None
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise _Fail(400, "the body must be a JSON object")
        return body

    def _route(self) -> tuple[str, dict[str, Any]]:
        path, _, query = self.path.partition("?")
        fields = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
        return path.rstrip("/"), fields

    def _run(self, method: str) -> None:
        path, query = self._route()
        server = self.server
        try:
            body = self._body() if method == "POST" else {}
            if method == "GET" and path == "":
                result = server.info()
            elif method == "GET" and path == "/health":
                result = {"status": "ok"}
            elif method == "POST" and path == "/create":
                result = {"id": server.create()}
            elif method == "POST" and path == "/reset":
                key = next((k for k in _INDEX_FIELDS if k in body), None)
                index = 0 if key is None or body[key] is None else body[key]  # AgentGym's default task 0
                if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                    raise _Fail(400, f"'{key}' must be a non-negative integer task index, got {index!r}")
                result = server.reset(_field_id(body), index)
            elif method == "POST" and path == "/step":
                action = body.get("action")
                if not isinstance(action, str):
                    raise _Fail(400, f"'action' must be a string, got {action!r}")
                result = server.step(_field_id(body), action)
            elif method == "POST" and path == "/close":
                result = server.close_instance(_field_id(body))
            elif method == "GET" and path == "/observation":
                result = server.observation(_field_id(query))
            elif method == "GET" and path == "/available_actions":
                result = server.available_actions(_field_id(query))
            elif method == "GET" and path == "/expert_actions":
                result = server.expert_actions(_field_id(query))
            else:
                raise _Fail(404, f"no route {method} {path or '/'}; routes: POST /create /reset /step /close, "
                                 f"GET / /observation /available_actions /expert_actions")
        except _Fail as e:
            self._error(e.status, str(e))
            return
        except Exception as e:  # noqa: BLE001 - the client gets a 500 and the server keeps serving
            log.exception("%s %s failed", method, path)
            self._error(500, f"{server.env_name}: {type(e).__name__}: {' '.join(str(e).split())}")
            return
        self._send(200, result)

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self._run("GET")

    def do_POST(self):  # noqa: N802
        self._run("POST")


def start_env_server(env_name: str, host: str = "127.0.0.1", port: int = 0, *, split: str = "test",
                     max_turns: int | None = None, max_envs: int = DEFAULT_MAX_ENVS,
                     read_timeout: float = DEFAULT_READ_TIMEOUT) -> tuple[EnvServer, threading.Thread]:
    """Serve registered env `env_name` in a background thread; port 0 picks a free port (see `server.url`)."""
    server = EnvServer((host, port), env_name, split=split, max_turns=max_turns, max_envs=max_envs,
                       read_timeout=read_timeout)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"agentrm-envserve-{server.server_address[1]}", daemon=True)
    thread.start()
    return server, thread


def stop_env_server(server: EnvServer, thread: threading.Thread | None = None, timeout: float = 10.0) -> None:
    """Stop serving, close the socket and join the serving thread."""
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout)

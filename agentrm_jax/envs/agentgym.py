"""`agentgym`: a TextEnv that plays an environment served over AgentGym's HTTP protocol.

AgentGym (github.com/WooooDyy/AgentGym) serves each environment from its own
HTTP server (`agentenv-webshop`, `agentenv-alfworld`, `agentenv-sciworld`,
`agentenv-babyai`, ...). They share one shape with per-server spellings:

    POST /create                       -> {"id": 0}        (WebShop: a bare integer)
    POST /reset  {"id", "data_idx"}    -> {"observation", "reward", "done", ...}
    POST /step   {"id", "action"}      -> {"observation", "reward", "done", ...}
    GET  /observation?id=0, GET /available_actions?id=0, POST /close {"id"}

and report a failure as HTTP 200 with {"error": "..."}. `task=` names the
server's dialect (`DIALECTS`): which field carries the task index (`data_idx`,
ALFWorld's `game`, WebShop's `session_id`), the instance id (WebShop's
`env_idx`), the observation (WebShop's `state`), and the reward: its field
(SciWorld's running `score`) and its scale (SciWorld scores out of 100); every
server sends the total so far, not increments. `task="agentrm"` (the default) is the
dialect of `agentrm envserve`, which serves our own envs this way.

`reset(seed)` creates a fresh instance on the server (closing the previous one)
and resets it to task index `seed`; progress is the server's reward divided by
the scale, clamped to [0, 1] and kept monotone; success is the server's own
`success` flag where it sends one, else the reward reaching the full scale.
Snapshots replay the actions on a fresh instance (the base class's replay).
Which tasks an index names, and the split, are the server's business: `split`
here is only a label.

HTTP is stdlib urllib. Every request has a timeout (`timeout`, seconds) and
every call (reset, step, ...) a total deadline over all its requests and its
retries of HTTP 503 (`deadline`). A bad URL, a refused connection, a server
error (5xx, a body that is not JSON, an {"error"} answer), a timeout and an
unknown `task` each raise `AgentGymError`, a ValueError whose one-line message
names the URL and what failed.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register

__all__ = ["DIALECTS", "AgentGymEnv", "AgentGymError", "Dialect", "HttpJson"]

URL_ENV_VAR = "AGENTRM_AGENTGYM_URL"
DEFAULT_TIMEOUT = 30.0
DEFAULT_DEADLINE = 120.0
MAX_RESPONSE = 64 * 1024 * 1024
_RETRY_PAUSE = 0.1


class AgentGymError(ValueError):
    """A failed exchange with an AgentGym-protocol server (the message is one line naming the URL)."""


@dataclass(frozen=True)
class Dialect:
    """How one AgentGym server spells the shared protocol.

    id_field: the instance id in bodies and queries; index_field: the task index in /reset;
    reset_extra: further /reset fields; observation_field: where step answers put the text;
    reward_field / reward_scale: progress = reward / scale (the total so far); bare_id: /create
    answers with the id itself; description_field: prepended to the first observation;
    first_observation: "response" (the /reset answer) or "route" (GET /observation);
    actions: "response" (an `available_actions` field in answers), "webshop" (GET /available_actions
    -> clickables) or "none"; expert: GET /expert_actions exists.
    """

    name: str
    id_field: str = "id"
    index_field: str = "data_idx"
    reset_extra: tuple[tuple[str, Any], ...] = ()
    observation_field: str = "observation"
    reward_field: str = "reward"
    reward_scale: float = 1.0
    bare_id: bool = False
    description_field: str | None = None
    first_observation: str = "response"
    actions: str = "none"
    expert: bool = False


DIALECTS: dict[str, Dialect] = {d.name: d for d in (
    Dialect("agentrm", actions="response", expert=True),
    Dialect("babyai"),  # its valid actions are written into the observation text
    Dialect("sciworld", reward_field="score", reward_scale=100.0, description_field="task_description"),
    Dialect("alfworld", index_field="game", reset_extra=(("world_type", "Text"),), actions="response"),
    Dialect("textcraft"),
    Dialect("webshop", id_field="env_idx", index_field="session_id", observation_field="state", bare_id=True,
            first_observation="route", actions="webshop"),
)}


def _one_line(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


class HttpJson:
    """JSON over HTTP to one base URL: per-request timeout, per-call deadline, 503 retried until the deadline."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE):
        for label, value in (("timeout", timeout), ("deadline", deadline)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    value > 0 and math.isfinite(value)):
                raise AgentGymError(f"agentgym: {label} must be a positive number of seconds, got {value!r}")
        if not isinstance(url, str):
            raise AgentGymError(f"agentgym: url must be a string like http://127.0.0.1:36001, got {url!r}")
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AgentGymError(f"agentgym server {url!r}: not an http(s) URL with a host "
                                f"(expected e.g. http://127.0.0.1:36001)")
        try:
            parts.port  # noqa: B018 - raises on a port outside 0..65535 or not a number
        except ValueError as e:
            raise AgentGymError(f"agentgym server {url!r}: bad port ({e})") from None
        self.url = url.strip().rstrip("/")
        self.timeout, self.deadline = float(timeout), float(deadline)
        # a proxy from the environment (http_proxy) must not swallow requests to this machine
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if local else []))

    def call(self, method: str, route: str, *, body: Any = None, query: dict[str, Any] | None = None,
             until: float | None = None) -> Any:
        """The parsed JSON answer of `method route`; `until` is a time.monotonic() deadline shared by a call."""
        until = time.monotonic() + self.deadline if until is None else until
        target = f"{self.url}/{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        what = f"{method} /{route}"
        data = None if method == "GET" else json.dumps({} if body is None else body).encode()
        busy = None  # the last 503 answer: what to report if the deadline passes while retrying
        while True:
            left = until - time.monotonic()
            if left <= 0 and busy is not None:
                status, raw = busy
                break
            if left <= 0:
                raise AgentGymError(f"agentgym server {self.url}: {what} failed: the call's deadline of "
                                    f"{self.deadline:g} s passed")
            request = urllib.request.Request(target, data=data, method=method,
                                             headers={"Content-Type": "application/json",
                                                      "Accept": "application/json"})
            try:
                status, raw = self._send(request, min(self.timeout, left), until, what)
            except AgentGymError:
                if busy is None or time.monotonic() < until:
                    raise
                status, raw = busy  # a retry cut short by the deadline: the server was still busy
                break
            if status == 503 and until - time.monotonic() > _RETRY_PAUSE:  # busy: AgentGym's clients retry too
                busy = (status, raw)
                time.sleep(_RETRY_PAUSE)
                continue
            break
        if status >= 400:
            detail = _error_text(raw)
            raise AgentGymError(f"agentgym server {self.url}: {what} failed: HTTP {status}"
                                f"{': ' + detail if detail else ''}")
        try:
            answer = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise AgentGymError(f"agentgym server {self.url}: {what} failed: the answer is not JSON "
                                f"({_one_line(raw.decode('utf-8', 'replace')) or 'empty body'!r})") from None
        if isinstance(answer, dict) and answer.get("error") is not None:
            raise AgentGymError(f"agentgym server {self.url}: {what} failed: the server says "
                                f"{_one_line(answer['error'])}")
        return answer

    def _send(self, request: urllib.request.Request, timeout: float, until: float, what: str) -> tuple[int, bytes]:
        fail = f"agentgym server {self.url}: {what} failed"
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.status, self._read(response, until, fail)
        except urllib.error.HTTPError as e:
            try:
                raw = e.read(64 * 1024)
            except (OSError, ValueError):
                raw = b""
            return e.code, raw
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise AgentGymError(f"{fail}: no answer within {timeout:.3g} s (timeout)") from None
            if isinstance(reason, ConnectionRefusedError):
                raise AgentGymError(f"{fail}: connection refused (is the server running at this address?)") \
                    from None
            raise AgentGymError(f"{fail}: cannot connect ({_one_line(reason)})") from None
        except (TimeoutError, socket.timeout):
            raise AgentGymError(f"{fail}: no answer within {timeout:.3g} s (timeout)") from None
        except (ConnectionError, OSError, ValueError) as e:  # reset mid-answer, a malformed status line, ...
            raise AgentGymError(f"{fail}: {type(e).__name__}: {_one_line(e) or 'connection broken'}") from None

    def _read(self, response, until: float, fail: str) -> bytes:
        """The whole body, in pieces, so a server that trickles bytes cannot outlast the call's deadline."""
        chunks, size = [], 0
        while True:
            if time.monotonic() > until:
                raise AgentGymError(f"{fail}: the answer did not finish within the call's deadline of "
                                    f"{self.deadline:g} s")
            piece = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
            if not piece:
                return b"".join(chunks)
            size += len(piece)
            if size > MAX_RESPONSE:
                raise AgentGymError(f"{fail}: the answer exceeds {MAX_RESPONSE} bytes")
            chunks.append(piece)


def _error_text(raw: bytes) -> str:
    """The message of an error body: {"error": ...} (ours and AgentGym's), {"detail": ...} (FastAPI), or the text."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return _one_line(raw.decode("utf-8", "replace"))
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if body.get(key) is not None:
                value = body[key]
                return _one_line(value.get("message", value) if isinstance(value, dict) else value)
    return _one_line(body)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


class AgentGymEnv(ReplayEnv):
    """A TextEnv whose simulator is an AgentGym-protocol server at `url` (see the module docstring).

    url: the server's base URL (default: $AGENTRM_AGENTGYM_URL); task: its dialect, a key of DIALECTS;
    timeout: seconds per HTTP request; deadline: seconds per call (reset, step, ...) over all its requests.
    """

    name = "agentgym"

    def __init__(self, *, url: str | None = None, task: str = "agentrm", split: str = "train", max_turns: int = 30,
                 timeout: float = DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE):
        super().__init__(split=split, max_turns=max_turns)
        if task not in DIALECTS:
            raise AgentGymError(f"agentgym: unknown task {task!r}; known AgentGym servers: "
                                f"{', '.join(sorted(DIALECTS))} (agentrm = `agentrm envserve`)")
        url = url if url is not None else os.environ.get(URL_ENV_VAR)
        if not url:
            raise AgentGymError(f"agentgym: no server URL; pass url=... or set ${URL_ENV_VAR} "
                                f"(e.g. http://127.0.0.1:36001)")
        self.dialect = DIALECTS[task]
        self.http = HttpJson(url, timeout=timeout, deadline=deadline)
        self.url = self.http.url
        self.env_id: Any = None
        self._value = 0.0  # the server's latest reward (a running total), unscaled
        self._server_success: bool | None = None
        self._actions_now: list[str] | None = None

    # -- HTTP helpers -----------------------------------------------------------------------------
    def _post(self, route: str, fields: dict[str, Any], until: float) -> Any:
        return self.http.call("POST", route, body={self.dialect.id_field: self.env_id, **fields}, until=until)

    def _get(self, route: str, until: float) -> Any:
        return self.http.call("GET", route, query={self.dialect.id_field: self.env_id}, until=until)

    def _answer(self, answer: Any, route: str) -> dict[str, Any]:
        if not isinstance(answer, dict):
            raise AgentGymError(f"agentgym server {self.url}: POST /{route} failed: expected a JSON object, "
                                f"got {_one_line(json.dumps(answer), 80)}")
        return answer

    def _text(self, value: Any, route: str, field: str) -> str:
        if isinstance(value, dict) and isinstance(value.get("observation"), str):
            value = value["observation"]
        if not isinstance(value, str):
            raise AgentGymError(f"agentgym server {self.url}: {route} failed: no text in {field!r} "
                                f"(got {_one_line(json.dumps(value), 80)})")
        return value

    def _absorb(self, answer: dict[str, Any]) -> None:
        """Take reward, success and available actions from a /reset or /step answer."""
        d = self.dialect
        reward = _number(answer.get(d.reward_field))
        if reward is not None:
            self._value = reward
        if isinstance(answer.get("success"), bool):
            self._server_success = answer["success"]
        if d.actions == "response" and "available_actions" in answer:
            acts = answer["available_actions"]
            self._actions_now = [str(a) for a in acts] if isinstance(acts, list) else None

    def close(self) -> None:
        """Close the server-side instance (best effort: a server that already forgot it is fine)."""
        if self.env_id is None:
            return
        env_id, self.env_id = self.env_id, None
        try:
            self.http.call("POST", "close", body={self.dialect.id_field: env_id},
                           until=time.monotonic() + min(self.http.deadline, 5.0))
        except AgentGymError:
            pass

    # -- ReplayEnv hooks --------------------------------------------------------------------------
    def _reset(self, seed: int) -> str:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"agentgym: seed (the server's task index) must be a non-negative integer, got {seed!r}")
        d = self.dialect
        self.close()
        until = time.monotonic() + self.http.deadline
        created = self.http.call("POST", "create", body={}, until=until)
        env_id = created if d.bare_id else (created.get("id") if isinstance(created, dict) else None)
        if isinstance(env_id, bool) or not isinstance(env_id, (int, str)):
            raise AgentGymError(f"agentgym server {self.url}: POST /create failed: no instance id in "
                                f"{_one_line(json.dumps(created), 80)}")
        self.env_id = env_id
        self._value, self._server_success, self._actions_now = 0.0, None, None
        answer = self._post("reset", {d.index_field: seed, **dict(d.reset_extra)}, until)
        if d.first_observation == "route":
            observation = self._text(self._get("observation", until), "GET /observation", "observation")
        else:
            answer = self._answer(answer, "reset")
            observation = self._text(answer.get("observation"), "POST /reset", "observation")
            self._absorb(answer)
            if d.description_field and isinstance(answer.get(d.description_field), str):
                observation = f"{answer[d.description_field]}\n{observation}"
        instruction = answer.get("instruction") if isinstance(answer, dict) else None
        self._instruction = instruction if isinstance(instruction, str) and instruction else observation
        return observation

    def _step(self, action: str) -> tuple[str, bool]:
        until = time.monotonic() + self.http.deadline
        answer = self._answer(self._post("step", {"action": action}, until), "step")
        observation = self._text(answer.get(self.dialect.observation_field), "POST /step",
                                 self.dialect.observation_field)
        self._absorb(answer)
        return observation, bool(answer.get("done"))

    def _success(self) -> bool:
        if self._server_success is not None:
            return self._server_success
        return self._value >= self.dialect.reward_scale - 1e-9

    def _progress(self) -> float:
        return self._value / self.dialect.reward_scale

    def available_actions(self) -> list[str] | None:
        """The server's valid actions where it lists them (None where it does not, or for free text)."""
        if self.env_id is None:
            return None
        d = self.dialect
        if d.actions == "response":
            return None if self._actions_now is None else list(self._actions_now)
        if d.actions == "webshop":  # {"has_search_bar", "clickables"}: search[...] is free text
            answer = self._get("available_actions", time.monotonic() + self.http.deadline)
            if not isinstance(answer, dict) or answer.get("has_search_bar"):
                return None
            return [f"click[{c}]" for c in answer.get("clickables") or []]
        return None

    def expert_actions(self) -> list[str]:
        """The server's oracle solution of the current task (only `agentrm envserve` offers one)."""
        if not self.dialect.expert:
            raise NotImplementedError(f"agentgym: the {self.dialect.name} server offers no expert actions")
        if self.env_id is None:
            raise RuntimeError("agentgym: call reset(seed) before expert_actions()")
        answer = self._get("expert_actions", time.monotonic() + self.http.deadline)
        if not (isinstance(answer, list) and all(isinstance(a, str) for a in answer)):
            raise AgentGymError(f"agentgym server {self.url}: GET /expert_actions failed: expected a list of "
                                f"strings, got {_one_line(json.dumps(answer), 80)}")
        return answer


register(EnvSpec(
    name="agentgym", factory=AgentGymEnv, env_type="embodied", role="held_out",
    # no paper task by name: which one it is depends on the server (the split's role check reads this field)
    stands_for="none of AgentRM's nine tasks by itself: whatever environment the AgentGym server at url= runs",
    source="a server speaking AgentGym's HTTP protocol at url= (or `agentrm envserve`)",
    description="Bridge to AgentGym's per-env HTTP servers: create/reset/step/observation/available_actions; "
                "progress = the server's reward (scaled per dialect, clamped, monotone); snapshot by replay.",
))

"""Our JAX model behind a minimal OpenAI-compatible HTTP API (standard library only).

    POST /v1/chat/completions   {"messages": [...], "n", "temperature", "top_p", "max_tokens", "stop", "seed"}
    GET  /v1/models

Requests are served by a `ThreadingHTTPServer`; model calls are serialized by
a lock (one generation at a time; the n samples of a request share one
prefill). Bad requests get a JSON error with status 400 that names the field,
in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
Unknown request fields (frequency_penalty, logprobs, ...) are ignored.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ChatServer", "RequestError", "parse_request", "start_server", "stop_server"]

log = logging.getLogger(__name__)

MAX_N = 64
MAX_BODY = 16 * 1024 * 1024
DEFAULT_MAX_TOKENS = 256
_FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


class RequestError(ValueError):
    """A bad request: `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


def _number(body: dict, key: str, default, *, lo: float, hi: float, integer: bool = False):
    value = body.get(key)
    if value is None:
        return default
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value):
        kind = "an integer" if integer else "a number"
        raise RequestError(f"'{key}' must be {kind}, got {value!r}", key)
    if not lo <= value <= hi:
        raise RequestError(f"'{key}' must be in [{lo:g}, {hi:g}], got {value!r}", key)
    return value


def parse_request(body: Any) -> dict[str, Any]:
    """Validated generation arguments of a chat-completions request body (raises RequestError)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", None)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects", "messages")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string 'role'", f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise RequestError(f"messages[{i}].content parts must all be text parts",
                                   f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string", f"messages[{i}].content")
        if m["role"] not in ("system", "user", "assistant", "developer"):
            raise RequestError(f"messages[{i}].role must be system, user or assistant, got {m['role']!r}",
                               f"messages[{i}].role")
        clean.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise RequestError("'stop' must be a string or a list of strings", "stop")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _number({key: max_tokens}, key, DEFAULT_MAX_TOKENS, lo=1, hi=1 << 20, integer=True)
    return {
        "messages": clean,
        "n": _number(body, "n", 1, lo=1, hi=MAX_N, integer=True),
        "temperature": float(_number(body, "temperature", 1.0, lo=0, hi=100)),
        "top_p": float(_number(body, "top_p", 1.0, lo=1e-9, hi=1)),
        "top_k": _number(body, "top_k", 0, lo=0, hi=1 << 20, integer=True),
        "max_tokens": max_tokens,
        "stop": [s for s in stop if s],
        "seed": _number(body, "seed", 0, lo=-(2**63), hi=2**64 - 1, integer=True) % (2**31),
    }


class ChatServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding one model; `generate` serializes model calls with a lock."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, model, tokenizer, *, model_name: str = "agentrm", max_batch: int = 8):
        from agentrm_jax.sampling.sampler import Sampler

        self.sampler = Sampler(model, tokenizer, max_batch=max_batch)
        self.model_name = model_name
        self.max_positions = int(model.config.max_position_embeddings)
        self.lock = threading.Lock()
        self.created = int(time.time())
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def chat_completion(self, body: Any) -> dict[str, Any]:
        args = parse_request(body)
        try:
            ids = self.sampler.encode(args["messages"])
        except Exception as e:  # noqa: BLE001 - a template that rejects the roles/order is the client's fault
            raise RequestError(f"the chat template cannot render these messages: {e}", "messages") from None
        if len(ids) + args["max_tokens"] > self.max_positions:
            raise RequestError(f"the prompt has {len(ids)} tokens; with max_tokens={args['max_tokens']} that "
                               f"exceeds the model's {self.max_positions} positions", "max_tokens")
        with self.lock:
            rows = self.sampler.generate_ids([ids], max_new_tokens=args["max_tokens"],
                                             temperature=args["temperature"], top_p=args["top_p"],
                                             top_k=args["top_k"], n=args["n"], stop=tuple(args["stop"]),
                                             seed=args["seed"])
        completions = rows[0]
        generated = sum(len(c.token_ids) for c in completions)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or self.model_name),
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                         "logprobs": None, "finish_reason": _FINISH.get(c.finish_reason, "stop")}
                        for i, c in enumerate(completions)],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": generated,
                      "total_tokens": len(ids) + generated},
        }

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.created,
                                            "owned_by": "agentrm_jax"}]}


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"
    server_version = "agentrm-jax"

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timed out) before the answer
            log.info("client %s left before the response", self.address_string())
            self.close_connection = True

    def _error(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": None}})

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self):  # noqa: N802 - the stdlib's name
        path = self._path()
        if path in ("/v1/models", "/models"):
            self._send(200, self.server.models())
        elif path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no route GET {path or '/'}; try POST /v1/chat/completions or GET /v1/models",
                        kind="not_found_error")

    def do_POST(self):  # noqa: N802
        path = self._path()
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route POST {path or '/'}; try POST /v1/chat/completions", kind="not_found_error")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length <= 0 or length > MAX_BODY:
            self._error(400, "the request needs a JSON body with a valid Content-Length (at most 16 MiB)")
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self._error(400, f"the body is not valid JSON: {e}")
            return
        try:
            self._send(200, self.server.chat_completion(body))
        except RequestError as e:
            self._error(e.status, str(e), e.param)
        except Exception as e:  # noqa: BLE001 - the client gets a 500 and the server keeps serving
            log.exception("chat completion failed")
            self._error(500, f"generation failed: {type(e).__name__}: {e}", kind="server_error")


def start_server(model, tokenizer, host: str = "127.0.0.1", port: int = 0, *, model_name: str = "agentrm",
                 max_batch: int = 8) -> tuple[ChatServer, threading.Thread]:
    """Serve `model` in a background thread; port 0 picks a free port (see `server.server_address`)."""
    server = ChatServer((host, port), model, tokenizer, model_name=model_name, max_batch=max_batch)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"agentrm-serve-{server.server_address[1]}", daemon=True)
    thread.start()
    return server, thread


def stop_server(server: ChatServer, thread: threading.Thread | None = None, timeout: float = 10.0) -> None:
    """Stop serving, close the socket and join the serving thread."""
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout)

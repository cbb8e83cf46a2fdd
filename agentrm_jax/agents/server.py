"""Our JAX model behind a minimal OpenAI-compatible HTTP API (standard library only).

    POST /v1/chat/completions   {"messages": [...], "n", "temperature", "top_p", "max_tokens", "stop", "seed",
                                 "stream", "stream_options": {"include_usage"}}
    GET  /v1/models

Requests are served by a `ThreadingHTTPServer`; model calls are serialized by
a lock (one generation at a time; the n samples of a request share one
prefill). Bad requests get a JSON error that names the field, in OpenAI's
shape: {"error": {"message", "type", "param", "code"}}: 400 for a bad field or
body (invalid JSON, nesting too deep, text that is not valid Unicode), 411
without a Content-Length, 413 above MAX_BODY bytes, 408 when the body does not
arrive within `read_timeout`, 401 without the right API key.
Unknown request fields (frequency_penalty, logprobs, ...) are ignored.

Every socket read and write times out after `read_timeout` seconds (30 by
default), so a client that stalls (sends headers, then nothing) frees its
thread; the timeout is per operation, not per request, so a slow but moving
upload still gets through, and generation itself is not bounded by it.
With `api_key` set, every request (health and models included) needs
`Authorization: Bearer <api_key>`, compared in constant time.

`"stream": true` answers with server-sent events as OpenAI does
(`data: {chat.completion.chunk}` lines, then `data: [DONE]`), but not token by
token: the completion is generated first, then sent per choice as a role
delta, one content delta and a finish_reason delta (see `completion_chunks`).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ChatServer", "RequestError", "completion_chunks", "parse_request", "start_server", "stop_server"]

log = logging.getLogger(__name__)

MAX_N = 64
MAX_BODY = 16 * 1024 * 1024
DEFAULT_MAX_TOKENS = 256
DEFAULT_READ_TIMEOUT = 30.0
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


def _text(value: str, param: str) -> str:
    """`value` if it is valid Unicode; JSON can carry lone surrogates ("\\ud800") that no tokenizer takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(f"'{param}' is not valid Unicode text: it holds a lone surrogate "
                           f"({value[e.start]!r} at character {e.start})", param) from None
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
        _text(content, f"messages[{i}].content")
        clean.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise RequestError("'stop' must be a string or a list of strings", "stop")
    for s in stop:
        _text(s, "stop")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(f"'stream' must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options")
    if options is not None and not (isinstance(options, dict)
                                    and isinstance(options.get("include_usage", False), bool)):
        raise RequestError("'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
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
        "stream": bool(stream),
        "include_usage": bool(stream and options and options.get("include_usage")),
    }


def completion_chunks(response: dict[str, Any], *, include_usage: bool = False) -> list[dict[str, Any]]:
    """The `chat.completion.chunk` events that stream a finished `chat.completion` response.

    Per choice: a delta {"role": "assistant", "content": ""}, its whole content in
    one delta (none if empty), then an empty delta with its finish_reason. With
    include_usage every chunk has "usage": null and a last chunk with no choices
    carries the usage, as OpenAI's `stream_options` does.
    """
    head = {"id": response["id"], "object": "chat.completion.chunk", "created": response["created"],
            "model": response["model"]}
    if include_usage:
        head["usage"] = None

    def chunk(index, delta, finish=None):
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    chunks = []
    for choice in response["choices"]:
        i, content = choice["index"], choice["message"]["content"]
        chunks.append(chunk(i, {"role": "assistant", "content": ""}))
        if content:
            chunks.append(chunk(i, {"content": content}))
        chunks.append(chunk(i, {}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": response["usage"]})
    return chunks


class ChatServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding one model; `generate` serializes model calls with a lock."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, model, tokenizer, *, model_name: str = "agentrm", max_batch: int = 8,
                 api_key: str | None = None, read_timeout: float = DEFAULT_READ_TIMEOUT):
        from agentrm_jax.sampling.sampler import Sampler

        if not (read_timeout > 0 and math.isfinite(read_timeout)):
            raise ValueError(f"read_timeout must be a positive number of seconds, got {read_timeout!r}")
        self.sampler = Sampler(model, tokenizer, max_batch=max_batch)
        self.model_name = model_name
        self._key = api_key.encode("utf-8", "surrogateescape") if api_key else None  # never logged or echoed
        self.read_timeout = float(read_timeout)
        self.max_positions = int(model.config.max_position_embeddings)
        self.lock = threading.Lock()
        self.created = int(time.time())
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header value carries the API key (always True without a key)."""
        if self._key is None:
            return True
        scheme, _, token = (header or "").strip().partition(" ")
        # headers arrive decoded as latin-1: encoding back gives the bytes the client sent
        given = token.strip().encode("latin-1", "replace")
        return hmac.compare_digest(given, self._key) and scheme.lower() == "bearer"

    def chat_completion(self, body: Any, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """The chat.completion response for a request body (`args`: its `parse_request`, if done already)."""
        args = parse_request(body) if args is None else args
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
            "model": body["model"] if isinstance(body.get("model"), str) and body["model"] else self.model_name,
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

    def setup(self):
        self.timeout = self.server.read_timeout  # StreamRequestHandler puts it on the socket: a stalled client frees us
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):  # the client left (or stopped reading)
            log.info("client %s left before the response", self.address_string())
            self.close_connection = True

    def _send_events(self, events: list[dict]) -> None:
        """200 with server-sent events (`data: <json>` each, then `data: [DONE]`), chunked transfer encoding."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for data in [json.dumps(e).encode() for e in events] + [b"[DONE]"]:
                piece = b"data: " + data + b"\n\n"
                self.wfile.write(b"%X\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            log.info("client %s left during the event stream", self.address_string())
            self.close_connection = True

    def _error(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
               code: str | None = None, close: bool = False, headers: dict[str, str] | None = None):
        if close:  # the body (if any) was not read: the connection cannot carry another request
            self.close_connection = True
        self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": code}}, headers)

    def _skip_body(self) -> None:
        """Read and drop the body of a request answered without it, so the connection can carry the next one
        (closing with unread bytes could reset it under the answer); a bad or oversized length closes it."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if 0 <= length <= MAX_BODY and self.headers.get("Transfer-Encoding") is None:
            try:
                if len(self.rfile.read(length)) == length:
                    return
            except TimeoutError:
                pass
        self.close_connection = True

    def _authorized(self) -> bool:
        if self.server.authorized(self.headers.get("Authorization")):
            return True
        given = "a wrong API key" if self.headers.get("Authorization") else "no API key"
        self._skip_body()
        self._error(401, f"this server needs an API key (Authorization: Bearer <key>); the request had {given}",
                    code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return False

    def _read_json(self) -> tuple[bool, Any]:
        """(True, the parsed body), or (False, None) after answering with an error."""
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self._error(411, "send the body with a Content-Length (chunked bodies are not supported)", close=True)
            return False, None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length > MAX_BODY:
            self._error(413, f"the body has {length} bytes; at most {MAX_BODY} are accepted", close=True)
            return False, None
        if length <= 0:
            self._error(411 if self.headers.get("Content-Length") is None else 400,
                        "the request needs a JSON body with a valid Content-Length", close=True)
            return False, None
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            self._error(408, f"the body did not arrive: nothing came for {self.server.read_timeout:g} s", close=True)
            return False, None
        if len(raw) < length:  # the client closed its side early
            self._error(400, f"the body ended after {len(raw)} of {length} bytes (Content-Length)", close=True)
            return False, None
        try:
            return True, json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self._error(400, f"the body is not valid JSON: {e}")
        except RecursionError:  # e.g. 200k nested "[": the JSON parser's recursion limit
            self._error(400, "the body is nested too deeply to parse (JSON arrays/objects nested over ~1000 levels)")
        return False, None

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self):  # noqa: N802 - the stdlib's name
        if not self._authorized():
            return
        path = self._path()
        if path in ("/v1/models", "/models"):
            self._send(200, self.server.models())
        elif path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no route GET {path or '/'}; try POST /v1/chat/completions or GET /v1/models",
                        kind="not_found_error")

    def do_POST(self):  # noqa: N802
        if not self._authorized():
            return
        path = self._path()
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._skip_body()
            self._error(404, f"no route POST {path or '/'}; try POST /v1/chat/completions", kind="not_found_error")
            return
        ok, body = self._read_json()
        if not ok:
            return
        try:
            args = parse_request(body)
            response = self.server.chat_completion(body, args)
        except RequestError as e:
            self._error(e.status, str(e), e.param)
            return
        except Exception as e:  # noqa: BLE001 - the client gets a 500 and the server keeps serving
            log.exception("chat completion failed")
            self._error(500, f"generation failed: {type(e).__name__}: {e}", kind="server_error")
            return
        if args["stream"]:
            self._send_events(completion_chunks(response, include_usage=args["include_usage"]))
        else:
            self._send(200, response)


def start_server(model, tokenizer, host: str = "127.0.0.1", port: int = 0, *, model_name: str = "agentrm",
                 max_batch: int = 8, api_key: str | None = None,
                 read_timeout: float = DEFAULT_READ_TIMEOUT) -> tuple[ChatServer, threading.Thread]:
    """Serve `model` in a background thread; port 0 picks a free port (see `server.server_address`).

    api_key: if set, every request needs `Authorization: Bearer <api_key>` (else 401).
    read_timeout: seconds any socket read or write may wait before the connection is dropped.
    """
    server = ChatServer((host, port), model, tokenizer, model_name=model_name, max_batch=max_batch,
                        api_key=api_key, read_timeout=read_timeout)
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

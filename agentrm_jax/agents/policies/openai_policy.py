"""`OpenAIPolicy`: any OpenAI-compatible /v1/chat/completions server (vLLM, llama.cpp, `agentrm serve`, ...)
as a policy, standard library only, with bounded retries and clear `PolicyServerError`s. The API key is
read from an environment variable at request time and never stored, logged or echoed."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentrm_jax.agents.policies.base import Messages, PolicyStats, _check_args
from agentrm_jax.agents.prompts import STOP_STRINGS, cut_after_action

__all__ = ["OpenAIPolicy", "PolicyServerError"]


class PolicyServerError(RuntimeError, ValueError):
    """The policy server could not be reached, timed out, or answered with an error.

    Also a ValueError, so the `agentrm` CLI prints it as one line (the URL, what failed, how long it tried).
    """


def _count_field(d: dict, name: str) -> int:
    """A non-negative token count from a server's usage dict (0 when missing or not a number)."""
    try:
        return max(int(d.get(name) or 0), 0)
    except (TypeError, ValueError):
        return 0


class OpenAIPolicy:
    """A policy served by an OpenAI-compatible chat-completions endpoint.

    base_url: e.g. "http://127.0.0.1:8000/v1" (".../v1/chat/completions" and a
      bare "http://host:port" are accepted too).
    The key in `os.environ[api_key_env]` (if set) is sent as a bearer token;
    it is read per request and masked out of every error message.
    Connection errors, timeouts, 429 and 5xx are retried `max_retries` times
    with exponential backoff (backoff, 2*backoff, ...); other 4xx fail at once.
    timeout: seconds one attempt may wait on the socket (to connect, or for
      each read of the answer).
    deadline_s: seconds one request may take in all, attempts, retries and
      backoff included (default 180 s); no retry starts after it, and the last
      attempt's timeout is cut to what is left. A request that fails raises one
      PolicyServerError naming the URL, the last failure (connection refused,
      timed out, HTTP status with a body excerpt), the attempts and the time.
    `n` goes into one request; a server that returns fewer choices is asked
    again, one sample per request, for the rest.
    concurrency: how many contexts of one `sample` call are requested at
      once (threads; 1 = one after another). A server with parallel slots
      (vLLM, llama.cpp's `-np`) then decodes them together, as `JaxPolicy`
      batches rows. Answers keep the contexts' order; the first failure raises
      (after the requests already in flight end; those not started are dropped).
    Stats: `prompt_tokens` and `generated_tokens` as the server's `usage`
    reports them; `cache_hit_tokens` from `usage.prompt_tokens_details.
    cached_tokens` where the server reports it (vLLM, llama.cpp, OpenAI), and
    `prefilled_tokens` = prompt less cached tokens.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60,
                 max_retries: int = 3, backoff: float = 0.5, deadline_s: float = 180.0, max_tokens: int = 96,
                 top_p: float | None = None, stop: Sequence[str] = STOP_STRINGS, concurrency: int = 1):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if not (timeout > 0 and deadline_s > 0):
            raise ValueError(f"timeout and deadline_s must be positive seconds, got {timeout!r} and {deadline_s!r}")
        self.base_url = base_url.rstrip("/")
        self.url = self._endpoint(self.base_url, "chat/completions")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.deadline_s = float(deadline_s)
        self.max_tokens = int(max_tokens)
        self.top_p = top_p
        self.stop = list(stop)
        self.concurrency = concurrency
        self.stats = PolicyStats()
        self._stats_lock = threading.Lock()  # requests of one call may run in threads

    def __repr__(self) -> str:
        return (f"OpenAIPolicy(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"timeout={self.timeout}, max_retries={self.max_retries}, deadline_s={self.deadline_s}, "
                f"concurrency={self.concurrency})")

    @staticmethod
    def _endpoint(base: str, what: str) -> str:
        if base.endswith("/chat/completions"):
            base = base[: -len("/chat/completions")]
        if not base.endswith("/v1"):
            base += "/v1"
        return f"{base}/{what}"

    # -- HTTP ---------------------------------------------------------------------------------------
    def _key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def _mask(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    def _attempt(self, req: urllib.request.Request, timeout: float, end: float) -> bytes:
        """The body of one answered attempt; a timeout also once the answer's reads pass `end`."""
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            pieces = []
            while piece := resp.read(1 << 16):
                pieces.append(piece)
                if time.monotonic() > end:  # a server trickling its answer does not stretch the deadline
                    raise TimeoutError
            return b"".join(pieces)

    def _request(self, method: str, url: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        start = time.monotonic()
        end = start + self.deadline_s
        attempt, last, out_of_time = 0, "", False
        while attempt <= self.max_retries:
            if attempt:
                pause = self.backoff * 2 ** (attempt - 1)
                if time.monotonic() + pause >= end:
                    out_of_time = True
                    break
                time.sleep(pause)
            attempt += 1
            self._count(attempts=1)
            wait = max(min(self.timeout, end - time.monotonic()), 0.001)
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                body = self._attempt(req, wait, end)
            except urllib.error.HTTPError as e:
                try:
                    excerpt = e.read(500).decode("utf-8", "replace")
                except Exception:  # noqa: BLE001 - the body is only for the message
                    excerpt = ""
                last = f"{method} {url} returned status {e.code}: {excerpt.strip()[:300]!r}"
                if e.code == 429 or e.code >= 500:
                    continue
                raise PolicyServerError(self._mask(last)) from None
            except (TimeoutError, socket.timeout):
                last = f"{method} {url} timed out after {wait:.3g} s"
                continue
            except urllib.error.URLError as e:
                last = self._unreachable(method, url, e.reason, wait)
                continue
            except (OSError, http.client.HTTPException) as e:  # reset mid-answer, a broken or non-HTTP answer
                last = self._unreachable(method, url, e, wait)
                continue
            self._count(requests=1)
            try:
                return json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                raise PolicyServerError(self._mask(
                    f"{method} {url} returned invalid JSON: {body[:200].decode('utf-8', 'replace')!r}")) from None
        out_of_time = out_of_time or time.monotonic() >= end
        why = (f"deadline_s={self.deadline_s:g} reached" if out_of_time
               else f"gave up after {self.max_retries} retr{'y' if self.max_retries == 1 else 'ies'}")
        tried = f"{attempt} attempt{'s' if attempt > 1 else ''} in {time.monotonic() - start:.1f} s"
        raise PolicyServerError(self._mask(f"{last} ({tried}; {why})"))

    @staticmethod
    def _unreachable(method: str, url: str, reason, wait: float) -> str:
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return f"{method} {url} timed out after {wait:.3g} s"
        if isinstance(reason, ConnectionRefusedError):
            return f"{url} is unreachable (connection refused: is the server running?)"
        if isinstance(reason, (ConnectionError, http.client.HTTPException)):  # reset, closed, not HTTP
            return f"{url} is unreachable ({type(reason).__name__}: {reason})"
        return f"{url} is unreachable ({reason})"

    def models(self) -> list[str]:
        """Model ids the server lists at GET /v1/models."""
        data = self._request("GET", self._endpoint(self.base_url, "models"))
        return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]

    def _complete(self, messages: Messages, n: int, temperature: float, seed: int) -> list[str]:
        payload: dict[str, Any] = {"model": self.model, "messages": list(messages), "n": n,
                                   "temperature": temperature, "max_tokens": self.max_tokens, "seed": seed}
        if self.stop:
            payload["stop"] = self.stop[:4]
        if self.top_p is not None:
            payload["top_p"] = self.top_p
        data = self._request("POST", self.url, payload)
        choices = data.get("choices")
        if not isinstance(choices, list):
            raise PolicyServerError(self._mask(f"POST {self.url} answered without a 'choices' list: "
                                               f"{json.dumps(data)[:200]!r}"))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt = _count_field(usage, "prompt_tokens")
        details = usage.get("prompt_tokens_details")
        cached = min(_count_field(details, "cached_tokens"), prompt) if isinstance(details, dict) else 0
        self._count(prompt_tokens=prompt, prefilled_tokens=prompt - cached, cache_hit_tokens=cached,
                    generated_tokens=_count_field(usage, "completion_tokens"), prefills=1)
        texts = []
        for c in sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0):
            message = c.get("message") if isinstance(c, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            texts.append(content if isinstance(content, str) else "")
        return texts

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]:
        _check_args(contexts, n, temperature)

        def one(i: int) -> list[str]:
            base = (int(seed) + 100_003 * i) % (2**31)
            texts = self._complete(contexts[i], n, temperature, base)[:n]
            k = 0
            while len(texts) < n:  # servers that ignore n
                k += 1
                texts += self._complete(contexts[i], 1, temperature, (base + k) % (2**31))[:1]
            return [cut_after_action(t) for t in texts]

        workers = min(self.concurrency, len(contexts))
        if workers > 1:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-policy")
            try:
                out = list(pool.map(one, range(len(contexts))))  # re-raises the first failure, in order
            finally:  # after a failure, requests not yet started are dropped; those in flight run out
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            out = [one(i) for i in range(len(contexts))]
        self._count(calls=1, contexts=len(contexts), samples=len(contexts) * n)
        return out

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

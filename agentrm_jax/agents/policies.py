"""Policies: things that propose the agent's next step ("Thought: ...\\nAction: ...") for chat contexts.

Every policy implements `PolicySampler.sample(contexts, n, temperature, seed)`:
for each context (a list of chat messages, see `prompts.build_messages`) it
returns n step texts. Implementations:

- `JaxPolicy`: our in-process JAX model through `Sampler` (the n samples of a
  context share one prefill). Decoding stops as soon as a complete action line
  has been generated (checked between decode chunks together with the stop
  strings "\\nObservation" / "\\nThought"), and the text is cut right after the
  first action line.
- `OpenAIPolicy`: any OpenAI-compatible /v1/chat/completions server (vLLM,
  llama.cpp, `agentrm serve`, ...), standard library only, with bounded
  retries and clear `PolicyServerError`s. The API key is read from an
  environment variable at request time and never stored, logged or echoed.
- `ScriptedPolicy`: a fixed action list (indexed by turn) or a callable (e.g.
  an env's expert plan), with optional seeded noise; `RandomPolicy`: uniform
  over the available actions. Both are deterministic for a given seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from agentrm_jax.agents.prompts import (STOP_STRINGS, action_line_complete, count_steps, cut_after_action,
                                        omitted_steps, shorten_context, task_actions)
from agentrm_jax.records import format_step

__all__ = [
    "JaxPolicy", "OpenAIPolicy", "PolicySampler", "PolicyServerError", "PolicyStats", "RandomPolicy",
    "SamplerPolicy", "ScriptedPolicy", "context_key", "turn_of",
]

Messages = list[dict[str, str]]


@runtime_checkable
class PolicySampler(Protocol):
    """Proposes next steps: n step texts (thought + action) per chat context."""

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]: ...


@dataclasses.dataclass
class PolicyStats:
    """Cost accounting of a policy (cumulative over calls)."""

    calls: int = 0  # sample() calls
    contexts: int = 0  # contexts sampled for
    samples: int = 0  # step texts returned
    prefills: int = 0  # prompt prefills (JaxPolicy: one per context, shared by its n samples)
    prompt_tokens: int = 0  # prompt tokens prefilled (OpenAIPolicy: as the server's usage reports)
    generated_tokens: int = 0  # tokens generated
    requests: int = 0  # HTTP requests that got an answer (OpenAIPolicy)
    attempts: int = 0  # HTTP attempts, retries included (OpenAIPolicy)


def turn_of(context: Messages) -> int:
    """The turn number of a context: how many steps of the task came before it (example turns excluded,
    steps left out by `build_messages(max_steps=...)` included)."""
    return count_steps(context) + omitted_steps(context)


def _check_args(contexts, n, temperature):
    if isinstance(contexts, (str, dict)) or (len(contexts) and isinstance(contexts[0], dict)):
        raise ValueError("contexts must be a list of chat message lists; wrap a single context in a list")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")


# ------------------------------------------------------------------------------------------- JAX


def _action_sampler(model, tokenizer, max_batch):
    """A `Sampler` that also stops a row once its action line is complete (so decoding ends right after it)."""
    from agentrm_jax.sampling.sampler import Sampler

    return Sampler(model, tokenizer, max_batch=max_batch, stop_when=action_line_complete)


class JaxPolicy:
    """Our JAX model as a policy (greedy at temperature 0).

    Contexts too long for the model are cut by `prompts.shorten_context` (the
    oldest steps, then the worked example) until the prompt fits. Samples use
    the model's weights as they are at each `sample` call (updates made after
    construction, adapters added in place included), and a context's samples
    depend only on (seed, context, sample index), not on the other contexts of
    the call; a context repeated in one call gets fresh samples (see
    `sampling.sampler`). `stats.generated_tokens` counts the tokens of each
    completion up to the newline that ends its action line (or its stop string).
    """

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 96, max_batch: int = 8, top_p: float = 1.0,
                 top_k: int = 0, stop: Sequence[str] = STOP_STRINGS):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.sampler = _action_sampler(model, tokenizer, max_batch)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.top_p, self.top_k = top_p, top_k
        self.stop = tuple(stop)
        self.max_positions = int(model.config.max_position_embeddings)
        self._stats = PolicyStats()

    @classmethod
    def from_pretrained(cls, path=None, *, dtype: str = "float32", **kwargs) -> JaxPolicy:
        """Load a model (default: the bundled SmolLM2-135M-Instruct GGUF) and wrap it."""
        from agentrm_jax.models import bundled_model_path, from_pretrained

        model, tokenizer = from_pretrained(path or bundled_model_path(), dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    @property
    def stats(self) -> PolicyStats:
        s = self.sampler.stats
        return dataclasses.replace(self._stats, prefills=s.prefill_rows, generated_tokens=s.generated_tokens)

    def _encode(self, context: Messages) -> list[int]:
        messages = list(context)
        budget = self.max_positions - self.max_new_tokens
        while True:
            ids = self.sampler.encode(messages)
            if len(ids) <= budget:
                return ids
            shorter = shorten_context(messages)  # the oldest step first, then the worked example
            if shorter is None:
                raise ValueError(f"the task prompt alone has {len(ids)} tokens; the model allows "
                                 f"{self.max_positions} positions with max_new_tokens={self.max_new_tokens}")
            messages = shorter

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]:
        _check_args(contexts, n, temperature)
        if not contexts:
            return []
        ids = [self._encode(c) for c in contexts]
        rows = self.sampler.generate_ids(ids, max_new_tokens=self.max_new_tokens, temperature=temperature,
                                         top_p=self.top_p, top_k=self.top_k, n=n, stop=self.stop,
                                         seed=int(seed) % (2**31))
        self._stats.calls += 1
        self._stats.contexts += len(contexts)
        self._stats.samples += len(contexts) * n
        self._stats.prompt_tokens += sum(len(i) for i in ids)
        return [[cut_after_action(c.text) for c in row] for row in rows]


# ---------------------------------------------------------------------------------------- OpenAI


class PolicyServerError(RuntimeError, ValueError):
    """The policy server could not be reached, timed out, or answered with an error.

    Also a ValueError, so the `agentrm` CLI prints it as one line (the URL, what failed, how long it tried).
    """


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
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60,
                 max_retries: int = 3, backoff: float = 0.5, deadline_s: float = 180.0, max_tokens: int = 96,
                 top_p: float | None = None, stop: Sequence[str] = STOP_STRINGS):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
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
        self.stats = PolicyStats()

    def __repr__(self) -> str:
        return (f"OpenAIPolicy(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"timeout={self.timeout}, max_retries={self.max_retries}, deadline_s={self.deadline_s})")

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
            self.stats.attempts += 1
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
            self.stats.requests += 1
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
        usage = data.get("usage") or {}
        self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.stats.generated_tokens += int(usage.get("completion_tokens") or 0)
        self.stats.prefills += 1
        texts = []
        for c in sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0):
            message = c.get("message") if isinstance(c, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            texts.append(content if isinstance(content, str) else "")
        return texts

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]:
        _check_args(contexts, n, temperature)
        out = []
        for i, context in enumerate(contexts):
            base = (int(seed) + 100_003 * i) % (2**31)
            texts = self._complete(context, n, temperature, base)[:n]
            k = 0
            while len(texts) < n:  # servers that ignore n
                k += 1
                texts += self._complete(context, 1, temperature, (base + k) % (2**31))[:1]
            out.append([cut_after_action(t) for t in texts])
        self.stats.calls += 1
        self.stats.contexts += len(contexts)
        self.stats.samples += len(contexts) * n
        return out


# ------------------------------------------------------------------------------------ scripted/random


def _rng(*parts) -> random.Random:
    return random.Random("/".join(str(p) for p in parts))  # str seeds hash with sha512: stable across runs


def context_key(messages: Messages) -> str:
    """A fingerprint of a chat context (equal contexts, equal keys): sha256 hex of its roles and contents."""
    blob = json.dumps([[m.get("role"), m.get("content")] for m in messages], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _digest(context: Messages) -> str:
    """A stable fingerprint of a context, so equal contexts draw equal samples wherever they sit in a batch."""
    return context_key(context)[:16]


ActionsSource = Sequence[str] | Callable[[Messages], Sequence[str] | None] | None


def _actions(source: ActionsSource, context: Messages) -> list[str]:
    if source is None:
        return []
    got = source(context) if callable(source) else source
    return list(got or [])


class ScriptedPolicy:
    """Fixed or expert actions, with probability `noise` replaced by a random one.

    script: a list of actions (turn t of a context plays `script[t]`; past the
      end, `default`) or a callable `context -> action`.
    actions: what noise picks from: a list, or a callable `context -> list`
      (e.g. `lambda ctx: env.available_actions()`).
    thought: the thought written before each action ("" for none).
    The same (policy seed, sample seed, context, sample index) always gives the same text.
    """

    def __init__(self, script: Sequence[str] | Callable[[Messages], str], *, noise: float = 0.0,
                 actions: ActionsSource = None, seed: int = 0, thought: str = "", default: str = ""):
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        if noise > 0 and actions is None:
            raise ValueError("noise > 0 needs `actions` to draw random actions from")
        self.script = script if callable(script) else list(script)
        self.noise, self.actions, self.seed = float(noise), actions, int(seed)
        self.thought, self.default = thought, default
        self.stats = PolicyStats()

    @classmethod
    def expert(cls, env, *, noise: float = 0.0, seed: int = 0, thought: str = "",
               replan: bool | None = None) -> ScriptedPolicy:
        """The env's expert, with probability `noise` replaced by a random action.

        replan=True (the default where the env has `expert_actions_from_here`):
        for each context the actions it holds are replayed on `env` (from
        `reset(env.seed)`) and the first action of a plan from the state reached
        is played, so after a noisy step the expert recovers; noise draws from
        `env.available_actions()` in that state. replan=False: the plan from the
        task's start (`expert_actions()`) is played by turn number and does not
        fit any more after a deviation. The policy follows whichever task `env`
        was reset to; it owns `env` (replanning steps it).
        """
        replan = hasattr(env, "expert_actions_from_here") if replan is None else replan
        if replan and not hasattr(env, "expert_actions_from_here"):
            raise ValueError(f"{getattr(env, 'name', 'env')} cannot plan from an arbitrary state "
                             "(no expert_actions_from_here); use replan=False")

        cache: dict[tuple, tuple[str, list[str]]] = {}  # (seed, actions so far) -> (expert action, choices)

        def at(context: Messages) -> tuple[str, list[str]]:
            if omitted_steps(context):
                raise ValueError("the replanning expert needs whole contexts to replay the task's actions, but "
                                 "this one omits early steps (max_history / max_steps is set); use "
                                 "max_history=None or replan=False")
            key = (env.seed, tuple(task_actions(context)))
            if key not in cache:
                if len(cache) > 100_000:  # bound memory on very long runs
                    cache.clear()
                env.reset(env.seed)
                for action in key[1]:
                    if env.done:
                        break
                    env.step(action)
                plan = env.expert_actions_from_here()
                cache[key] = (plan[0] if plan else "", env.available_actions() or sorted(set(env.expert_actions())))
            return cache[key]

        def plan(context: Messages) -> str:
            if replan:
                return at(context)[0]
            actions = env.expert_actions()
            t = turn_of(context)
            return actions[t] if t < len(actions) else ""

        def available(context: Messages):
            if replan:
                return at(context)[1]
            return env.available_actions() or sorted(set(env.expert_actions()))

        return cls(plan, noise=noise, actions=available, seed=seed, thought=thought)

    def _action(self, context: Messages, seed: int, j: int) -> str:
        t = turn_of(context)
        rng = _rng("scripted", self.seed, seed, _digest(context), j)
        if self.noise > 0 and rng.random() < self.noise:
            choices = _actions(self.actions, context)
            if choices:
                return rng.choice(choices)
        if callable(self.script):
            return self.script(context)
        return self.script[t] if t < len(self.script) else self.default

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]:
        _check_args(contexts, n, temperature)
        self.stats.calls += 1
        self.stats.contexts += len(contexts)
        self.stats.samples += len(contexts) * n
        return [[format_step(self.thought, self._action(c, seed, j)) for j in range(n)] for c in contexts]


class RandomPolicy:
    """Uniformly random actions from `actions_fn(context)` (a callable, or a fixed list)."""

    def __init__(self, actions_fn: ActionsSource, *, seed: int = 0, thought: str = ""):
        self.actions_fn, self.seed, self.thought = actions_fn, int(seed), thought
        self.stats = PolicyStats()

    @classmethod
    def for_env(cls, env, *, seed: int = 0) -> RandomPolicy:
        """Random over `env.available_actions()` (the expert plan's actions where the set is open-ended)."""
        return cls(lambda context: env.available_actions() or sorted(set(env.expert_actions())), seed=seed)

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]:
        _check_args(contexts, n, temperature)
        out = []
        for context in contexts:
            choices = _actions(self.actions_fn, context)
            key = _digest(context)
            row = []
            for j in range(n):
                rng = _rng("random", self.seed, seed, key, j)
                row.append(format_step(self.thought, rng.choice(choices) if choices else ""))
            out.append(row)
        self.stats.calls += 1
        self.stats.contexts += len(contexts)
        self.stats.samples += len(contexts) * n
        return out


class SamplerPolicy:
    """A minimal `PolicySampler` over an in-process model: plain `Sampler.generate`, no step cutting.

    For judges (which need free-form replies, not agent steps) and tests.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 64, *, max_batch: int = 8):
        from agentrm_jax.sampling.sampler import Sampler

        self.sampler = Sampler(model, tokenizer, max_batch=max_batch)
        self.max_new_tokens = int(max_new_tokens)

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]:
        if not contexts:
            return []
        out = self.sampler.generate(list(contexts), max_new_tokens=self.max_new_tokens, temperature=temperature,
                                    n=n, seed=seed)
        return [[c.text for c in row] for row in out]

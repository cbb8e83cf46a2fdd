"""`EvalConfig`: what `agentrm eval` runs, read from YAML and overridden by command-line flags.

A config names a policy, a reward model, environments, seeds and search
methods; the runner plays every (env, method, seed) episode once. Example
(configs/eval_scripted.yaml):

    policy: expert          # bundled | expert | random | MODEL_PATH | http(s)://HOST:PORT/v1[#model]
    noise: 0.5              # expert: probability of a random action each turn
    rm: oracle              # oracle | random[:SEED] | [explicit:]RM_DIR | judge:(bundled|PATH|URL[#model])
                            # | implicit:POLICY,REFERENCE
    envs: [maze, pddl]
    split: test
    seeds: 10               # a count (seeds seed_offset .. seed_offset+9) or a list [0, 3, 7]
    methods:
      greedy: true
      best_of_n: [1, 2, 4]  # N
      beam: [2x2]           # W x K: beams kept x candidate steps per beam and turn
    temperature: 1.0
    max_turns: 8
    output: results/eval_scripted.jsonl

Everything here is checked when the config is built (unknown keys, env
names, methods, N, WxK, spec syntax), before any model is loaded; file paths
in specs are checked by the runner before it loads anything.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from agentrm_jax.agents.factory import check_drop_tokens, check_kv_cache_mb
from agentrm_jax.models.offline_models import OFFLINE_MODELS
from agentrm_jax.yaml_config import check_keys, read_mapping

__all__ = ["EvalConfig", "Method", "parse_methods"]

METHODS = ("greedy", "best_of_n", "beam")
_ALIASES = {"greedy": "greedy", "best_of_n": "best_of_n", "bon": "best_of_n", "beam": "beam", "beam_search": "beam"}
_SHAPE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
MODEL_POLICIES = ("bundled", *OFFLINE_MODELS)  # models named, not given by path (qwen2.5-coder-0.5b)
TASK_POLICIES = ("expert", "random")  # built per task from an env reset to that task
DEFAULT_MAX_NEW_TOKENS = 96


@dataclass(frozen=True, order=True)
class Method:
    """One search method with its size: greedy, Best-of-N with `n` samples, or beam W x K.

    width (W) and expansions (K) are 0 unless the method is beam; n is 0 unless best_of_n.
    """

    name: str
    n: int = 0
    width: int = 0
    expansions: int = 0

    def __post_init__(self):
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r}; use one of {', '.join(METHODS)}")
        if self.name == "best_of_n" and self.n < 1:
            raise ValueError(f"best_of_n needs N >= 1, got {self.n}")
        if self.name == "beam" and (self.width < 1 or self.expansions < 1):
            raise ValueError(f"beam needs W >= 1 and K >= 1, got {self.width}x{self.expansions}")

    @property
    def label(self) -> str:
        """How tables name it: "greedy", "best_of_n N=4", "beam 2x2"."""
        if self.name == "best_of_n":
            return f"best_of_n N={self.n}"
        if self.name == "beam":
            return f"beam {self.width}x{self.expansions}"
        return "greedy"

    @property
    def spec(self) -> str:
        """The text form `parse_methods` reads back: "greedy", "best_of_n=4", "beam=2x2"."""
        if self.name == "best_of_n":
            return f"best_of_n={self.n}"
        if self.name == "beam":
            return f"beam={self.width}x{self.expansions}"
        return "greedy"


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{what} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return n


def _shape(value: Any) -> tuple[int, int]:
    m = _SHAPE.match(str(value)) if isinstance(value, str) else None
    if m is None or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"beam shape must be WxK with W, K >= 1 (e.g. 2x2: keep 2 beams, sample 2 steps "
                         f"per beam), got {value!r}")
    return int(m.group(1)), int(m.group(2))


def _method_values(name: str, values: Any) -> list[Method]:
    canonical = _ALIASES.get(str(name).strip().lower())
    if canonical is None:
        raise ValueError(f"unknown method {name!r}; use greedy, best_of_n (N list) or beam (WxK list)")
    if canonical == "greedy":
        if values in (None, True, "", []):
            return [Method("greedy")]
        if values is False:
            return []
        raise ValueError(f"greedy takes no sizes (write `greedy: true` or just `greedy`), got {values!r}")
    if values is None or values is True or values == "":
        example = "N values, e.g. best_of_n: [1, 2, 4]" if canonical == "best_of_n" else "WxK shapes, e.g. beam: [2x2]"
        raise ValueError(f"{canonical} needs sizes: {example}")
    if values is False:
        return []
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    elif not isinstance(values, (list, tuple)):
        values = [values]
    if canonical == "best_of_n":
        return [Method("best_of_n", n=_positive_int(v, "best_of_n N")) for v in values]
    return [Method("beam", width=w, expansions=k) for w, k in map(_shape, values)]


def parse_methods(spec: Any) -> tuple[Method, ...]:
    """Methods from any of the accepted forms, in order, duplicates dropped.

    - a mapping: `{greedy: true, best_of_n: [1, 2, 4], beam: [2x2, 4x4]}`
    - a list of strings and/or one-key mappings: `[greedy, "best_of_n=1,2,4", {beam: [2x2]}]`
    - one string: `"greedy"`, `"best_of_n=4"`, `"beam=2x2,4x4"` (what `--methods` takes, one per word)
    """
    items: list[tuple[str, Any]] = []
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        for entry in [spec] if isinstance(spec, str) else list(spec or []):
            if isinstance(entry, dict):
                items += list(entry.items())
            elif isinstance(entry, str):
                name, sep, values = entry.partition("=")
                if not sep:
                    name, sep, values = entry.partition(":")
                items.append((name.strip(), values.strip() if sep else None))
            else:
                raise ValueError(f"a method is a string like 'greedy', 'best_of_n=4' or 'beam=2x2', got {entry!r}")
    out: list[Method] = []
    for name, values in items:
        for m in _method_values(name, values):
            if m not in out:
                out.append(m)
    return tuple(out)


def _check_policy(spec: str) -> None:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"policy must be a non-empty string, got {spec!r}")
    if spec in MODEL_POLICIES + TASK_POLICIES or spec.startswith(("http://", "https://")):
        return
    if spec.startswith(("/", ".", "~")) or "/" in spec or spec.endswith(".gguf"):
        return  # a model path; existence is checked by the runner before loading
    raise ValueError(f"policy must be bundled, expert, random, a model path (HF directory or .gguf) or an "
                     f"http(s):// URL of an OpenAI-compatible server (URL#model to pick a model), got {spec!r}")


def _check_rm(spec: str) -> None:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"rm must be a non-empty string, got {spec!r}")
    kind, sep, rest = spec.partition(":")
    if spec == "oracle" or (kind == "random" and not sep) or spec.startswith(("/", ".", "~")):
        return
    if kind == "random":
        try:
            int(rest)
        except ValueError:
            raise ValueError(f"rm random:SEED needs an integer seed, got {spec!r}") from None
        return
    if kind in ("explicit", "judge") and rest:
        return
    if kind == "implicit":
        if len([p for p in rest.split(",") if p.strip()]) != 2:
            raise ValueError(f"rm implicit:POLICY,REFERENCE needs two model paths separated by a comma, "
                             f"got {spec!r}")
        return
    if not sep and "/" in spec:
        return  # a relative RM directory such as results/rm
    raise ValueError(f"rm must be oracle, random[:SEED], an explicit RM directory (or explicit:DIR), "
                     f"judge:(bundled|MODEL_PATH|URL[#model]) or implicit:POLICY,REFERENCE, got {spec!r}")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """An evaluation: every env x method x seed, played once, one JSONL row each.

    policy: who acts. bundled (the bundled SmolLM2-135M-Instruct), expert (the env's own solver, see
      `noise`), random (uniform over valid actions), a model path (HF directory or .gguf, run in-process)
      or the URL of an OpenAI-compatible server (`http://HOST:PORT/v1`, `...#model` to name the model).
    noise: expert only: probability in [0, 1] that a turn plays a random valid action instead of the plan.
    policy_seed: seed of the expert's noise and of the random policy (the task seed also enters every draw).
    max_new_tokens: model and server policies: tokens generated per step at most.
    kv_cache_mb: in-process model policies: MB of prefix KV cache (0: off, the default), so a turn prefills
      only what its context added to earlier ones; exact, so it changes costs, not rows' actions or keys.
    concurrency: served policies: requests in flight at once (a lockstep turn's contexts go to the server
      together; set it to the server's parallel slots). Part of no key: answers are the same requests.
    drop_tokens: in-process model policies: the block, in tokens, in which a context longer than the model's
      window loses its oldest steps (`JaxPolicy`; None: a quarter of the window). It changes what the model
      sees past the window, so a value other than None is part of the policy label (and of row keys).
    rm: what scores Best-of-N and beam candidates (greedy uses none). oracle (the env's progress + success:
      an upper bound), random[:SEED] (chance), an explicit RM directory (`agentrm train` output or an HF
      sequence classifier; `explicit:DIR` also works), judge:bundled|MODEL_PATH|URL[#model] (LLM as a
      judge, 0-10) or implicit:POLICY,REFERENCE (implicit PRM from two model paths).
    rm_batch_size: trajectories per RM forward pass (learned RMs).
    envs: registered environment names (`agentrm_jax.envs.registered()`), in table order.
    split: task split, "test" (default) or "train".
    seeds: a count C (tasks seed_offset .. seed_offset + C - 1) or an explicit list of task seeds.
    seed_offset: added to every seed (to run a later block of tasks).
    methods: greedy, best_of_n with an N list, beam with a WxK list (see `parse_methods`); the runner
      plays each size as its own method.
    temperature: sampling temperature of Best-of-N and beam candidates (greedy always uses 0).
    max_turns: turns per episode at most (None: the env's own limit).
    output: the JSONL file rows are appended to (resumable: episodes already there are skipped).
    workers: processes playing episodes in parallel (each loads its own policy and RM once).
    lockstep: greedy episodes of one env played together, up to this many (a model or served policy
      then decodes their contexts in one batched call per turn); 1 plays them one at a time. Costs of
      such episodes are shared out (`search.greedy.split_costs`); their actions equal one-at-a-time
      play up to float rounding of the batched forward.
    """

    policy: str = "expert"
    noise: float = 0.0
    policy_seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    kv_cache_mb: float = 0.0
    concurrency: int = 1
    drop_tokens: int | None = None
    rm: str = "oracle"
    rm_batch_size: int = 8
    envs: tuple[str, ...] = ("maze",)
    split: str = "test"
    seeds: int | tuple[int, ...] = 10
    seed_offset: int = 0
    methods: tuple[Method, ...] = (Method("greedy"),)
    temperature: float = 0.7
    max_turns: int | None = None
    output: str = "results/eval.jsonl"
    workers: int = 1
    lockstep: int = 16

    def __post_init__(self):
        from agentrm_jax.envs import REGISTRY  # importing envs registers them; no simulator is loaded
        from agentrm_jax.envs.base import SPLITS

        _check_policy(self.policy)
        _check_rm(self.rm)
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1] (the expert's random-action probability), got {self.noise}")
        if self.noise and self.policy != "expert":
            raise ValueError(f"noise applies to policy 'expert' only; policy is {self.policy!r}: drop noise")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check_kv_cache_mb(self.kv_cache_mb)
        check_drop_tokens(self.drop_tokens, policy=self.policy)
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1 (a served policy's requests in flight), "
                             f"got {self.concurrency!r}")
        if self.rm_batch_size < 1:
            raise ValueError(f"rm_batch_size must be >= 1, got {self.rm_batch_size}")
        if not self.envs:
            raise ValueError("envs is empty: name at least one environment, e.g. envs: [maze]")
        unknown = [e for e in self.envs if e not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown env {unknown[0]!r} in envs; registered: {', '.join(sorted(REGISTRY))}")
        if len(set(self.envs)) != len(self.envs):
            raise ValueError(f"envs lists an environment twice: {list(self.envs)}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, (int, tuple)):
            raise ValueError(f"seeds must be a count or a list of task seeds, got {self.seeds!r}")
        if isinstance(self.seeds, int) and self.seeds < 1:
            raise ValueError(f"seeds must be a count >= 1 or a list of task seeds, got {self.seeds}")
        if isinstance(self.seeds, tuple):
            if not self.seeds:
                raise ValueError("seeds is an empty list: give a count or at least one task seed")
            bad = [s for s in self.seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
            if bad:
                raise ValueError(f"task seeds must be non-negative integers, got {bad[0]!r} in seeds")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds lists a task twice: {list(self.seeds)}")
        if self.seed_offset < 0:
            raise ValueError(f"seed_offset must be >= 0, got {self.seed_offset}")
        if not self.methods or not all(isinstance(m, Method) for m in self.methods):
            raise ValueError("methods is empty: use e.g. methods: {greedy: true, best_of_n: [4], beam: [2x2]}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1 (or null for the env's limit), got {self.max_turns}")
        if not self.output:
            raise ValueError("output is empty: name the JSONL file results are appended to")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if isinstance(self.lockstep, bool) or not isinstance(self.lockstep, int) or self.lockstep < 1:
            raise ValueError(f"lockstep must be an integer >= 1 (1: greedy episodes one at a time), "
                             f"got {self.lockstep!r}")

    # -- derived ------------------------------------------------------------------------------------
    @property
    def task_seeds(self) -> tuple[int, ...]:
        """The task seeds played, in order (seed_offset applied)."""
        base = range(self.seeds) if isinstance(self.seeds, int) else self.seeds
        return tuple(self.seed_offset + s for s in base)

    @property
    def policy_label(self) -> str:
        """The policy as recorded in rows and keys: the spec, plus noise and seed where they matter."""
        if self.policy == "expert":
            return f"expert(noise={self.noise:g},seed={self.policy_seed})"
        if self.policy == "random":
            return f"random(seed={self.policy_seed})"
        settings = []  # a model policy's replies depend on these; defaults stay out, so older rows keep their keys
        if self.max_new_tokens != DEFAULT_MAX_NEW_TOKENS:
            settings.append(f"max_new_tokens={self.max_new_tokens}")
        if self.drop_tokens is not None:
            settings.append(f"drop_tokens={self.drop_tokens}")
        return f"{self.policy}({','.join(settings)})" if settings else self.policy

    @property
    def rm_label(self) -> str:
        """The RM as recorded in rows and keys ("random" is written "random:0")."""
        return "random:0" if self.rm == "random" else self.rm

    # -- I/O ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain values that `from_dict` reads back (methods as their text specs)."""
        d = dataclasses.asdict(self)
        d["envs"] = list(self.envs)
        d["seeds"] = self.seeds if isinstance(self.seeds, int) else list(self.seeds)
        d["methods"] = [m.spec for m in self.methods]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config",
                  lines: dict[str, int] | None = None) -> EvalConfig:
        """Build from plain values (a parsed YAML mapping); unknown keys are an error naming key and source.

        lines: the line of each key in `source`, for messages.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{source}: an eval config is a mapping of keys (policy, rm, envs, ...), "
                             f"got {type(data).__name__}")
        check_keys(data, (f.name for f in dataclasses.fields(cls)), source=source, what="eval config", lines=lines)
        values = dict(data)
        try:
            if "envs" in values:
                envs = values["envs"]
                values["envs"] = tuple([envs] if isinstance(envs, str) else list(envs or []))
            if "seeds" in values and isinstance(values["seeds"], (list, tuple)):
                values["seeds"] = tuple(values["seeds"])
            if "methods" in values:
                values["methods"] = parse_methods(values["methods"])
            for name in ("noise", "temperature", "kv_cache_mb"):
                if name in values and isinstance(values[name], int) and not isinstance(values[name], bool):
                    values[name] = float(values[name])
            for name in ("policy", "rm", "output", "split"):
                if name in values and values[name] is not None and not isinstance(values[name], str):
                    values[name] = str(values[name])
            return cls(**values)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> EvalConfig:
        """Read a YAML file, then apply `overrides` (keys as in the file; None values are ignored)."""
        data, lines = read_mapping(path, "eval config", "configs/eval_scripted.yaml")
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data, source=str(path), lines=lines)

    def replace(self, **overrides) -> EvalConfig:
        """A copy with some fields changed (values in any form `from_dict` accepts; None leaves a field)."""
        data = self.to_dict()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return EvalConfig.from_dict(data, source="overrides")

"""`ExploreConfig`: one MCTS exploration run (env, task seeds, policy, tree budget), from YAML and flags.

    ExploreConfig.from_yaml("configs/explore_cpu.yaml", overrides)   file:line errors; flags override keys
    ExploreConfig.from_dict({...}, source="command line")
    parse_seeds("0-99") / parse_seeds("0,3,7") / parse_seeds("0-4,9")   (`agents.seeds`, shared with collect)

`tree_fields()` is the part of the config that decides what the trees are (everything but the seed list,
the output path and where the trees grow: workers, ray, gpus_per_worker): it is written in the trees
file's header, and a rerun with a different one is refused instead of mixing trees of two configs in
one file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from agentrm_jax.agents.factory import check_drop_tokens, check_kv_cache_mb
from agentrm_jax.agents.seeds import parse_seeds

__all__ = ["ExploreConfig", "ExploreConfigError", "VALUE_KINDS", "parse_seeds"]

VALUE_KINDS = ("success", "progress")
_TASK_POLICIES = ("expert", "random")
_MODEL_POLICIES = ("bundled",)
_NOT_TREE_FIELDS = ("seeds", "output", "workers", "ray", "gpus_per_worker", "kv_cache_mb", "concurrency")
EXAMPLE = "configs/explore_cpu.yaml"


class ExploreConfigError(ValueError):
    """A bad config value; `field` names the key (so YAML errors can point at its line)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def _int(name: str, value: Any, lo: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ExploreConfigError(f"{name} must be an integer >= {lo}{' or null' if allow_none else ''}, "
                                 f"got {value!r}", name)


def _number(name: str, value: Any, lo: float, hi: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lo or (hi is not None and value > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ExploreConfigError(f"{name} must be a number {bound}, got {value!r}", name)


@dataclass(frozen=True, kw_only=True)
class ExploreConfig:
    """An exploration run. Trees are grown per task seed; see `agentrm_jax.explore.mcts` for the algorithm.

    simulations: simulations per tree (each selects a leaf, expands it or re-evaluates it, backs up)
    k: candidate steps sampled per expansion (duplicate actions merged, their count kept)
    rollouts: rollouts from every new node; their mean outcome is the node's first value
    temperature / rollout_temperature: policy temperature at expansion / in rollouts (None: temperature)
    c: UCT exploration constant; prior: scale exploration by the policy's sample frequency of a child
    value: rollout outcome, "success" (0/1) or "progress" (the env's progress rate in [0, 1])
    max_depth: nodes this deep are not expanded (re-selecting one runs more rollouts); None: the env's turns
    rollout_depth: steps a rollout takes at most (stopping early scores the state reached); None: to the end
    max_turns: the env's turn limit (None: its default); batch_trees: trees grown in lockstep per chunk
      (one batched policy call per turn across them; part of the tree config, since batching moves seeds)
    kv_cache_mb: in-process model policies: MB of prefix KV cache (0: off); exact, so not a tree field
    concurrency: served policies: requests in flight at once (a batched call's contexts); not a tree field
    drop_tokens: in-process model policies: the block, in tokens, in which a context longer than the model's
      window loses its oldest steps (None: a quarter of the window); a tree field when set
    seed: the sampling seed of the run; policy_seed / noise: the expert's or random policy's seed and noise
    workers: worker processes (local), or Ray actors with `ray`
    ray: None (no Ray), "local" (start a local Ray runtime on 127.0.0.1) or the address of a running
      cluster ("auto", "HOST:PORT", "ray://HOST:PORT"); gpus_per_worker: GPUs each Ray actor reserves
    """

    env: str
    seeds: tuple[int, ...]
    split: str = "train"
    policy: str = "expert"
    noise: float = 0.0
    policy_seed: int = 0
    max_new_tokens: int = 96
    kv_cache_mb: float = 0.0
    concurrency: int = 1
    drop_tokens: int | None = None
    simulations: int = 16
    k: int = 4
    rollouts: int = 2
    temperature: float = 1.0
    rollout_temperature: float | None = None
    c: float = 1.0
    prior: bool = False
    value: str = "success"
    max_depth: int | None = None
    rollout_depth: int | None = None
    max_turns: int | None = None
    one_shot: bool = True
    batch_trees: int = 8
    seed: int = 0
    output: str = "trees.jsonl"
    workers: int = 1
    ray: str | None = None
    gpus_per_worker: float = 0.0

    def __post_init__(self):
        if not isinstance(self.env, str) or not self.env:
            raise ExploreConfigError(f"env must name an environment, got {self.env!r}", "env")
        try:
            object.__setattr__(self, "seeds", parse_seeds(self.seeds))
        except ValueError as e:
            raise ExploreConfigError(str(e), "seeds") from None
        if self.split not in ("train", "test"):
            raise ExploreConfigError(f"split must be train or test, got {self.split!r}", "split")
        if not isinstance(self.policy, str) or not (
                self.policy in _TASK_POLICIES + _MODEL_POLICIES or self.policy.startswith(("http://", "https://"))
                or os.path.exists(os.path.expanduser(self.policy))):
            raise ExploreConfigError(f"policy must be expert, random, bundled, an existing model path or an "
                                     f"http(s):// URL, got {self.policy!r}", "policy")
        _number("noise", self.noise, 0.0, 1.0)
        _int("policy_seed", self.policy_seed, 0)
        _int("max_new_tokens", self.max_new_tokens, 1)
        try:
            check_kv_cache_mb(self.kv_cache_mb)
        except ValueError as e:
            raise ExploreConfigError(str(e), "kv_cache_mb") from None
        _int("concurrency", self.concurrency, 1)
        try:
            check_drop_tokens(self.drop_tokens, policy=self.policy)
        except ValueError as e:
            raise ExploreConfigError(str(e), "drop_tokens") from None
        _int("simulations", self.simulations, 1)
        _int("k", self.k, 1)
        _int("rollouts", self.rollouts, 1)
        _number("temperature", self.temperature, 0.0)
        if self.rollout_temperature is not None:
            _number("rollout_temperature", self.rollout_temperature, 0.0)
        _number("c", self.c, 0.0)
        if not isinstance(self.prior, bool):
            raise ExploreConfigError(f"prior must be true or false, got {self.prior!r}", "prior")
        if self.value not in VALUE_KINDS:
            raise ExploreConfigError(f"value must be one of {', '.join(VALUE_KINDS)}, got {self.value!r}", "value")
        _int("max_depth", self.max_depth, 1, allow_none=True)
        _int("rollout_depth", self.rollout_depth, 1, allow_none=True)
        _int("max_turns", self.max_turns, 1, allow_none=True)
        if not isinstance(self.one_shot, bool):
            raise ExploreConfigError(f"one_shot must be true or false, got {self.one_shot!r}", "one_shot")
        _int("batch_trees", self.batch_trees, 1)
        _int("seed", self.seed, 0)
        if not isinstance(self.output, str) or not self.output:
            raise ExploreConfigError(f"output must be a file path, got {self.output!r}", "output")
        _int("workers", self.workers, 1)
        if self.ray is not None and (not isinstance(self.ray, str) or not self.ray.strip()):
            raise ExploreConfigError(f"ray must be local or a cluster address (auto, HOST:PORT, ray://HOST:PORT), "
                                     f"got {self.ray!r}", "ray")
        _number("gpus_per_worker", self.gpus_per_worker, 0.0)
        if self.gpus_per_worker and self.ray is None:
            raise ExploreConfigError("gpus_per_worker is for Ray actors; set ray (--ray) too", "gpus_per_worker")

    @property
    def roll_temperature(self) -> float:
        """The rollout temperature in effect."""
        return self.temperature if self.rollout_temperature is None else self.rollout_temperature

    def tree_fields(self) -> dict[str, Any]:
        """The fields that decide the trees (all but seeds, output and the workers' placement), as JSON-able values.

        drop_tokens appears only when set, so trees grown before it existed keep their fingerprint."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _NOT_TREE_FIELDS}
        if fields["drop_tokens"] is None:
            del fields["drop_tokens"]
        return fields

    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of `tree_fields`: equal for configs that grow the same trees."""
        return hashlib.sha256(json.dumps(self.tree_fields(), sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **updates) -> ExploreConfig:
        return dataclasses.replace(self, **updates)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config", lines: dict[str, int] | None = None,
                  flagged: set[str] = frozenset()) -> ExploreConfig:
        """A config from a mapping; errors name `source:line` of the key (or `--flag` for keys in `flagged`)."""
        from agentrm_jax.yaml_config import check_keys

        known = [f.name for f in dataclasses.fields(cls)]
        check_keys(data, known, source=source, what="explore config", lines=lines)
        for required in ("env", "seeds"):
            if data.get(required) is None:
                raise ValueError(f"{source}: {required} is required (--{required} or the key {required!r}; "
                                 f"see {EXAMPLE})")
        try:
            return cls(**data)
        except ExploreConfigError as e:
            if e.field in flagged:
                raise ValueError(f"--{e.field.replace('_', '-')}: {e}") from None
            where = f"{source}:{lines[e.field]}" if lines and e.field in lines else source
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> ExploreConfig:
        """A config from a YAML file, with `overrides` (None values ignored) replacing its keys."""
        from agentrm_jax.yaml_config import read_mapping

        data, lines = read_mapping(path, "explore config", EXAMPLE)
        flagged = {k for k, v in (overrides or {}).items() if v is not None}
        data = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
        return cls.from_dict(data, source=str(path), lines=lines, flagged=flagged)

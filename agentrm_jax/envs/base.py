"""The TextEnv protocol every environment implements, a replay-based base class, and the registry.

Nothing here (or anywhere in envs/) imports JAX: environments are plain Python
programs so that rollouts can run in worker processes next to a served policy.

Contract (what search, exploration and evaluation rely on):

- `reset(seed)` starts task instance `seed` of the env's split and returns the
  first observation, which contains the task instruction. The same (split,
  seed) always gives the same task; train and test splits never share one.
- `step(action)` applies one action string (free model text: never raises on
  it) and returns `(observation, done)`. An invalid or unparsable action
  returns an informative observation (e.g. "Nothing happens. Valid actions:
  ...") and still counts as a turn. `done` is True on success, on a terminal
  failure, or when `max_turns` turns have been taken.
- `success` (bool) and `progress` (float in [0, 1]: the fraction of the task's
  subgoals reached so far, as AgentBoard's progress rate; the maximum over the
  episode, so it never decreases) describe the episode so far.
- `snapshot()` returns a picklable value; `restore(snapshot)` on any env made
  with the same name and split puts it in exactly that state (same future
  observations for the same actions). Envs whose simulators cannot copy state
  implement this by replay from reset (`ReplayEnv`).
- `available_actions()` lists the valid actions where the set is finite
  (None otherwise); `expert_actions()` is an oracle solution from the env's own
  solver/walkthrough for the current task from its initial state. Envs whose
  solver can start anywhere (maze, pddl) also offer `expert_actions_from_here()`,
  a plan from the current state; `ScriptedPolicy.expert` uses it to replan
  after a noisy step.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["EnvSpec", "REGISTRY", "ReplayEnv", "TextEnv", "UnknownEnvironmentError", "make", "register", "registered",
           "task_seed"]

SPLITS = ("train", "test")
ENV_TYPES = ("embodied", "web", "game", "planning", "tool")


@runtime_checkable
class TextEnv(Protocol):
    """A text environment an LLM agent acts in (see the module docstring for the contract)."""

    name: str
    split: str
    max_turns: int

    @property
    def instruction(self) -> str: ...

    @property
    def turns(self) -> int: ...

    @property
    def done(self) -> bool: ...

    @property
    def success(self) -> bool: ...

    @property
    def progress(self) -> float: ...

    def reset(self, seed: int) -> str: ...

    def step(self, action: str) -> tuple[str, bool]: ...

    def snapshot(self) -> Any: ...

    def restore(self, snapshot: Any) -> None: ...

    def available_actions(self) -> list[str] | None: ...

    def expert_actions(self) -> list[str]: ...


def task_seed(name: str, split: str, seed: int) -> int:
    """A 63-bit seed for task instance `seed` of `split`, disjoint between splits and envs.

    Envs that generate tasks from a seed use this so that train and test never
    share an instance (a hash collision between two 63-bit values is the only
    way they could).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    digest = hashlib.sha256(f"{name}/{split}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ReplayEnv(abc.ABC):
    """Base class: turn counting, max_turns, monotone progress, and snapshot/restore by replay.

    Subclasses implement `_reset(seed) -> observation`, `_step(action) ->
    (observation, done)`, `_success()`, `_progress()` and `expert_actions()`;
    they may override `snapshot`/`restore` with a cheaper state copy.
    """

    name: str = "env"

    def __init__(self, *, split: str = "train", max_turns: int = 30):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.split = split
        self.max_turns = max_turns
        self._seed: int | None = None
        self._actions: list[str] = []
        self._done = False
        self._best_progress = 0.0
        self._instruction = ""

    # -- subclass hooks -------------------------------------------------------------------------
    @abc.abstractmethod
    def _reset(self, seed: int) -> str:
        """Start task `seed`; set `self._instruction`; return the first observation."""

    @abc.abstractmethod
    def _step(self, action: str) -> tuple[str, bool]:
        """Apply one action; return (observation, terminal)."""

    @abc.abstractmethod
    def _success(self) -> bool: ...

    @abc.abstractmethod
    def _progress(self) -> float: ...

    @abc.abstractmethod
    def expert_actions(self) -> list[str]: ...

    def available_actions(self) -> list[str] | None:
        return None

    # -- protocol ---------------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def seed(self) -> int | None:
        return self._seed

    @property
    def turns(self) -> int:
        return len(self._actions)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def success(self) -> bool:
        return self._seed is not None and self._success()

    @property
    def progress(self) -> float:
        return self._best_progress

    def reset(self, seed: int) -> str:
        self._seed = seed
        self._actions = []
        self._done = False
        observation = self._reset(seed)
        self._best_progress = float(min(max(self._progress(), 0.0), 1.0))
        return observation

    def step(self, action: str) -> tuple[str, bool]:
        if self._seed is None:
            raise RuntimeError(f"{self.name}: call reset(seed) before step()")
        if self._done:
            return "The episode is over.", True
        action = action if isinstance(action, str) else str(action)
        self._actions.append(action)
        observation, terminal = self._step(action.strip())
        self._best_progress = max(self._best_progress, float(min(max(self._progress(), 0.0), 1.0)))
        self._done = bool(terminal) or self._success() or len(self._actions) >= self.max_turns
        return observation, self._done

    # -- snapshot: replay by default; a copy of the simulator state where the subclass can give one --
    def _copy_state(self) -> Any:
        """A picklable copy of the simulator's mutable state, or NotImplemented (then snapshots replay)."""
        return NotImplemented

    def _set_state(self, state: Any) -> None:
        """Install a value `_copy_state` returned (the task is already the right one)."""
        raise NotImplementedError

    def snapshot(self) -> Any:
        """(seed, actions) for replay, or (seed, actions, state, done, best progress) where state copies."""
        state = self._copy_state()
        if state is NotImplemented:
            return (self._seed, tuple(self._actions))
        return (self._seed, tuple(self._actions), state, self._done, self._best_progress)

    def restore(self, snapshot: Any) -> None:
        """Put this env in the state `snapshot` describes: copy the state in (regenerating the task only
        if the seed differs), or replay the actions from reset."""
        if len(snapshot) == 2:
            seed, actions = snapshot
            self.reset(seed)
            for a in actions:
                self.step(a)
            return
        seed, actions, state, done, best = snapshot
        if seed != self._seed:
            self.reset(seed)
        self._actions = list(actions)
        self._set_state(state)
        self._done = done
        self._best_progress = best


@dataclass(frozen=True)
class EnvSpec:
    """A registered environment: how to make it and what it stands for.

    env_type: one of embodied / web / game / planning / tool
    role: "held_in" (its tasks may train an RM) or "held_out" (test-only generalisation)
    stands_for: which of AgentRM's nine tasks it represents
    source: the program that simulates it (package and version, or "ours")
    """

    name: str
    factory: Callable[..., TextEnv]
    env_type: str
    role: str
    stands_for: str
    source: str
    description: str = ""

    def __post_init__(self):
        if self.env_type not in ENV_TYPES:
            raise ValueError(f"env_type must be one of {ENV_TYPES}, got {self.env_type!r}")
        if self.role not in ("held_in", "held_out"):
            raise ValueError(f"role must be 'held_in' or 'held_out', got {self.role!r}")


REGISTRY: dict[str, EnvSpec] = {}


class UnknownEnvironmentError(ValueError, KeyError):
    """`make` of a name nobody registered. A ValueError (the CLI prints it as one line) and,
    for callers that look names up, a KeyError; the message suggests the closest names."""

    def __init__(self, name: str, known: list[str]):
        import difflib

        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        super().__init__(f"unknown environment {name!r}{hint}; registered: {', '.join(known) or 'none'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register(spec: EnvSpec) -> EnvSpec:
    if spec.name in REGISTRY and REGISTRY[spec.name] != spec:
        raise ValueError(f"environment {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def registered() -> list[EnvSpec]:
    """Every registered environment, sorted by name."""
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def make(name: str, *, seed: int = 0, split: str = "train", **kwargs) -> TextEnv:
    """An environment, already reset to task `seed` of `split`; kwargs go to its constructor (max_turns, ...)."""
    if name not in REGISTRY:
        raise UnknownEnvironmentError(name, sorted(REGISTRY))
    env = REGISTRY[name].factory(split=split, **kwargs)
    env.reset(seed)
    return env

"""`ScriptedPolicy` (a fixed action list indexed by turn, or a callable such as an env's expert plan, with
optional seeded noise) and `RandomPolicy` (uniform over the available actions). Both are deterministic
for a given seed: samples depend on (policy seed, sample seed, context, sample index) only."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from agentrm_jax.agents.policies.base import Messages, PolicyStats, _check_args, context_key, turn_of
from agentrm_jax.agents.prompts import omitted_steps, task_actions
from agentrm_jax.records import format_step

__all__ = ["RandomPolicy", "ScriptedPolicy"]


def _rng(*parts) -> random.Random:
    return random.Random("/".join(str(p) for p in parts))  # str seeds hash with sha512: stable across runs


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

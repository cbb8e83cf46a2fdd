"""The episode loop: prompt -> policy -> parse -> env.step, recorded as an immutable `Trajectory`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentrm_jax.agents.policies import PolicySampler
from agentrm_jax.agents.prompts import build_messages, parse_step
from agentrm_jax.agents.trajectory import Step, Trajectory

__all__ = ["run_episode", "step_seed"]

log = logging.getLogger(__name__)


def step_seed(seed: int, turn: int) -> int:
    """The sampling seed of turn `turn` of the episode on task `seed` (fits in int32)."""
    return (int(seed) * 1_000_003 + int(turn) * 7_919 + 1) % (2**31 - 1)


def run_episode(env, policy: PolicySampler, *, max_turns: int | None = None, temperature: float = 0.0,
                seed: int = 0, env_name: str | None = None, one_shot: bool = True, reset: bool = True,
                max_history: int | None = None,
                on_reset: Callable[[str], None] | None = None,
                on_step: Callable[[int, Step, str], None] | None = None) -> Trajectory:
    """Play one episode of `env` (reset to task `seed`) with `policy`; return its trajectory.

    Each turn: messages from the trajectory so far (`prompts.build_messages`),
    one sample from the policy (seed `step_seed(seed, turn)`), `parse_step`,
    `env.step(action)`. Stops when the env reports done or after `max_turns`
    turns (default: the env's own `max_turns`). Model text never crashes the
    loop: unparsable output becomes action "" and the env answers it.

    reset=False plays on from the env's current state instead (its first
    observation is then unknown, so `env.instruction` stands in for it).
    on_reset(first_observation) is called once before the first turn and
    on_step(turn, step, raw_text) after each turn (for printing).
    The trajectory's instruction is the first observation; `meta` holds the
    split, seed, turns taken and the raw policy texts.
    """
    name = getattr(env, "name", "env")
    split = getattr(env, "split", "train")
    observation = env.reset(seed) if reset else env.instruction
    limit = getattr(env, "max_turns", None)
    if max_turns is not None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        limit = max_turns if limit is None else min(limit, max_turns)
    if limit is None:
        raise ValueError("the env has no max_turns; pass max_turns")
    trajectory = Trajectory(task=name, instruction=observation, id=f"{name}/{split}/{seed}")
    raw_texts: list[str] = []
    if on_reset is not None:
        on_reset(observation)
    done = bool(getattr(env, "done", False)) if not reset else False
    turn = 0
    while not done and turn < limit:
        messages = build_messages(trajectory, env_name=env_name or name, one_shot=one_shot,
                                  max_steps=max_history)
        texts = policy.sample([messages], n=1, temperature=temperature, seed=step_seed(seed, turn))
        text = texts[0][0] if texts and texts[0] else ""
        text = text if isinstance(text, str) else ""
        thought, action = parse_step(text)
        observation, done = env.step(action)
        step = Step(thought=thought, action=action, observation=str(observation))
        trajectory = trajectory.append(step)
        raw_texts.append(text)
        if on_step is not None:
            on_step(turn, step, text)
        turn += 1
    success, progress = bool(env.success), float(env.progress)
    log.debug("%s: %d turns, success=%s progress=%.3f", trajectory.id, turn, success, progress)
    return trajectory.replace(success=success, progress=min(max(progress, 0.0), 1.0),
                              meta={"split": split, "seed": seed, "turns": turn, "raw": raw_texts})

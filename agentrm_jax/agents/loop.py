"""The episode loop: prompt -> policy -> parse -> env.step, recorded as an immutable `Trajectory`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from agentrm_jax.agents.policies import PolicySampler, context_key
from agentrm_jax.agents.prompts import build_messages, parse_step
from agentrm_jax.records import PROGRESS_TRACE, Step, Trajectory

__all__ = ["context_key", "play_lockstep", "run_episode", "sample_grouped", "step_seed"]

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
    split, seed, turns taken, the raw policy texts and the env's progress after
    each step (`progress_trace`).
    """
    name = getattr(env, "name", "env")
    observation = env.reset(seed) if reset else env.instruction
    limit = getattr(env, "max_turns", None)
    if max_turns is not None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        limit = max_turns if limit is None else min(limit, max_turns)
    if limit is None:
        raise ValueError("the env has no max_turns; pass max_turns")
    if on_reset is not None:
        on_reset(observation)
    [trajectory] = play_lockstep(
        [env], policy, seed=seed, max_turns=limit, first_observations=[observation], temperature=temperature,
        env_name=env_name or name, one_shot=one_shot, max_history=max_history,
        on_step=None if on_step is None else (lambda _, turn, step, text: on_step(turn, step, text)))
    log.debug("%s: %d turns, success=%s progress=%.3f", trajectory.id, len(trajectory.steps), trajectory.success,
              trajectory.progress)
    return trajectory


def sample_grouped(policy: PolicySampler, contexts: Sequence[list[dict[str, str]]], *, temperature: float,
                   seed: int, on_call: Callable[[int, int], None] | None = None) -> list[str]:
    """One step text per context, sampling identical contexts together.

    Contexts that are equal go to the policy as one context with n = their
    count, so they share a prefill and still get n different samples (a
    per-context sampler given the same context twice would return the same text
    twice). One `sample` call per distinct group size. on_call(contexts, n) is
    told of each call (for cost accounting).
    """
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(contexts):
        groups.setdefault(context_key(c), []).append(i)
    by_size: dict[int, list[list[int]]] = {}
    for members in groups.values():
        by_size.setdefault(len(members), []).append(members)
    texts: list[str] = [""] * len(contexts)
    for n, member_lists in sorted(by_size.items()):
        unique = [contexts[m[0]] for m in member_lists]
        # Each call gets its own seed: with counter-based PRNG keys, row r of two calls with one seed would
        # draw the same noise, correlating samples that must be independent.
        call_seed = seed if n == 1 else (int(seed) * 1_000_003 + n * 104_729) % (2**31 - 1)
        rows = policy.sample(unique, n=n, temperature=temperature, seed=call_seed)
        if len(rows) != len(unique):
            raise ValueError(f"the policy returned {len(rows)} rows for {len(unique)} contexts")
        if on_call is not None:
            on_call(len(unique), n)
        for members, row in zip(member_lists, rows):
            for j, i in enumerate(members):
                text = row[j] if j < len(row) else ""
                texts[i] = text if isinstance(text, str) else ""
    return texts


def play_lockstep(envs: Sequence, policy: PolicySampler, *, seed: int, max_turns: int,
                  first_observations: Sequence[str] | None = None,
                  temperature: float = 0.0, env_name: str | None = None, one_shot: bool = True,
                  max_history: int | None = None, ids: Sequence[str] | None = None,
                  on_call: Callable[[int, int], None] | None = None,
                  on_step: Callable[[int, int, Step, str], None] | None = None,
                  on_turn: Callable[[int, int, int], None] | None = None) -> list[Trajectory]:
    """Play one episode per env (each already reset, its first observation in `first_observations`;
    default: the env's `instruction`) together.

    Each turn the live episodes' contexts go to the policy at once
    (`sample_grouped`: identical contexts share a prefill and get distinct
    samples), seed `step_seed(seed, turn)`. An episode stops when its env says
    done or after max_turns turns. Each trajectory carries success and progress
    from its env, and in `meta` the raw texts and the progress after every step
    (`progress_trace`, read by the oracle scorer). on_call(contexts, n) is told of
    each policy call, on_step(episode index, turn, step, raw text) of each step,
    on_turn(turns played, max_turns, episodes still live) of each finished turn.
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    names = [getattr(e, "name", "env") for e in envs]
    firsts = list(first_observations) if first_observations is not None else [e.instruction for e in envs]
    if len(firsts) != len(envs):
        raise ValueError(f"{len(firsts)} first observations for {len(envs)} envs")
    trajectories = [Trajectory(task=names[i], instruction=str(firsts[i]),
                               id=ids[i] if ids is not None else f"{names[i]}/{getattr(e, 'split', 'train')}/{seed}")
                    for i, e in enumerate(envs)]
    raw: list[list[str]] = [[] for _ in envs]
    trace: list[list[float]] = [[] for _ in envs]
    live = [i for i, e in enumerate(envs) if not bool(getattr(e, "done", False))]
    turn = 0
    while live and turn < max_turns:
        contexts = [build_messages(trajectories[i], env_name=env_name or names[i], one_shot=one_shot,
                                   max_steps=max_history) for i in live]
        texts = sample_grouped(policy, contexts, temperature=temperature, seed=step_seed(seed, turn), on_call=on_call)
        still = []
        for i, text in zip(live, texts):
            thought, action = parse_step(text)
            observation, done = envs[i].step(action)
            trajectories[i] = trajectories[i].append(Step(thought, action, str(observation)))
            raw[i].append(text)
            trace[i].append(min(max(float(envs[i].progress), 0.0), 1.0))
            if on_step is not None:
                on_step(i, turn, trajectories[i].steps[-1], text)
            if not done:
                still.append(i)
        live, turn = still, turn + 1
        if on_turn is not None:
            on_turn(turn, max_turns, len(live))
    return [t.replace(success=bool(e.success), progress=min(max(float(e.progress), 0.0), 1.0),
                      meta={"split": getattr(e, "split", "train"), "seed": seed, "turns": len(t.steps),
                            "raw": raw[i], PROGRESS_TRACE: trace[i]})
            for i, (t, e) in enumerate(zip(trajectories, envs))]

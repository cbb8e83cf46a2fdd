"""Expert demonstrations: `collect` plays the env's expert on (env, seed) tasks and appends one trajectory
per episode to a JSONL file, each step with a thought from `agents.thoughts` that says why its action.

    collect(envs, seeds=range(200), split="train", out="demos.jsonl", noise=0.0) -> CollectReport
    expert_episode(env, seed, noise=0.0, rng_seed=0, probe=None) -> Trajectory

Noise (diversity with recoveries): with probability `noise` a step takes a random non-expert action
instead (never two in a row), but only one after which the expert still solves the task (checked on
a `probe` env restored to the same state; else the step stays the expert's). Envs whose solver plans
from any state (maze, pddl, shop: `expert_actions_from_here`) replan after it, so the demo shows the
way back; walkthrough envs (twx, sciworld, textworld, babyai, tools) play on with the rest of the
walkthrough, so their deviations are the harmless ones (a look, a wrong door that stays shut).
The deviating steps are listed in `meta["noisy_steps"]`: SFT trains on the recovery, not on them.

Records: id `{env}/{split}/{seed}` (with noise: `.../noise{p}-{noise_seed}`, so clean and noisy demos
of one task can share a file), success / progress from the env, `meta` with split, seed, the collect
settings (policy, noise, noise seed and the turn limit in effect: `--max-turns` capped by the env's own)
and the noisy steps. Resumable: episodes whose id is already in `out` are skipped (a torn last line from
a kill is repaired first), so a rerun never writes a duplicate; an id already there with other collect
settings (another turn limit included: a demo cut at 10 turns is not one of 30) is refused in one line
naming file:line and the settings that differ, never overwritten or mixed in.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentrm_jax.agents.thoughts import deviation_thought, explain
from agentrm_jax.records import RecordError, Step, Trajectory, append_jsonl, read_object_lines

__all__ = ["CollectReport", "collect", "episode_id", "expert_episode"]

COLLECT_META = "collect"
NOISY_STEPS = "noisy_steps"


def episode_id(env_name: str, split: str, seed: int, noise: float = 0.0, noise_seed: int = 0) -> str:
    """The record id of one demo (see the module docstring)."""
    base = f"{env_name}/{split}/{seed}"
    return base if noise == 0 else f"{base}/noise{noise:g}-{noise_seed}"


def _turn_limit(env, max_turns: int | None) -> int:
    """The turn limit an episode of `env` plays under: `max_turns` (None: the env's own), at most the env's."""
    return min(max_turns or env.max_turns, env.max_turns)


def _replans(env) -> bool:
    return hasattr(env, "expert_actions_from_here")


def _recoverable(probe, env, deviation: str, rest: Sequence[str] | None) -> bool:
    """Whether the expert still solves the task after `deviation` from env's current state: the
    walkthrough `rest` played on, or (rest None) the replanning expert, within the turn limit."""
    probe.restore(env.snapshot())
    _, done = probe.step(deviation)
    while not done:
        if rest is None:
            plan = probe.expert_actions_from_here()
            if not plan:
                break
            action = plan[0]
        elif rest:
            action, rest = rest[0], rest[1:]
        else:
            break
        _, done = probe.step(action)
    return bool(probe.success)


def expert_episode(env, seed: int, *, split: str | None = None, noise: float = 0.0, rng_seed: int = 0,
                   probe=None, max_turns: int | None = None) -> Trajectory:
    """One expert demo of task `seed` of `env` (reset here), with thoughts; noisy steps as described above.

    probe: a second env of the same name and split, on which each deviation is checked (None: no noise). max_turns: default the env's own.
    """
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    name = getattr(env, "name", "env")
    split = split or getattr(env, "split", "train")
    first = env.reset(seed)
    limit = _turn_limit(env, max_turns)
    rng = random.Random(f"collect/{name}/{split}/{seed}/{noise}/{rng_seed}")
    replan = _replans(env)
    walkthrough = [] if replan else list(env.expert_actions())
    cursor = 0
    steps: list[Step] = []
    noisy: list[int] = []
    previous_noisy = False
    while not env.done and len(steps) < limit:
        if replan:
            plan = env.expert_actions_from_here()
            expert = plan[0] if plan else None
        else:
            expert = walkthrough[cursor] if cursor < len(walkthrough) else None
        if expert is None:
            break
        action, deviating = expert, False
        if noise > 0 and not previous_noisy and rng.random() < noise:
            choices = [a for a in (env.available_actions() or []) if a.strip().lower() != expert.strip().lower()]
            rng.shuffle(choices)
            for candidate in choices[:3]:
                if probe is not None and _recoverable(probe, env, candidate, None if replan else walkthrough[cursor:]):
                    action, deviating = candidate, True
                    break
        thought = deviation_thought(action) if deviating else explain(env, action, recovering=previous_noisy)
        observation, _ = env.step(action)
        steps.append(Step(thought, action, str(observation)))
        if deviating:
            noisy.append(len(steps) - 1)
        elif not replan:
            cursor += 1
        previous_noisy = deviating
    meta = {"split": split, "seed": seed, "turns": len(steps),
            COLLECT_META: _settings(noise, rng_seed, limit), NOISY_STEPS: noisy}
    return Trajectory(task=name, instruction=str(first), steps=tuple(steps),
                      id=episode_id(name, split, seed, noise, rng_seed), success=bool(env.success),
                      progress=min(max(float(env.progress), 0.0), 1.0), meta=meta)


@dataclass(frozen=True)
class CollectReport:
    """What a `collect` call did: episodes written now, already there (skipped), and failed demos written."""

    out: Path
    written: int
    skipped: int
    failed: int
    failed_ids: tuple[str, ...] = ()


def _settings(noise: float, noise_seed: int, max_turns: int) -> dict:
    """The collect settings a demo records (meta["collect"]): what decides its steps besides env and seed."""
    return {"policy": "expert", "noise": noise, "noise_seed": noise_seed, "max_turns": max_turns}


def _differences(made, wanted: dict) -> tuple[str, str]:
    """('k=v, ...' as recorded, 'k=v, ...' as wanted) over the settings that differ."""
    if not isinstance(made, dict):
        return f"settings {made!r}", ", ".join(f"{k}={v!r}" for k, v in wanted.items())
    keys = [k for k in wanted if made.get(k, "unrecorded") != wanted[k]] + [k for k in made if k not in wanted]
    show = lambda d, k: "unrecorded" if k not in d else repr(d[k])  # noqa: E731
    return (", ".join(f"{k}={show(made, k)}" for k in keys), ", ".join(f"{k}={show(wanted, k)}" for k in keys))


def _existing(out: Path, wanted: dict[str, dict]) -> set[str]:
    """Ids already in `out` (its torn last line repaired); a record of one of the `wanted` ids made under
    other settings than `wanted[id]` (another --max-turns, --noise-seed, a hand-edited file) is refused."""
    ids = set()
    for lineno, row in read_object_lines(out, repair=True):
        try:
            record = Trajectory.from_dict(row)
        except RecordError as e:
            raise RecordError(f"{e}; --out must be a JSONL file of trajectories to resume",
                              path=str(out), line=lineno) from None
        made = (record.meta or {}).get(COLLECT_META)
        if record.id in wanted and made != wanted[record.id]:
            before, now = _differences(made, wanted[record.id])
            raise RecordError(f"{record.id} was collected with {before}, but this run has {now}; use another "
                              "--out, or the same settings to resume (the file is left as it is)",
                              path=str(out), line=lineno)
        if record.id in ids:
            raise RecordError(f"id {record.id!r} appears twice", path=str(out), line=lineno)
        ids.add(record.id)
    return ids


def collect(envs: Sequence[str], *, seeds: Iterable[int], out: str | os.PathLike, split: str = "train",
            noise: float = 0.0, noise_seed: int = 0, progress: bool = True, max_turns: int | None = None,
            make_env: Callable | None = None) -> CollectReport:
    """Expert demos of every (env, seed) not yet in `out`, appended (one fsynced line per episode).

    envs: registered env names; seeds: task seeds of `split`. make_env(name, split=...) -> env (default
    `agents.factory.make_env`). A progress bar with an ETA is shown on stderr when `progress`.
    """
    if make_env is None:
        from agentrm_jax.agents.factory import make_env
    if not envs:
        raise ValueError("--envs names no environment")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"--noise must be in [0, 1], got {noise}")
    if max_turns is not None and (isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1):
        raise ValueError(f"--max-turns must be an integer >= 1, got {max_turns!r}")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a JSONL file")
    seeds = list(seeds)
    built = {name: make_env(name, seed=0, split=split) for name in dict.fromkeys(envs)}  # unknown names fail here
    settings = {name: _settings(noise, noise_seed, _turn_limit(env, max_turns)) for name, env in built.items()}
    done = _existing(out, {episode_id(n, split, s, noise, noise_seed): settings[n] for n in built for s in seeds})
    todo = [(name, s) for name in built for s in seeds if episode_id(name, split, s, noise, noise_seed) not in done]
    skipped = len(built) * len(seeds) - len(todo)
    probes: dict[str, object] = {}
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="collect expert demos", unit="episode", dynamic_ncols=True, file=sys.stderr)
    failed: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for name, seed in todo:
            env = built[name]
            probe = None
            if noise > 0:
                if name not in probes:
                    probes[name] = make_env(name, seed=0, split=split)
                probe = probes[name]
            trajectory = expert_episode(env, seed, split=split, noise=noise, rng_seed=noise_seed, probe=probe,
                                        max_turns=max_turns)
            append_jsonl(out, [trajectory])
            if not trajectory.success:
                failed.append(trajectory.id)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(env=name, failed=len(failed))
    finally:
        if bar is not None:
            bar.close()
        for env in [*built.values(), *probes.values()]:
            close = getattr(env, "close", None)
            if callable(close):
                close()
    return CollectReport(out=out, written=len(todo), skipped=skipped, failed=len(failed), failed_ids=tuple(failed))

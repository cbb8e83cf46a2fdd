"""Greedy decoding: one trajectory at temperature 0, no reward model.

    greedy(policy, factory, cfg)            one task
    greedy_many(policy, factory, cfgs)      many tasks of one env played together (one policy call per turn)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from agentrm_jax.agents.loop import play_lockstep
from agentrm_jax.agents.policies import PolicySampler
from agentrm_jax.search.common import CostMeter, Costs, EnvFactory, SearchConfig, SearchResult, turn_limit

__all__ = ["greedy", "greedy_many", "split_costs"]

# Costs fields a lockstep episode knows exactly from its own turns; every other field is measured for the
# group as a whole (tokens, wall time, cache counters) and split over its episodes by `split_costs`.
_PER_EPISODE = ("policy_calls", "policy_contexts", "policy_samples", "prefills_saved", "env_steps")


def greedy(policy: PolicySampler, env_factory: EnvFactory, cfg: SearchConfig = SearchConfig()) -> SearchResult:
    """Play task `cfg.seed` once, always taking the policy's most likely step (temperature 0).

    Returns a `SearchResult` with method "greedy", no score, and the single
    trajectory as its only candidate (`greedy_many` of one config).
    """
    [result] = greedy_many(policy, env_factory, [cfg])
    return result


def split_costs(group: Costs, turns: Sequence[int]) -> list[Costs]:
    """Per-episode costs of episodes that shared policy calls (one entry per episode, `turns[i]` its turns).

    An episode's own turns give its calls, contexts, samples and env steps exactly (one context per live
    turn, no shared prefill counted); each other field, measured for the group, is divided evenly, with
    integer remainders going to the first episodes, so the episodes' costs add up to the group's.
    """
    k = len(turns)
    shares: list[dict] = [{} for _ in range(k)]
    for field in dataclasses.fields(Costs):
        if field.name in _PER_EPISODE:
            continue
        total = getattr(group, field.name)
        if isinstance(total, int):
            q, r = divmod(total, k)
            for i in range(k):
                shares[i][field.name] = q + (1 if i < r else 0)
        else:
            for i in range(k):
                shares[i][field.name] = total / k
    return [dataclasses.replace(group, **share, policy_calls=t, policy_contexts=t, policy_samples=t,
                                prefills_saved=0, env_steps=t) for share, t in zip(shares, turns)]


def greedy_many(policy: PolicySampler, env_factory: EnvFactory, cfgs: Sequence[SearchConfig], *,
                on_turn: Callable[[int, int, int], None] | None = None) -> list[SearchResult]:
    """`greedy` for each config (task `cfg.seed`), the episodes played in lockstep: each turn the live
    episodes' contexts go to the policy in one call, so a batching policy decodes them together.

    The configs must agree on everything but the seed (max_turns, env_name, one_shot, max_history).
    Trajectories are those `greedy` plays for the same seeds up to float rounding of the batched
    forward (a near-tie between two tokens can break the other way in a batch of another shape).
    Costs: see `split_costs` (what the group spent, shared out per episode).
    on_turn(turns played, turn limit, episodes still live) is told after each lockstep turn, so a
    caller can show progress within a long group (`play_lockstep`).
    """
    cfgs = list(cfgs)
    if not cfgs:
        return []
    base = cfgs[0]
    for c in cfgs[1:]:
        if dataclasses.replace(c, seed=base.seed) != base:
            raise ValueError("greedy_many: the configs must differ in their seed only")
    meter = CostMeter(policy)
    envs = [env_factory() for _ in cfgs]
    firsts = [env.reset(c.seed) for env, c in zip(envs, cfgs)]
    limits = [turn_limit(env, c.max_turns) for env, c in zip(envs, cfgs)]
    played: dict[int, object] = {}
    for limit in sorted(set(limits)):  # tasks of one env normally share a limit; play each limit together
        idx = [i for i, lim in enumerate(limits) if lim == limit]
        names = [getattr(envs[i], "name", "env") for i in idx]
        trajectories = play_lockstep(
            [envs[i] for i in idx], policy, seed=cfgs[idx[0]].seed, max_turns=limit,
            first_observations=[firsts[i] for i in idx], temperature=0.0, env_name=base.env_name,
            one_shot=base.one_shot, max_history=base.max_history,
            ids=[f"{n}/{getattr(envs[i], 'split', 'train')}/{cfgs[i].seed}/greedy" for n, i in zip(names, idx)],
            on_call=meter.sampled, on_turn=on_turn)
        for i, t in zip(idx, trajectories):
            played[i] = t.replace(meta={**t.meta, "seed": cfgs[i].seed})
    ordered = [played[i] for i in range(len(cfgs))]
    meter.stepped(sum(len(t.steps) for t in ordered))
    costs = split_costs(meter.costs(), [len(t.steps) for t in ordered])
    return [SearchResult(method="greedy", params={"max_turns": lim}, trajectory=t, score=None, costs=c,
                         candidates=(t,)) for t, lim, c in zip(ordered, limits, costs)]

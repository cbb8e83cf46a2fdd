"""Best-of-N: N whole trajectories sampled at a temperature, the one the reward model scores highest wins."""

from __future__ import annotations

import numpy as np

from agentrm_jax.agents.loop import play_lockstep
from agentrm_jax.agents.policies import PolicySampler
from agentrm_jax.search.common import (CostMeter, EnvFactory, SearchConfig, SearchResult, finite_scores,
                                       turn_limit)

__all__ = ["best_of_n", "prefix_sizes", "random_pick_index"]


def random_pick_index(seed: int, n: int) -> int:
    """Which of n samples the random-pick baseline takes on task `seed` (fixed per seed)."""
    return int(np.random.default_rng([int(seed), 0xB0F]).integers(n))


def prefix_sizes(n: int) -> list[int]:
    """The powers of two below n (the sample-prefix sizes Best-of-N also reports)."""
    return [1 << i for i in range(max(0, (n - 1).bit_length())) if (1 << i) < n]


def best_of_n(policy: PolicySampler, rm, env_factory: EnvFactory, cfg: SearchConfig = SearchConfig()
              ) -> SearchResult:
    """Sample `cfg.n` trajectories of task `cfg.seed` at `cfg.temperature`; return the RM's favourite.

    The N episodes run in lockstep, one env each (made by `env_factory`), so
    each turn is one batched policy call; their identical first contexts go to
    the policy as one context with n = N (one shared prefill). The RM scores
    the N finished trajectories once (NaN scores never win; ties go to the
    earliest sample).

    `baselines` records what the same N samples give without an RM:
    `random_pick_success` / `random_pick_progress` (the sample `random_pick_index`
    names), `oracle_pass` (1.0 if any sample succeeded: pass@N, the ceiling
    of any scorer), `oracle_progress` (the best progress) and `mean_success`.

    It also records the same figures for the first n samples, for every power
    of two n < N (keys `rm_pick_success@n`, `rm_pick_progress@n`,
    `random_pick_success@n`, `random_pick_progress@n`, `oracle_pass@n`,
    `oracle_progress@n`): the
    first n of N samples are distributed exactly as the n samples of a
    Best-of-n run, so one run at N gives the whole test-time-scaling curve.
    """
    meter = CostMeter(policy, rm)
    envs = [env_factory() for _ in range(cfg.n)]
    firsts = [env.reset(cfg.seed) for env in envs]
    limit = turn_limit(envs[0], cfg.max_turns)
    name = getattr(envs[0], "name", "env")
    base = f"{name}/{getattr(envs[0], 'split', 'train')}/{cfg.seed}/bon{cfg.n}"
    trajectories = play_lockstep(envs, policy, seed=cfg.seed, max_turns=limit, first_observations=firsts,
                                 temperature=cfg.temperature, env_name=cfg.env_name or name, one_shot=cfg.one_shot,
                                 max_history=cfg.max_history, ids=[f"{base}#{j}" for j in range(cfg.n)],
                                 on_call=meter.sampled)
    meter.stepped(sum(len(t.steps) for t in trajectories))
    scores = finite_scores(rm.score(trajectories), len(trajectories))
    meter.scored(len(trajectories))
    best = int(np.argmax(scores))  # first maximum: ties go to the earliest sample
    pick = trajectories[random_pick_index(cfg.seed, cfg.n)]
    baselines = {
        "random_pick_success": float(bool(pick.success)),
        "random_pick_progress": float(pick.progress or 0.0),
        "oracle_pass": float(any(bool(t.success) for t in trajectories)),
        "oracle_progress": float(max(t.progress or 0.0 for t in trajectories)),
        "mean_success": float(np.mean([bool(t.success) for t in trajectories])),
    }
    for m in prefix_sizes(cfg.n):
        head, head_scores = trajectories[:m], scores[:m]
        rm_pick = head[int(np.argmax(head_scores))]
        rnd = head[random_pick_index(cfg.seed, m)]
        baselines.update({f"rm_pick_success@{m}": float(bool(rm_pick.success)),
                          f"rm_pick_progress@{m}": float(rm_pick.progress or 0.0),
                          f"random_pick_success@{m}": float(bool(rnd.success)),
                          f"random_pick_progress@{m}": float(rnd.progress or 0.0),
                          f"oracle_pass@{m}": float(any(bool(t.success) for t in head)),
                          f"oracle_progress@{m}": float(max(t.progress or 0.0 for t in head))})
    params = {"n": cfg.n, "temperature": cfg.temperature, "max_turns": limit}
    return SearchResult(method="best_of_n", params=params, trajectory=trajectories[best],
                        score=float(scores[best]), costs=meter.costs(), candidates=tuple(trajectories),
                        scores=tuple(float(s) for s in scores), baselines=baselines)

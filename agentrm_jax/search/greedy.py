"""Greedy decoding: one trajectory at temperature 0, no reward model."""

from __future__ import annotations

from agentrm_jax.agents.loop import play_lockstep
from agentrm_jax.agents.policies import PolicySampler
from agentrm_jax.search.common import CostMeter, EnvFactory, SearchConfig, SearchResult, turn_limit

__all__ = ["greedy"]


def greedy(policy: PolicySampler, env_factory: EnvFactory, cfg: SearchConfig = SearchConfig()) -> SearchResult:
    """Play task `cfg.seed` once, always taking the policy's most likely step (temperature 0).

    Returns a `SearchResult` with method "greedy", no score, and the single
    trajectory as its only candidate.
    """
    meter = CostMeter(policy)
    env = env_factory()
    first = env.reset(cfg.seed)
    limit = turn_limit(env, cfg.max_turns)
    name = getattr(env, "name", "env")
    [trajectory] = play_lockstep([env], policy, seed=cfg.seed, max_turns=limit, first_observations=[first],
                                 temperature=0.0, env_name=cfg.env_name or name, one_shot=cfg.one_shot,
                                 max_history=cfg.max_history,
                                 ids=[f"{name}/{getattr(env, 'split', 'train')}/{cfg.seed}/greedy"],
                                 on_call=meter.sampled)
    meter.stepped(len(trajectory.steps))
    return SearchResult(method="greedy", params={"max_turns": limit}, trajectory=trajectory, score=None,
                        costs=meter.costs(), candidates=(trajectory,))

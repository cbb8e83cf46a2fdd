"""Degenerate searches are greedy: Best-of-1 at temperature 0 and a 1x1 beam play greedy's trajectory.

Checked with a noisy scripted expert on maze and pddl (real actions, many turns; the noise is seeded per
turn, so all three must draw the same noise) and with a tiny random Llama as a JaxPolicy on maze (the
real sampler at temperature 0, the same contexts every turn).
"""

from __future__ import annotations

import pytest

from agentrm_jax.agents.policies import JaxPolicy, ScriptedPolicy
from agentrm_jax.envs import make
from agentrm_jax.models.config import ModelConfig
from agentrm_jax.models.llama import init_model
from agentrm_jax.search import OracleScorer, RandomScorer, SearchConfig, beam_search, best_of_n, greedy


def _played(result):
    t = result.trajectory
    return t.instruction, t.steps, t.success, t.progress


def _all_greedy(policy, factory, seed, max_turns=None):
    cfg = SearchConfig(seed=seed, temperature=0.0, n=1, beam_width=1, expansions=1, max_turns=max_turns)
    g = greedy(policy, factory, cfg)
    return g, best_of_n(policy, RandomScorer(seed=1), factory, cfg), beam_search(policy, OracleScorer(), factory, cfg)


@pytest.mark.parametrize("env_name", ["maze", "pddl"])
def test_best_of_one_and_beam_one_by_one_are_greedy_with_a_scripted_policy(env_name):
    outcomes = set()
    for seed in range(6):
        probe = make(env_name, split="test")
        probe.reset(seed)
        policy = ScriptedPolicy.expert(probe, noise=0.6, seed=7)
        g, bon, beam = _all_greedy(policy, lambda: make(env_name, split="test"), seed)
        assert len(g.trajectory.steps) >= 2
        assert _played(bon) == _played(g), (env_name, seed)
        assert _played(beam) == _played(g), (env_name, seed)
        assert [n.action for n in beam.tree] == [s.action for s in g.trajectory.steps]
        assert bon.trajectory.meta["raw"] == beam.trajectory.meta["raw"] == g.trajectory.meta["raw"]
        outcomes.add(g.success)
    assert outcomes == {True, False}  # the noise matters: some greedy episodes fail, some succeed


def test_best_of_one_and_beam_one_by_one_are_greedy_with_a_jax_policy(bundled_tokenizer):
    config = ModelConfig.tiny(vocab_size=len(bundled_tokenizer), max_position_embeddings=4096)
    policy = JaxPolicy(init_model(config, seed=3), bundled_tokenizer, max_new_tokens=12)
    g, bon, beam = _all_greedy(policy, lambda: make("maze", split="test"), seed=1, max_turns=3)
    assert len(g.trajectory.steps) == 3
    assert _played(bon) == _played(g)
    assert _played(beam) == _played(g)
    assert bon.trajectory.meta["raw"] == beam.trajectory.meta["raw"] == g.trajectory.meta["raw"]
    assert bon.costs.policy_tokens == beam.costs.policy_tokens == g.costs.policy_tokens > 0

"""Search through the real JAX path: a tiny random Llama as the policy and an explicit RM on another.

The text such a policy writes is noise, so this checks plumbing and cost
accounting, not success: shared prefills counted by the sampler itself,
tokens generated and scored, RM scores of partial trajectories in the tree.
"""

import dataclasses

import numpy as np
import pytest
from search_helpers import beam_contexts, lockstep_contexts

from agentrm_jax.agents.policies import JaxPolicy
from agentrm_jax.envs import make
from agentrm_jax.models.config import ModelConfig
from agentrm_jax.models.llama import init_model
from agentrm_jax.rewards.heads import ValueModel
from agentrm_jax.rewards.scoring import ExplicitRM, ScoringConfig
from agentrm_jax.search import SearchConfig, beam_search, best_of_n, greedy


@pytest.fixture(scope="module")
def policy_and_rm(bundled_tokenizer):
    vocab = len(bundled_tokenizer)
    config = ModelConfig.tiny(vocab_size=vocab, max_position_embeddings=4096)
    policy = JaxPolicy(init_model(config, seed=1), bundled_tokenizer, max_new_tokens=16)
    rm = ExplicitRM(ValueModel.create(init_model(config, seed=2), seed=3), bundled_tokenizer,
                    config=ScoringConfig(batch_size=8))
    return policy, rm


def test_beam_and_best_of_n_with_jax_policy_and_explicit_rm(policy_and_rm):
    policy, rm = policy_and_rm
    factory = lambda: make("maze", split="test")  # noqa: E731
    cfg = SearchConfig(seed=2, max_turns=2, n=3, beam_width=2, expansions=3, temperature=1.0)

    def sampler_work(search):
        """(prompt rows prefilled, sequences decoded) by the policy's sampler during `search()`."""
        before, prompted = dataclasses.replace(policy.sampler.stats), policy.stats.prompt_tokens
        result = search()
        after = policy.sampler.stats
        c = result.costs  # the policy's prompt-token counters, as eval rows show them
        assert c.prompt_tokens == policy.stats.prompt_tokens - prompted > 0
        assert (c.prefilled_tokens, c.cache_hit_tokens) == (after.prefilled_tokens - before.prefilled_tokens,
                                                            after.cache_hit_tokens - before.cache_hit_tokens)
        assert c.prefilled_tokens + c.cache_hit_tokens + after.shared_tokens - before.shared_tokens == c.prompt_tokens
        return result, after.prefill_rows - before.prefill_rows, after.decode_rows - before.decode_rows

    beam, prefilled, decoded = sampler_work(lambda: beam_search(policy, rm, factory, cfg))
    c = beam.costs
    assert prefilled == beam_contexts(beam.tree) == c.policy_contexts  # one prefill per live beam and turn
    assert decoded == 3 * prefilled == c.policy_samples  # its K samples decoded from that one prefill
    assert c.prefills_saved == decoded - prefilled and c.policy_tokens > 0 and c.rm_tokens > 0
    stepped = [n for n in beam.tree if not n.duplicate]
    assert all(np.isfinite(n.score) for n in stepped) and all(n.score == -np.inf for n in beam.tree if n.duplicate)
    assert 1 <= len(beam.trajectory.steps) <= 2
    # the chosen trajectory's score is what the RM gives it when scored alone
    np.testing.assert_allclose(rm.score([beam.trajectory])[0], beam.score, atol=1e-5)

    bon, prefilled, decoded = sampler_work(lambda: best_of_n(policy, rm, factory, cfg))
    np.testing.assert_allclose(rm.score(list(bon.candidates)), bon.scores, atol=1e-5)
    assert (prefilled, decoded) == lockstep_contexts(bon.candidates)  # equal histories: one prefill
    assert bon.costs.prefills_saved == decoded - prefilled >= 2 and bon.costs.rm_trajectories == 3

    g1, g2 = greedy(policy, factory, cfg), greedy(policy, factory, cfg)
    assert g1.trajectory == g2.trajectory and g1.costs.policy_tokens > 0

"""Test-time search: greedy, Best-of-N and step-level beam search over a PolicySampler, a reward model and a
TextEnv factory. Every function takes (policy, [rm,] env_factory, SearchConfig) and returns a `SearchResult`."""

from agentrm_jax.search.beam import beam_search, select_beams, select_beams_reference
from agentrm_jax.search.best_of_n import best_of_n, random_pick_index
from agentrm_jax.search.common import Costs, CostMeter, EnvFactory, SearchConfig, SearchNode, SearchResult
from agentrm_jax.search.greedy import greedy, greedy_many
from agentrm_jax.search.scorers import OracleScorer, RandomScorer

__all__ = ["Costs", "CostMeter", "EnvFactory", "OracleScorer", "RandomScorer", "SearchConfig", "SearchNode",
           "SearchResult", "beam_search", "best_of_n", "greedy", "greedy_many", "random_pick_index", "select_beams",
           "select_beams_reference"]

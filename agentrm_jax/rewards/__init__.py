"""Reward models for agent trajectories: explicit value head, implicit PRM, Bradley–Terry, LLM judge.

Every reward model offers `score(trajectories) -> [N]` and
`score_steps(trajectories) -> list of [S_i]` (see `rewards.scoring.RewardModel`).
"""

from agentrm_jax.rewards.explicit import gather_positions, score_transform, value_targets_loss
from agentrm_jax.rewards.heads import HeadConfig, ValueHead, ValueModel
from agentrm_jax.rewards.implicit import (aggregate_steps, implicit_token_rewards, outcome_loss, step_rewards,
                                          token_logprobs, trajectory_rewards)
from agentrm_jax.rewards.io import load_value_model, save_value_model
from agentrm_jax.rewards.pairwise import bradley_terry_loss, pairwise_accuracy
from agentrm_jax.rewards.scoring import (BatchedScorer, ExplicitRM, ImplicitPRM, RewardModel, ScoringConfig,
                                         compile_counts)

__all__ = [
    "BatchedScorer", "ExplicitRM", "HeadConfig", "ImplicitPRM", "RewardModel", "ScoringConfig", "ValueHead",
    "ValueModel", "aggregate_steps", "bradley_terry_loss", "compile_counts", "gather_positions",
    "implicit_token_rewards", "load_value_model", "outcome_loss", "pairwise_accuracy", "save_value_model",
    "score_transform", "step_rewards", "token_logprobs", "trajectory_rewards", "value_targets_loss",
]

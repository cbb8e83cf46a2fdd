"""Reward models for agent trajectories: explicit value head, implicit PRM, Bradley–Terry, LLM judge.

Every reward model offers `score(trajectories) -> [N]` and
`score_steps(trajectories) -> list of [S_i]` (see `rewards.scoring.RewardModel`).
"""

from agentrm_jax.lazy_exports import lazy_exports

# public name -> the submodule that defines it (imported on first use: see lazy_exports)
_EXPORTS = {
    "BatchedScorer": "scoring",
    "ExplicitRM": "scoring",
    "HeadConfig": "heads",
    "ImplicitPRM": "scoring",
    "RewardModel": "scoring",
    "ScoringConfig": "scoring",
    "ValueHead": "heads",
    "ValueModel": "heads",
    "aggregate_steps": "implicit",
    "bradley_terry_loss": "pairwise",
    "compile_counts": "scoring",
    "gather_positions": "explicit",
    "implicit_token_rewards": "implicit",
    "load_value_model": "io",
    "outcome_loss": "implicit",
    "pairwise_accuracy": "pairwise",
    "save_value_model": "io",
    "score_transform": "explicit",
    "step_rewards": "implicit",
    "token_logprobs": "implicit",
    "trajectory_rewards": "implicit",
    "value_targets_loss": "explicit",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

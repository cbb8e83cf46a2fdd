"""Reward models for agent trajectories: explicit value head, implicit PRM, Bradley–Terry, LLM judge.

Every reward model offers `score(trajectories) -> [N]` and
`score_steps(trajectories) -> list of [S_i]` (see `rewards.scoring.RewardModel`).

Underneath, everything numeric is a pure function of arrays, public here for
JAX users (jit / vmap / grad through scoring and losses): docs/API.md lists the
stable surface, its shapes, the padding contract, and what is host-side.
"""

from agentrm_jax.lazy_exports import lazy_exports

# public name -> the submodule that defines it (imported on first use: see lazy_exports)
_EXPORTS = {
    "BatchedScorer": "scoring",
    "ExplicitRM": "scoring",
    "HeadConfig": "heads",
    "ImplicitPRM": "scoring",
    "RenderedTrajectory": "rendering",
    "RewardModel": "scoring",
    "ScoringConfig": "scoring",
    "ValueHead": "heads",
    "ValueModel": "heads",
    "aggregate_steps": "implicit",
    "bce_with_logits": "explicit",
    "bradley_terry_loss": "pairwise",
    "bradley_terry_losses": "pairwise",
    "bucket_shape": "scoring",
    "compile_counts": "scoring",
    "explicit_batch_scores": "functional",
    "explicit_scores": "explicit",
    "gather_positions": "explicit",
    "implicit_batch_scores": "functional",
    "implicit_scores": "implicit",
    "implicit_token_rewards": "implicit",
    "judge_yes_probability": "judge.logit",
    "last_token_index": "explicit",
    "load_value_model": "io",
    "masked_mean": "explicit",
    "masked_sum": "explicit",
    "outcome_loss": "implicit",
    "outcome_losses": "implicit",
    "pad_batch": "scoring",
    "padded_batches": "scoring",
    "pairwise_accuracy": "pairwise",
    "render_batch_for_rm": "rendering",
    "render_padded": "scoring",
    "save_value_model": "io",
    "score_transform": "explicit",
    "step_rewards": "implicit",
    "token_log_ratios": "implicit",
    "token_logprobs": "implicit",
    "trajectory_rewards": "implicit",
    "unpad": "scoring",
    "value_head": "heads",
    "value_losses": "explicit",
    "value_targets_loss": "explicit",
    "yes_probability": "judge.logit",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

"""Periodic held-in evaluation of a policy in training: greedy episodes played with the model as it is.

    EpisodeEval(envs, seeds, tokenizer, ...)(step, model) -> {"play_success": ..., "play_progress": ..., per env}

The trainer calls it at its eval points (`training.trainer.train(evaluator=...)`); each env's seeds
play in lockstep (`agents.loop.play_lockstep`, one batched policy call per turn) through a
`JaxPolicy` over the trained model, adapters unmerged. Numbers are means over the episodes.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["EpisodeEval"]


class EpisodeEval:
    """Greedy episodes of `envs` x `seeds` (of `split`) with the model being trained (see the module docstring)."""

    def __init__(self, envs: Sequence[str], seeds: Sequence[int], tokenizer, *, split: str = "test",
                 max_turns: int | None = None, max_new_tokens: int = 96):
        from agentrm_jax.agents.factory import make_env

        self.tokenizer, self.split, self.seeds = tokenizer, split, list(seeds)
        self.max_turns, self.max_new_tokens = max_turns, max_new_tokens
        self.envs = {name: [make_env(name, seed=s, split=split) for s in self.seeds] for name in envs}

    def __call__(self, step: int, model) -> dict[str, float]:
        from agentrm_jax.agents.loop import play_lockstep
        from agentrm_jax.agents.policies import JaxPolicy

        policy = JaxPolicy(model, self.tokenizer, max_new_tokens=self.max_new_tokens)
        out: dict[str, float] = {}
        success, progress = [], []
        for name, envs in self.envs.items():
            firsts = [env.reset(s) for env, s in zip(envs, self.seeds)]
            limit = min(self.max_turns or envs[0].max_turns, envs[0].max_turns)
            # one seed per call: play_lockstep seeds its turns by (seed, turn), and greedy ignores it
            played = play_lockstep(envs, policy, seed=0, max_turns=limit, first_observations=firsts, env_name=name)
            s = [float(bool(t.success)) for t in played]
            p = [float(t.progress or 0.0) for t in played]
            out[f"play_{name}_success"] = sum(s) / len(s)
            out[f"play_{name}_progress"] = sum(p) / len(p)
            success += s
            progress += p
        if success:
            out["play_success"] = sum(success) / len(success)
            out["play_progress"] = sum(progress) / len(progress)
        return out

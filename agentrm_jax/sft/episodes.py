"""Periodic held-in evaluation of a policy in training: greedy episodes played with the model as it is.

    EpisodeEval(envs, seeds, tokenizer, ...)(step, model) -> {"play_success": ..., "play_progress": ..., per env}
    inference_model(model) -> the model as inference runs it (remat and scanned layers off), weights shared

The trainer calls it at its eval points (`training.trainer.train(evaluator=...)`); each env's seeds
play in lockstep (`agents.loop.play_lockstep`, one batched policy call per turn) through a
`JaxPolicy` over the trained model, adapters unmerged. Numbers are means over the episodes.

The trainer's model carries the run's compute settings (`training.model.backbone_options`): remat and
scanned layers are memory savers for the backward pass, which sampling never takes; under a KV cache a
scanned forward stacks every layer's weights and cache into [L, ...] copies at each decode step. So the
episodes play `inference_model(model)`: the same weights (no copy) with the plain forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["EpisodeEval", "inference_model"]


def inference_model(model):
    """`model` (a LlamaForCausalLM) with remat "none" and scan_layers False: a new module over the same
    weight arrays (nothing copied), or `model` itself when it already runs plain. `model` is unchanged."""
    from flax import nnx

    config = model.config
    if config.remat == "none" and not config.scan_layers:
        return model
    plain = nnx.merge(*nnx.split(model))
    plain.config = dataclasses.replace(config, remat="none", scan_layers=False)  # static: read when traced
    return plain


class EpisodeEval:
    """Greedy episodes of `envs` x `seeds` (of `split`) with the model being trained (see the module docstring)."""

    def __init__(self, envs: Sequence[str], seeds: Sequence[int], tokenizer, *, split: str = "test",
                 max_turns: int | None = None, max_new_tokens: int = 96):
        from agentrm_jax.agents.factory import make_env

        self.tokenizer, self.split, self.seeds = tokenizer, split, list(seeds)
        self.max_turns, self.max_new_tokens = max_turns, max_new_tokens
        self.envs = {name: [make_env(name, seed=s, split=split) for s in self.seeds] for name in envs}

    def policy(self, model):
        """The greedy `JaxPolicy` the episodes play: over `inference_model(model)`."""
        from agentrm_jax.agents.policies import JaxPolicy

        return JaxPolicy(inference_model(model), self.tokenizer, max_new_tokens=self.max_new_tokens)

    def __call__(self, step: int, model) -> dict[str, float]:
        from agentrm_jax.agents.loop import play_lockstep

        policy = self.policy(model)
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

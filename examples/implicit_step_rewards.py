"""Implicit-PRM step rewards for token arrays produced elsewhere (another sampler, a dataset): no tokenizer.

What you bring per row: token ids, an attention mask (explicit, never derived from pad ids), an
agent mask (the policy's own tokens) and each step's first / last token index (-1 = no step).
Rows may be left- or right-padded: positions come from the mask, so padding changes nothing.
The PRM is beta * (log pi_theta - log pi_ref) summed over each step's agent tokens
(`implicit_batch_scores`), jitted here on (graphdef, state) pairs.

    python examples/implicit_step_rewards.py
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from agentrm_jax.models import ModelConfig, init_model
from agentrm_jax.rewards import implicit_batch_scores


def fake_sampler_output(batch: int, length: int, steps: int, vocab: int, seed: int = 0, left_pad: bool = True
                        ) -> dict[str, np.ndarray]:
    """Stand-in for another system's output: rows of varied length, `steps` agent turns each."""
    rng = np.random.default_rng(seed)
    out = {k: np.zeros((batch, length), dt) for k, dt in
           [("input_ids", np.int32), ("attention_mask", bool), ("agent_mask", bool)]}
    out["step_starts"], out["step_ends"] = (np.full((batch, steps), -1, np.int32) for _ in range(2))
    for row in range(batch):
        n = int(rng.integers(length // 2, length + 1))
        offset = length - n if left_pad else 0
        out["input_ids"][row, offset:offset + n] = rng.integers(3, vocab, n)
        out["attention_mask"][row, offset:offset + n] = True
        bounds = np.sort(rng.choice(np.arange(2, n), 2 * steps, replace=False)) + offset  # start, end pairs
        for s, (lo, hi) in enumerate(bounds.reshape(steps, 2)):
            out["agent_mask"][row, lo:hi + 1] = True
            out["step_starts"][row, s], out["step_ends"][row, s] = lo, hi
    return out


def main(batch: int = 3, length: int = 40, steps: int = 3, beta: float = 0.5, how: str = "min", seed: int = 0,
         left_pad: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(scores [B], step rewards [B, S]) of a random policy against a random reference."""
    config = ModelConfig.tiny()
    (g, s), (rg, rs) = nnx.split(init_model(config, seed=seed)), nnx.split(init_model(config, seed=seed + 1))

    @functools.partial(jax.jit, static_argnames="how")
    def prm(s, rs, batch, beta, how):
        return implicit_batch_scores(nnx.merge(g, s), nnx.merge(rg, rs), batch, beta=beta, how=how)

    arrays = fake_sampler_output(batch, length, steps, config.vocab_size, seed, left_pad)
    scores, step_rewards = prm(s, rs, arrays, beta, how)
    return np.asarray(scores), np.asarray(step_rewards)


if __name__ == "__main__":
    scores, steps = main()
    print("step rewards:\n", np.round(steps, 4), "\nscores (min over steps):", np.round(scores, 4))

"""KV-cache sampling: `generate` (text in, text out) and the `Sampler` it wraps."""

from agentrm_jax.sampling.sampler import Completion, Sampler, SamplerStats, compile_counts, generate
from agentrm_jax.sampling.strategies import SamplingStrategy, select_next

__all__ = ["Completion", "Sampler", "SamplerStats", "SamplingStrategy", "compile_counts", "generate",
           "select_next"]

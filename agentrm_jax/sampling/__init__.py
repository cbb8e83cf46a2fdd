"""KV-cache sampling: `generate` (text in, text out), the `Sampler` it wraps and its `PrefixCache`."""

from agentrm_jax.lazy_exports import lazy_exports

# public name -> the submodule that defines it (imported on first use: see lazy_exports)
_EXPORTS = {
    "Completion": "sampler",
    "PrefixCache": "prefix_cache",
    "Sampler": "sampler",
    "SamplerStats": "sampler",
    "SamplingStrategy": "strategies",
    "compile_counts": "sampler",
    "generate": "sampler",
    "select_next": "strategies",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

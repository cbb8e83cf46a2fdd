"""XLA's persistent compilation cache for the commands that compile model programs.

On this project's CPUs a large part of a cold eval, demo or training run is compiling: the sampler
compiles a prefill and a decode program per (rows, length bucket), each a few seconds to tens of
seconds for a 30-layer model, and an agent episode whose context grows every turn meets a new
bucket every turn or two. Kept on disk, those programs are loaded instead of compiled by the next
command that needs the same shapes: a resumed eval, a second policy on the same envs, a rerun.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_MAX_BYTES", "use_persistent_compile_cache"]

# Bound on the cache folder (least recently used programs go first); a sampler program of the bundled
# model is a few MB, so this holds several thousand.
DEFAULT_MAX_BYTES = 4 << 30


def use_persistent_compile_cache(max_bytes: int = DEFAULT_MAX_BYTES) -> str | None:
    """Point jax at the on-disk cache; returns its folder, or None when it is switched off.

    The folder: $JAX_COMPILATION_CACHE_DIR if set (jax reads it itself, and its size bound too), else
    $AGENTRM_CACHE/jax_compile, else ~/.cache/agentrm_jax/jax_compile. AGENTRM_COMPILE_CACHE=0
    switches it off. Only programs that took over a second to compile are stored (jax's default).
    """
    if os.environ.get("AGENTRM_COMPILE_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    explicit = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if explicit:
        return explicit
    import jax

    from agentrm_jax.models.gguf_tokenizer import default_cache_dir

    folder = str(default_cache_dir() / "jax_compile")
    jax.config.update("jax_compilation_cache_dir", folder)
    if jax.config.jax_compilation_cache_max_size == -1:  # unbounded unless the user set a bound
        jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
    return folder

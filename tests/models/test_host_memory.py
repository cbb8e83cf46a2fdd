"""release_compiled_programs: jitted functions lose their programs, still work, and recompile once."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agentrm_jax.models.host_memory import release_compiled_programs


def test_release_drops_compiled_programs_and_jitted_functions_still_work():
    @jax.jit
    def double(x):
        return x * 2

    assert float(double(jnp.float32(3))) == 6.0
    assert double._cache_size() == 1
    release_compiled_programs()
    assert double._cache_size() == 0
    assert float(double(jnp.float32(4))) == 8.0 and double._cache_size() == 1

"""Giving a long-running process's host memory back between lockstep turns.

A lockstep eval group plays 20 episodes for up to 30 turns, and its contexts grow every turn, so
nearly every turn meets new length buckets and compiles new prefill and decode programs; jax
keeps every compiled program for the life of the process, and glibc keeps the heap that freed
XLA buffers leave behind. On the twx group (docs/BENCHMARKS.md) that grew RSS by about 1 GB a turn
while live arrays stayed under 1.3 GB; dropping the programs and trimming the heap after each
turn kept RSS within 0.5 GB of the live arrays, for about 9% more wall time without the persistent
compile cache (programs still needed are recompiled, or loaded from that cache when it is on).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_compiled_programs"]


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_compiled_programs() -> None:
    """Drop every compiled jax program this process holds (`jax.clear_caches()`) and return freed heap
    to the OS (glibc's `malloc_trim(0)`; a no-op elsewhere).

    Process-wide: every jitted function recompiles on its next call (or loads from the persistent
    compile cache; the small programs under its 1 s threshold always recompile), so only commands
    that own their process call it, between the turns of a lockstep group: shapes that recur the
    next turn cost a recompile or a reload (~9% more wall on twx), the rest were never needed
    again. Takes ~0.1-0.2 s on a 2-4 GB heap.
    """
    import jax

    jax.clear_caches()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

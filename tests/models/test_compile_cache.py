"""The on-disk compilation cache the model commands turn on."""

from __future__ import annotations

import jax
import pytest

from agentrm_jax.models.compile_cache import DEFAULT_MAX_BYTES, use_persistent_compile_cache


@pytest.fixture
def jax_cache_config():
    """Restores jax's process-wide cache settings after the test."""
    saved = jax.config.jax_compilation_cache_dir, jax.config.jax_compilation_cache_max_size
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_compilation_cache_max_size", saved[1])


def test_the_cache_lives_under_agentrm_cache_with_a_size_bound(tmp_path, monkeypatch, jax_cache_config):
    monkeypatch.setenv("AGENTRM_COMPILE_CACHE", "1")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("AGENTRM_CACHE", str(tmp_path))
    jax.config.update("jax_compilation_cache_max_size", -1)
    folder = use_persistent_compile_cache()
    assert folder == str(tmp_path / "jax_compile")
    assert jax.config.jax_compilation_cache_dir == folder
    assert jax.config.jax_compilation_cache_max_size == DEFAULT_MAX_BYTES


def test_a_users_bound_and_folder_are_kept(tmp_path, monkeypatch, jax_cache_config):
    monkeypatch.setenv("AGENTRM_COMPILE_CACHE", "1")
    monkeypatch.setenv("AGENTRM_CACHE", str(tmp_path))
    jax.config.update("jax_compilation_cache_max_size", 123)
    use_persistent_compile_cache()
    assert jax.config.jax_compilation_cache_max_size == 123
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert use_persistent_compile_cache() == str(tmp_path / "mine")


def test_switched_off_it_changes_nothing(tmp_path, monkeypatch, jax_cache_config):
    monkeypatch.setenv("AGENTRM_COMPILE_CACHE", "off")
    monkeypatch.setenv("AGENTRM_CACHE", str(tmp_path))
    before = jax.config.jax_compilation_cache_dir
    assert use_persistent_compile_cache() is None
    assert jax.config.jax_compilation_cache_dir == before

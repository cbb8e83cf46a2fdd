"""Text environments (no JAX here): the TextEnv protocol, the registry, and `make`."""

from agentrm_jax.envs.base import REGISTRY, EnvSpec, ReplayEnv, TextEnv, make, register, registered, task_seed

__all__ = ["REGISTRY", "EnvSpec", "ReplayEnv", "TextEnv", "make", "register", "registered", "task_seed"]

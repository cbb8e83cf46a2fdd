"""Text environments (no JAX here): the TextEnv protocol, the registry, and `make`.

Importing this package registers every environment; each module keeps its
third-party simulator imports (minigrid, textworld, scienceworld, ...) inside
functions, so registration is cheap and an env whose simulator is missing
fails only when made, with an install hint.
"""

from agentrm_jax.envs import (agentgym, alfworld, babyai, maze, paraphrase, pddl, sciworld, shop,  # noqa: F401
                              textworld, tools, twx, webshop)
from agentrm_jax.envs.base import REGISTRY, EnvSpec, ReplayEnv, TextEnv, make, register, registered, task_seed

__all__ = ["REGISTRY", "EnvSpec", "ReplayEnv", "TextEnv", "make", "register", "registered", "task_seed"]

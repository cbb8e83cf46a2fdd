"""agentrm_jax: reward models that guide LLM agents, in JAX (after AgentRM, arXiv 2502.18407)."""

__version__ = "0.1.0"

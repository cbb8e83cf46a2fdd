"""Evaluation: an eval config, a resumable runner over envs x methods x seeds, and the report (table + plots)."""

from agentrm_jax.evaluate.config import EvalConfig, Method, parse_methods
from agentrm_jax.evaluate.runner import Episode, EpisodeRunner, plan_episodes, read_rows, run_eval

__all__ = ["EvalConfig", "Episode", "EpisodeRunner", "Method", "parse_methods", "plan_episodes", "read_rows",
           "run_eval"]

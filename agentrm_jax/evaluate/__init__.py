"""Evaluation: an eval config, a resumable runner over envs x methods x seeds, and the report (table + plots)."""

from agentrm_jax.lazy_exports import lazy_exports

# public name -> the submodule that defines it (imported on first use: see lazy_exports)
_EXPORTS = {
    "Episode": "runner",
    "EpisodeRunner": "runner",
    "EvalConfig": "config",
    "Method": "config",
    "parse_methods": "config",
    "plan_episodes": "runner",
    "read_rows": "runner",
    "run_eval": "runner",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

"""MCTS exploration, the first stage of the AgentRM pipeline: trees of state values -> RM training records.

    uct       the selection and backup arithmetic (pure functions)
    config    ExploreConfig (YAML + flags), parse_seeds
    tree      Tree / Node records (one JSON line per tree)
    mcts      TreeSearch (one tree, a coroutine) and grow_trees (a chunk of trees in lockstep)
    runner    run_explore: resumable trees JSONL, header, worker processes, progress bar
    ray_workers  the same on Ray actors (optional extra agentrm_jax[ray]; imported only with --ray)
    samples   trees -> regression records (state values) and sibling preference pairs
    show      a tree in the terminal, or as one self-contained HTML page
    stats     trees, nodes, value spread, roots with a success (per env and split)
    commands  `agentrm explore`, `agentrm samples`, `agentrm tree show`, `agentrm tree stats`

Names are exported lazily (importing the package imports nothing heavy), as in models/ and rewards/.
"""

from agentrm_jax.lazy_exports import lazy_exports

_EXPORTS = {
    "ExploreConfig": "config", "parse_seeds": "config", "Tree": "tree", "Node": "tree", "TreeSearch": "mcts",
    "ExploreError": "mcts", "grow_trees": "mcts", "run_explore": "runner", "read_trees": "runner",
    "regression_records": "samples", "preference_pairs": "samples", "render_text": "show", "render_html": "show",
    "tree_stats": "stats",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

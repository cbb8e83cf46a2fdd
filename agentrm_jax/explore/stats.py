"""What a set of explore trees holds, as numbers: `tree_stats(trees)` per (env, split).

    trees / nodes / nodes_per_tree / max_depth
    value_mean / value_std / value_p10 / value_p50 / value_p90   over visited non-root nodes (the states
        `agentrm samples` turns into regression records; the root is the bare instruction)
    graded            fraction of those nodes whose value is strictly between 0 and 1 (neither sure
                      failure nor sure success: the states that teach a regression head the most)
    root_value        mean of the roots' values (the policy's expected outcome on the task)
    solved_roots      fraction of trees with at least one success: a node whose state is solved, or a
                      rollout that ended solved (outcome 1.0)

Pure Python over `Tree` records (no numpy), so `agentrm tree stats` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from agentrm_jax.explore.tree import Tree

__all__ = ["format_stats", "tree_stats"]


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of an ascending list."""
    if not sorted_values:
        return math.nan
    at = q * (len(sorted_values) - 1)
    lo = math.floor(at)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (at - lo)


def _solved(tree: Tree) -> bool:
    return any(n.success or any(r >= 1.0 for r in n.rollouts) for n in tree.nodes)


def _one_group(trees: list[Tree]) -> dict[str, float]:
    values = sorted(n.value for t in trees for n in t.nodes[1:] if n.visits > 0)
    count = len(values)
    mean = sum(values) / count if count else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / count) if count else math.nan
    nodes = sum(len(t.nodes) for t in trees)
    return {"trees": len(trees), "nodes": nodes, "nodes_per_tree": nodes / len(trees),
            "max_depth": max(n.depth for t in trees for n in t.nodes), "valued_nodes": count,
            "value_mean": mean, "value_std": std, "value_p10": _quantile(values, 0.1),
            "value_p50": _quantile(values, 0.5), "value_p90": _quantile(values, 0.9),
            "graded": sum(0.0 < v < 1.0 for v in values) / count if count else math.nan,
            "root_value": sum(t.nodes[0].value for t in trees) / len(trees),
            "solved_roots": sum(_solved(t) for t in trees) / len(trees)}


def tree_stats(trees: Iterable[Tree]) -> dict[str, dict[str, float]]:
    """{"env/split": statistics (see the module docstring)} for each (env, split) among `trees`, in order of
    first appearance; an empty input gives {}."""
    groups: dict[str, list[Tree]] = {}
    for tree in trees:
        groups.setdefault(f"{tree.env}/{tree.split}", []).append(tree)
    return {name: _one_group(group) for name, group in groups.items()}


def format_stats(stats: dict[str, dict[str, float]]) -> str:
    """One line per (env, split) for a terminal."""
    lines = []
    for name, s in stats.items():
        lines.append(f"{name}: {s['trees']} trees, {s['nodes']} nodes ({s['nodes_per_tree']:.1f}/tree, depth <= "
                     f"{s['max_depth']}); node values mean {s['value_mean']:.3f} sd {s['value_std']:.3f} "
                     f"p10/50/90 {s['value_p10']:.2f}/{s['value_p50']:.2f}/{s['value_p90']:.2f}, graded "
                     f"{s['graded']:.2f}; root value {s['root_value']:.3f}; roots with a success "
                     f"{s['solved_roots']:.2f}")
    return "\n".join(lines)

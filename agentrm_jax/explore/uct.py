"""The arithmetic of the search tree, as pure functions over per-node statistics.

A tree is described by parallel sequences indexed by node id (the root is 0):
`visits[i]` (simulations whose value passed through node i), `value_sums[i]`
(the sum of those values, each in [0, 1]) and `children[i]` (ids of i's
children, in creation order). Nothing here mutates its inputs.

    uct_score     value + c * prior * sqrt(ln N_parent / n_child); +inf when n_child == 0
    select_child  the child with the highest score (unvisited children first; ties: the earliest)
    select_path   root -> leaf by repeated `select_child` (a leaf: a node without children)
    backup        visits and value sums after adding one simulation's value along a path
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["backup", "mean_value", "select_child", "select_path", "uct_score"]


def mean_value(value_sum: float, visits: int) -> float:
    """A node's value: the mean of the values backed up through it (0 for an unvisited node)."""
    return value_sum / visits if visits > 0 else 0.0


def uct_score(value_sum: float, visits: int, parent_visits: int, c: float, prior: float = 1.0) -> float:
    """UCT of a child: its mean value plus c * prior * sqrt(ln(parent visits) / child visits).

    An unvisited child scores +inf, so every child is tried once before any is tried twice.
    `prior` (1 when unused) scales the exploration term, e.g. by the policy's sample frequency.
    """
    if visits <= 0:
        return math.inf
    return value_sum / visits + c * prior * math.sqrt(math.log(max(parent_visits, 1)) / visits)


def select_child(visits: Sequence[int], value_sums: Sequence[float], parent_visits: int, c: float,
                 priors: Sequence[float] | None = None) -> int:
    """Index (into the given sequences) of the child with the highest `uct_score`; ties go to the earliest."""
    if not visits:
        raise ValueError("select_child needs at least one child")
    best, best_score = 0, -math.inf
    for i, (n, w) in enumerate(zip(visits, value_sums)):
        score = uct_score(w, n, parent_visits, c, 1.0 if priors is None else priors[i])
        if score > best_score:
            best, best_score = i, score
    return best


def select_path(children: Sequence[Sequence[int]], visits: Sequence[int],
                value_sums: Sequence[float], c: float, priors: Sequence[float] | None = None) -> list[int]:
    """Node ids from the root (0) to a leaf, choosing `select_child` at every node with children.

    children[i]: node i's children ids; priors[i]: node i's prior (used when its parent selects among its siblings), or None for none.
    """
    path = [0]
    while True:
        kids = children[path[-1]]
        if not kids:
            return path
        i = select_child([visits[k] for k in kids], [value_sums[k] for k in kids], visits[path[-1]], c,
                         None if priors is None else [priors[k] for k in kids])
        path.append(kids[i])


def backup(visits: Sequence[int], value_sums: Sequence[float], path: Sequence[int], value: float,
           count: int = 1) -> tuple[list[int], list[float]]:
    """(visits, value_sums) after backing `value` up along `path`: every node on it gains `count` visits
    and `count * value` of value sum. `value` must lie in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"a backed-up value must lie in [0, 1], got {value!r}")
    new_visits, new_sums = list(visits), list(value_sums)
    for node in path:
        new_visits[node] += count
        new_sums[node] += count * value
    return new_visits, new_sums

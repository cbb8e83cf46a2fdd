"""Trees -> training records for reward models.

    regression_records(trees, min_visits=, balance=)   one Trajectory per distinct state, `value` = its mean outcome
    preference_pairs(trees, min_visits=, margin=)      sibling (chosen, rejected) pairs for Bradley-Terry

A regression record is the trajectory that reaches a node (the instruction, then the steps on its
path) with `value` = the node's mean backed-up outcome in [0, 1], in the record schema `agentrm train`
reads (`records.Trajectory`; the explicit RM regresses `value`); `meta` holds the visits, the depth,
and the tree key and node ids it came from.

Deduplication by state: two nodes are one state when they belong to the same task (env, split, seed,
instruction) and their paths took the same actions and saw the same observations (thoughts are
ignored: they do not change the env). This merges equal states of different trees files or runs
given together, and nodes whose paths differ only in the thought. A merged state's visits are the
sum of its nodes' visits and its value their visit-weighted mean (sum of value sums / sum of visits);
the record keeps the steps (thoughts included) of its most visited node. `min_visits` applies to the
merged visits.

`balance=True` keeps as many records with value >= 0.5 as with value < 0.5 (the most visited of the
larger side; ties by order), so a regression head does not learn the majority value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from agentrm_jax.records import PreferencePair, Trajectory
from agentrm_jax.explore.tree import Tree

__all__ = ["preference_pairs", "regression_records", "state_key"]


def state_key(tree: Tree, node_id: int) -> str:
    """The state a node stands for (see the module docstring), as a sha256 hex digest."""
    steps = [[tree.nodes[i].action, tree.nodes[i].observation] for i in tree.path(node_id)[1:]]
    blob = json.dumps([tree.env, tree.split, tree.seed, tree.instruction, steps], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _clip(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def regression_records(trees: Iterable[Tree], *, min_visits: int = 1, balance: bool = False) -> list[Trajectory]:
    """One record per distinct state with at least `min_visits` visits, in order of first appearance."""
    if min_visits < 1:
        raise ValueError(f"--min-visits must be >= 1, got {min_visits}")
    states: dict[str, dict] = {}
    for tree in trees:
        for node in tree.nodes:
            if node.visits == 0:
                continue
            key = state_key(tree, node.id)
            entry = states.setdefault(key, {"visits": 0, "value_sum": 0.0, "best": None, "sources": []})
            entry["visits"] += node.visits
            entry["value_sum"] += node.value_sum
            entry["sources"].append(f"{tree.key}#{node.id}")
            if entry["best"] is None or node.visits > entry["best"][1].visits:
                entry["best"] = (tree, node)
    records = []
    for entry in states.values():
        if entry["visits"] < min_visits:
            continue
        tree, node = entry["best"]
        records.append(tree.trajectory(node.id).replace(
            value=_clip(entry["value_sum"] / entry["visits"]),
            meta={"visits": entry["visits"], "depth": node.depth, "nodes": entry["sources"]}))
    if balance:
        records = _balanced(records)
    return records


def _balanced(records: list[Trajectory]) -> list[Trajectory]:
    high = [i for i, r in enumerate(records) if r.value >= 0.5]
    low = [i for i, r in enumerate(records) if r.value < 0.5]
    if not high or not low:
        side = "value >= 0.5" if high else "value < 0.5"
        raise ValueError(f"--balance: all {len(records)} records have {side}, so nothing is left to balance "
                         "them against; drop --balance or explore with more noise")
    n = min(len(high), len(low))

    def most_visited(indices: list[int]) -> set[int]:
        return set(sorted(indices, key=lambda i: (-records[i].meta["visits"], i))[:n])

    keep = most_visited(high) | most_visited(low)
    return [r for i, r in enumerate(records) if i in keep]


def preference_pairs(trees: Iterable[Tree], *, min_visits: int = 1, margin: float = 0.2) -> list[PreferencePair]:
    """(chosen, rejected) for every two siblings with >= min_visits visits whose values differ by >= margin.

    Siblings share the prefix up to their parent, so a pair isolates one step: the chosen trajectory
    ends in the better child's step. Each side carries its node's value.
    """
    if min_visits < 1:
        raise ValueError(f"--min-visits must be >= 1, got {min_visits}")
    if not 0.0 < margin <= 1.0:
        raise ValueError(f"--margin must lie in (0, 1], got {margin}")
    pairs = []
    for tree in trees:
        for kids in tree.children():
            good = [tree.nodes[i] for i in kids if tree.nodes[i].visits >= min_visits]
            for a in good:
                for b in good:
                    if a.value - b.value >= margin:
                        pairs.append(PreferencePair(
                            chosen=tree.trajectory(a.id).replace(value=_clip(a.value)),
                            rejected=tree.trajectory(b.id).replace(value=_clip(b.value)),
                            id=f"{tree.key}#{a.id}>{b.id}"))
    return pairs

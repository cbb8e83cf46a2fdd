"""The search tree of one task as an immutable record, and its JSON line.

    {"key": "maze|train|3", "env", "split", "seed", "fingerprint", "instruction",
     "simulations", "nodes": [node, ...]}
    node: {"id", "parent" (null at the root), "depth", "thought", "action", "text" (the policy's raw step
           text), "observation", "count" (how many of the k expansion samples proposed this step; 1 at the
           root), "visits", "value_sum", "value" (value_sum / visits), "terminal", "outcome" (the env's
           outcome at a terminal node, else null), "success", "progress", "rollouts" (outcomes of the
           rollouts started at this node)}

Nodes are listed parents first (a node's id is its index); the root (id 0) is the state after
`reset(seed)`, whose observation is the instruction. `visits` counts the simulations whose value
passed through a node; `value_sum` is the sum of those values, so `value` is a mean outcome in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentrm_jax.records import RecordError, Step, Trajectory
from agentrm_jax.explore.uct import mean_value

__all__ = ["Node", "Tree", "tree_key"]


def tree_key(env: str, split: str, seed: int) -> str:
    """The key naming one task's tree in a trees file: `env|split|seed`."""
    return f"{env}|{split}|{seed}"


@dataclass(frozen=True)
class Node:
    """One state of the tree: the step that led to it and its statistics (see the module docstring)."""

    id: int
    parent: int | None
    depth: int
    thought: str = ""
    action: str = ""
    text: str = ""
    observation: str = ""
    count: int = 1
    visits: int = 0
    value_sum: float = 0.0
    terminal: bool = False
    outcome: float | None = None
    success: bool = False
    progress: float = 0.0
    rollouts: tuple[float, ...] = ()

    @property
    def value(self) -> float:
        """Mean backed-up value (0 for an unvisited node)."""
        return mean_value(self.value_sum, self.visits)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "parent": self.parent, "depth": self.depth, "thought": self.thought,
                "action": self.action, "text": self.text, "observation": self.observation, "count": self.count,
                "visits": self.visits, "value_sum": self.value_sum, "value": self.value, "terminal": self.terminal,
                "outcome": self.outcome, "success": self.success, "progress": self.progress,
                "rollouts": list(self.rollouts)}


_NODE_FIELDS = {"id": int, "parent": (int, type(None)), "depth": int, "thought": str, "action": str, "text": str,
                "observation": str, "count": int, "visits": int, "value_sum": (int, float), "terminal": bool,
                "outcome": (int, float, type(None)), "success": bool, "progress": (int, float), "rollouts": list}


@dataclass(frozen=True)
class Tree:
    """The tree grown for task `seed` of `env`'s `split`; `nodes[i].id == i`, parents before children."""

    env: str
    split: str
    seed: int
    instruction: str
    nodes: tuple[Node, ...]
    fingerprint: str = ""
    simulations: int = 0

    @property
    def key(self) -> str:
        return tree_key(self.env, self.split, self.seed)

    def children(self) -> list[list[int]]:
        """children()[i]: the ids of node i's children, in creation order."""
        kids: list[list[int]] = [[] for _ in self.nodes]
        for node in self.nodes[1:]:
            kids[node.parent].append(node.id)
        return kids

    def path(self, node_id: int) -> list[int]:
        """Node ids from the root to `node_id`."""
        path = [node_id]
        while self.nodes[path[-1]].parent is not None:
            path.append(self.nodes[path[-1]].parent)
        return path[::-1]

    def trajectory(self, node_id: int) -> Trajectory:
        """The trajectory that reaches node `node_id`: the instruction, then each step on its path."""
        steps = tuple(Step(self.nodes[i].thought, self.nodes[i].action, self.nodes[i].observation)
                      for i in self.path(node_id)[1:])
        return Trajectory(task=self.env, instruction=self.instruction, steps=steps,
                          id=f"{self.key}#{node_id}")

    def best_path(self) -> list[int]:
        """From the root, the most visited child each time (ties: the higher value, then the earliest)."""
        kids = self.children()
        path = [0]
        while kids[path[-1]]:
            path.append(max(kids[path[-1]], key=lambda i: (self.nodes[i].visits, self.nodes[i].value, -i)))
        return path

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "env": self.env, "split": self.split, "seed": self.seed,
                "fingerprint": self.fingerprint, "instruction": self.instruction, "simulations": self.simulations,
                "nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, record: Any, *, where: str = "tree") -> Tree:
        """Parse a tree line; RecordError names the field (the caller adds file:line)."""
        if not isinstance(record, dict):
            raise RecordError(f"{where} must be a JSON object")
        for key, kind in (("env", str), ("split", str), ("seed", int), ("instruction", str), ("nodes", list)):
            if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
                raise RecordError(f"{where}: {key} must be a {kind.__name__}, got {record.get(key)!r}", field=key)
        nodes = []
        for i, raw in enumerate(record["nodes"]):
            if not isinstance(raw, dict):
                raise RecordError(f"{where}: nodes[{i}] must be an object", field=f"nodes[{i}]")
            for key, kind in _NODE_FIELDS.items():
                value = raw.get(key)
                if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                    raise RecordError(f"{where}: nodes[{i}].{key} has the wrong type ({value!r})",
                                      field=f"nodes[{i}].{key}")
            if raw["id"] != i or (i == 0) != (raw["parent"] is None) or (i and not 0 <= raw["parent"] < i):
                raise RecordError(f"{where}: nodes[{i}] is out of order (ids are indices, parents come first)",
                                  field=f"nodes[{i}]")
            nodes.append(Node(**{k: raw[k] for k in _NODE_FIELDS if k != "rollouts"},
                              rollouts=tuple(float(r) for r in raw["rollouts"])))
        if not nodes:
            raise RecordError(f"{where}: a tree has at least its root node", field="nodes")
        return cls(env=record["env"], split=record["split"], seed=record["seed"], instruction=record["instruction"],
                   nodes=tuple(nodes), fingerprint=str(record.get("fingerprint", "")),
                   simulations=int(record.get("simulations", 0)))

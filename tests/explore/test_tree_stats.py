"""`tree_stats` / `agentrm tree stats` on hand-built trees whose figures are worked out by hand."""

from __future__ import annotations

import json
import math

import pytest

from agentrm_jax.cli import main
from agentrm_jax.explore.stats import tree_stats
from agentrm_jax.explore.tree import Node, Tree


def tree(seed: int, children: list[tuple[int, float, bool, tuple[float, ...]]], split: str = "train") -> Tree:
    """A root with one level of children given as (visits, value_sum, success, rollouts)."""
    visits = sum(c[0] for c in children)
    total = sum(c[1] for c in children)
    nodes = [Node(id=0, parent=None, depth=0, visits=visits, value_sum=total)]
    nodes += [Node(id=i + 1, parent=0, depth=1, action=f"a{i}", visits=v, value_sum=s, success=ok, rollouts=r)
              for i, (v, s, ok, r) in enumerate(children)]
    return Tree(env="coin", split=split, seed=seed, instruction="hi", nodes=tuple(nodes))


TREES = [
    tree(0, [(2, 2.0, True, (1.0, 1.0)), (2, 0.0, False, (0.0, 0.0))]),  # values 1, 0; a solved state
    tree(1, [(2, 1.0, False, (0.5, 0.5)), (1, 0.25, False, (0.25,)), (0, 0.0, False, ())]),  # 0.5, 0.25, unvisited
    tree(2, [(1, 0.0, False, (0.0,))], split="test"),
]


def test_figures_match_the_hand_computation():
    stats = tree_stats(TREES)
    assert list(stats) == ["coin/train", "coin/test"]
    train = stats["coin/train"]
    values = [0.0, 0.25, 0.5, 1.0]  # visited non-root nodes; the unvisited one is left out
    assert train["trees"] == 2 and train["nodes"] == 7 and train["valued_nodes"] == 4 and train["max_depth"] == 1
    assert train["value_mean"] == pytest.approx(sum(values) / 4)
    assert train["value_std"] == pytest.approx(math.sqrt(sum((v - 0.4375) ** 2 for v in values) / 4))
    assert train["value_p50"] == pytest.approx(0.375) and train["value_p10"] == pytest.approx(0.075)
    assert train["graded"] == pytest.approx(0.5)  # 0.25 and 0.5
    assert train["root_value"] == pytest.approx((2.0 / 4 + 1.25 / 3) / 2)
    assert train["solved_roots"] == 0.5  # tree 0 only: progress rollouts of 0.5 are no success
    test = stats["coin/test"]
    assert test["trees"] == 1 and test["solved_roots"] == 0.0 and test["value_std"] == 0.0


def test_the_command_prints_one_line_per_env_split_and_json(tmp_path, capsys):
    path = tmp_path / "trees.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"kind": "agentrm.explore/trees", "version": 1},
                                                      *(t.to_dict() for t in TREES)]) + "\n")
    assert main(["tree", "stats", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("coin/train: 2 trees, 7 nodes") and "roots with a success 0.50" in out[0]
    assert main(["tree", "stats", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["coin/test"]["nodes"] == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"kind": "agentrm.explore/trees", "version": 1}\n')
    assert main(["tree", "stats", str(empty)]) == 2
    assert "no trees" in capsys.readouterr().err

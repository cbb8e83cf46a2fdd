"""Trees -> regression records and pairs (read by the trainer's data pipeline), and the tree views."""

from __future__ import annotations

import json
import re

import pytest
from explore_helpers import CoinEnv, CoinPolicy

from agentrm_jax.cli import main
from agentrm_jax.explore.config import ExploreConfig
from agentrm_jax.explore.mcts import grow_trees
from agentrm_jax.explore.samples import preference_pairs, regression_records, state_key
from agentrm_jax.explore.show import render_html, render_text, value_bar
from agentrm_jax.explore.tree import Node, Tree
from agentrm_jax.records import read_jsonl


def coin_trees(seeds=(0, 1), simulations=20):
    cfg = ExploreConfig(env="coin", seeds=seeds, simulations=simulations, k=6, rollouts=2)
    policy = CoinPolicy()
    return sorted(grow_trees(cfg, seeds, policy_for=lambda s: policy, factory=CoinEnv), key=lambda t: t.seed)


def hand_tree() -> Tree:
    #  0 -- 1 "go" (thought A) -- 3 "stop"
    #    \- 2 "go" (thought B, same observation as 1)
    nodes = (Node(0, None, 0, observation="start", visits=10, value_sum=6.0),
             Node(1, 0, 1, thought="A", action="go", observation="moved", visits=6, value_sum=6.0),
             Node(2, 0, 1, thought="B", action="go", observation="moved", visits=2, value_sum=0.0),
             Node(3, 1, 2, action="stop", observation="stopped", visits=1, value_sum=1.0, terminal=True, outcome=1.0),
             Node(4, 0, 1, action="wait", observation="waited", visits=2, value_sum=0.0))
    return Tree(env="toy", split="train", seed=0, instruction="start", nodes=nodes)


def test_states_are_deduplicated_by_actions_and_observations():
    tree = hand_tree()
    assert state_key(tree, 1) == state_key(tree, 2) != state_key(tree, 4)
    records = regression_records([tree])
    assert [r.id for r in records] == ["toy|train|0#0", "toy|train|0#1", "toy|train|0#3", "toy|train|0#4"]
    merged = records[1]
    assert merged.value == pytest.approx(6.0 / 8) and merged.meta["visits"] == 8
    assert merged.steps[0].thought == "A"  # the most visited node's steps
    assert merged.meta["nodes"] == ["toy|train|0#1", "toy|train|0#2"]
    # the same tree twice (two files given together): every state once, visits summed, values unchanged
    twice = regression_records([tree, tree])
    assert [r.value for r in twice] == [r.value for r in records]
    assert [r.meta["visits"] for r in twice] == [2 * r.meta["visits"] for r in records]
    assert [r.id for r in regression_records([tree], min_visits=3)] == ["toy|train|0#0", "toy|train|0#1"]


def test_balance_keeps_equal_halves_and_refuses_one_sided_sets():
    records = regression_records([hand_tree()], balance=True)
    assert sorted(r.value >= 0.5 for r in records) == [False, True]
    assert [r.id for r in records] == ["toy|train|0#0", "toy|train|0#4"]  # the most visited (10) of the high side
    one_sided = Tree(env="toy", split="train", seed=0, instruction="s", nodes=(Node(0, None, 0, visits=2, value_sum=2.0),))
    with pytest.raises(ValueError, match="--balance: all 1 records have value >= 0.5"):
        regression_records([one_sided], balance=True)


def test_sibling_pairs_respect_the_margin():
    pairs = preference_pairs([hand_tree()], margin=0.5)
    assert [p.id for p in pairs] == ["toy|train|0#1>2", "toy|train|0#1>4"]
    assert pairs[0].chosen.steps[-1].thought == "A" and pairs[0].rejected.value == 0.0
    assert preference_pairs([hand_tree()], margin=0.5, min_visits=3) == []
    with pytest.raises(ValueError, match="--margin"):
        preference_pairs([hand_tree()], margin=0.0)


def test_samples_output_is_read_by_the_trainer(tmp_path, bundled_tokenizer, capsys):
    from agentrm_jax.training.data import DataConfig, load_examples

    trees_path = tmp_path / "trees.jsonl"
    assert main(["explore", "--env", "maze", "--seeds", "0-1", "--policy", "expert", "--noise", "0.5",
                 "--simulations", "6", "--k", "3", "--out", str(trees_path), "--no-progress"]) == 0
    out, pairs_path = tmp_path / "regression.jsonl", tmp_path / "pairs.jsonl"
    assert main(["samples", "--trees", str(trees_path), "--out", str(out), "--pairs", str(pairs_path),
                 "--margin", "0.1"]) == 0
    records = read_jsonl(out)
    assert records and all(0.0 <= r.value <= 1.0 for r in records)
    examples = load_examples(out, DataConfig(kind="explicit", train=str(out)), bundled_tokenizer)
    assert [float(ex["target"][0]) for ex in examples] == pytest.approx([r.value for r in records])
    if read_jsonl(pairs_path, kind="pair"):
        load_examples(pairs_path, DataConfig(kind="pairwise", train=str(pairs_path)), bundled_tokenizer)
    # an existing output is not replaced without --force
    capsys.readouterr()
    assert main(["samples", "--trees", str(trees_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} exists; pass --force to replace it" in err
    # and --force never writes over the trees it reads, nor --pairs over --out
    trees_before = trees_path.read_bytes()
    for argv, message in ((["--out", str(trees_path)], "--out"),
                          (["--out", str(out), "--pairs", str(out)], "--pairs")):
        assert main(["samples", "--trees", str(trees_path), *argv, "--force"]) == 2
        assert f"{message} " in capsys.readouterr().err
    assert main(["tree", "show", str(trees_path), "--html", str(trees_path), "--force"]) == 2
    assert "is the --trees file" in capsys.readouterr().err
    assert trees_path.read_bytes() == trees_before


def test_tree_show_prints_the_best_path_with_value_bars(tmp_path, capsys):
    [tree] = coin_trees(seeds=(0,))
    text = render_text(tree)
    best = tree.best_path()
    assert f"root value {tree.nodes[0].value:.3f}" in text
    for i in best[1:]:
        assert f"{value_bar(tree.nodes[i].value)} {tree.nodes[i].value:.3f}  n={tree.nodes[i].visits}" in text
    assert value_bar(0.5) == "[#####.....]" and value_bar(1.0, 4) == "[####]"
    path = tmp_path / "trees.jsonl"
    cfg = ExploreConfig(env="coin", seeds=(0,), simulations=5, output=str(path))
    from agentrm_jax.explore.runner import run_explore

    run_explore(cfg, policy=CoinPolicy(), factory=CoinEnv, progress=False)
    assert main(["tree", "show", str(path), "--seed", "0"]) == 0
    assert "best path" in capsys.readouterr().out
    assert main(["tree", "show", str(path), "--seed", "7"]) == 2
    assert "no tree for seed 7" in capsys.readouterr().err


def test_html_page_has_every_node_and_its_value_and_needs_no_network(tmp_path, capsys):
    [tree] = coin_trees(seeds=(0,), simulations=30)
    page = render_html(tree)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<script>" in page
    assert not re.search(r"(src|href)\s*=|@import|https?://", page)
    assert sorted(int(i) for i in re.findall(r"data-node='(\d+)'", page)) == list(range(len(tree.nodes)))
    for node in tree.nodes:
        assert re.search(rf"data-node='{node.id}' data-value='{node.value:.6f}' data-visits='{node.visits}'", page)
        assert f"<span class='num'>{node.value:.3f}</span> n={node.visits}" in page
    assert page.count("<details") == page.count("</details>") == sum(1 for k in tree.children() if k)
    trees_path = tmp_path / "t.jsonl"
    trees_path.write_text(json.dumps({"kind": "agentrm.explore/trees", "fingerprint": "x", "config": {}}) + "\n"
                          + json.dumps(tree.to_dict()) + "\n")
    html_path = tmp_path / "tree.html"
    assert main(["tree", "show", str(trees_path), "--html", str(html_path)]) == 0
    assert html_path.read_text() == page
    assert main(["tree", "show", str(trees_path), "--html", str(html_path)]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err


def test_a_tree_survives_its_json_line():
    for tree in coin_trees():
        assert Tree.from_dict(json.loads(json.dumps(tree.to_dict()))) == tree
    with pytest.raises(ValueError, match=r"nodes\[0\]\.visits"):
        bad = hand_tree().to_dict()
        bad["nodes"][0]["visits"] = "many"
        Tree.from_dict(bad)

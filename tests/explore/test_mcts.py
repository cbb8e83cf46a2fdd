"""MCTS on a toy env with known values, on maze with a noisy expert, and the lockstep batching."""

from __future__ import annotations

import math
import re

import pytest
from explore_helpers import P_HEADS, CoinEnv, CoinPolicy, MumblePolicy

from agentrm_jax.agents.policies import turn_of
from agentrm_jax.explore.config import ExploreConfig
from agentrm_jax.explore.mcts import ExploreError, grow_trees


def coin_cfg(**kw) -> ExploreConfig:
    base = dict(env="coin", seeds=(0,), policy="expert", simulations=50, k=8, rollouts=4, c=1.0, max_depth=1)
    return ExploreConfig(**{**base, **kw})


def grow(cfg, policy=None, seeds=None):
    policy = policy or CoinPolicy()
    return list(grow_trees(cfg, seeds or cfg.seeds, policy_for=lambda s: policy, factory=CoinEnv))


def arms(tree):
    return {tree.nodes[i].action: tree.nodes[i] for i in tree.children()[0]}


def test_leaf_values_converge_to_the_true_expected_outcome():
    """Children of the root at max_depth are re-evaluated with fresh rollouts each time they are selected,
    so their value is a mean of i.i.d. outcomes: the error shrinks like 1/sqrt(rollouts) (3 sigma here)."""
    truth = {"pull a": P_HEADS, "pull b": 1 - P_HEADS}
    errors = {}
    for sims in (10, 400):
        [tree] = grow(coin_cfg(simulations=sims))
        got = arms(tree)
        assert set(got) == set(truth)
        for action, node in got.items():
            n = len(node.rollouts)
            assert node.value == pytest.approx(sum(node.rollouts) / n)  # the value is the rollouts' mean
            sigma = math.sqrt(truth[action] * (1 - truth[action]) / n)
            assert abs(node.value - truth[action]) <= 3 * sigma + 1e-9, (sims, action, node.value, n)
        errors[sims] = abs(got["pull a"].value - P_HEADS)
        if sims == 400:
            assert len(got["pull a"].rollouts) >= 1000  # the best arm: 3 sigma < 0.045
            assert errors[sims] < 0.045


def test_uct_visits_the_best_child_most_and_visits_add_up():
    [tree] = grow(coin_cfg(simulations=200))
    got = arms(tree)
    assert got["pull a"].visits > 2 * got["pull b"].visits
    assert tree.best_path()[1] == got["pull a"].id
    kids = tree.children()
    for node in tree.nodes:  # visits = own evaluations (rollout batches of m) + children's visits
        own = len(node.rollouts) // 4 if not node.terminal else 0
        if node.id == 0:
            assert node.visits == sum(tree.nodes[c].visits for c in kids[0]) == 200 + len(kids[0]) - 1
        elif not node.terminal:
            assert node.visits == own + sum(tree.nodes[c].visits for c in kids[node.id])
            assert node.value_sum == pytest.approx(sum(node.rollouts) / 4
                                                   + sum(tree.nodes[c].value_sum for c in kids[node.id]))


def test_full_depth_tree_has_terminal_leaves_with_the_env_outcome():
    [tree] = grow(coin_cfg(max_depth=None, simulations=30))
    terminal = [n for n in tree.nodes if n.terminal]
    assert terminal and all(n.depth == 2 and n.rollouts == () for n in terminal)
    for n in terminal:
        parent = tree.nodes[n.parent]
        assert n.outcome == float((parent.action, n.action) in (("pull a", "heads"), ("pull b", "tails")))
        assert n.value == n.outcome
    # duplicates merged: children of a node have distinct actions, their counts sum to the k samples
    for parent, kids in enumerate(tree.children()):
        if kids:
            assert len({tree.nodes[c].action for c in kids}) == len(kids)
            assert sum(tree.nodes[c].count for c in kids) == 8


def test_reruns_give_identical_trees():
    cfg = coin_cfg(max_depth=None, simulations=25, seeds=(0, 1, 2))
    first = [t.to_dict() for t in grow(cfg)]
    second = [t.to_dict() for t in grow(cfg)]
    assert first == second
    other = [t.to_dict() for t in grow(cfg.replace(seed=1))]
    assert other != first


def test_trees_advance_in_lockstep_one_policy_call_for_all_trees():
    policy = CoinPolicy()
    cfg = coin_cfg(max_depth=None, simulations=10, seeds=(0, 1, 2, 3), batch_trees=4)
    trees = grow(cfg, policy)
    assert len(trees) == 4
    tasks_per_call = [len({t for c in call for m in c for t in re.findall(r"Task (\d+):", m["content"])})
                      for call in policy.calls]
    assert max(tasks_per_call) == 4  # one call served all four trees
    single = CoinPolicy()
    grow(cfg.replace(seeds=(0,)), single)
    assert len(policy.calls) < 2 * len(single.calls)


def test_a_policy_without_parsable_actions_is_one_clear_error():
    with pytest.raises(ExploreError) as info:
        grow(coin_cfg(), MumblePolicy())
    message = str(info.value)
    assert "\n" not in message
    assert "coin/train/0: the policy returned no parsable action in 8 samples at the root" in message
    assert "Action: ..." in message


class MumbleAfterTheRoot(CoinPolicy):
    """Acts at the root, then never names an action."""

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        rows = super().sample(contexts, n, temperature, seed)
        return [row if turn_of(c) == 0 else ["Hmm, I wonder what this means and what I should be doing next in this odd little game."] * n for c, row in zip(contexts, rows)]


def test_unparsable_samples_below_the_root_become_the_empty_action():
    [tree] = grow(coin_cfg(max_depth=None, simulations=6), MumbleAfterTheRoot())
    below = [n for n in tree.nodes if n.depth == 2]
    assert below and all(n.action == "" and n.count == 8 and n.observation == "Nothing happens." for n in below)
    assert all(n.thought.startswith("Hmm, I wonder what this means") for n in below)


def _on_shortest_path(maze_env, tree, node_id) -> bool:
    """Whether every move on the node's path brought the agent one step closer to the goal."""
    maze_env.reset(tree.seed)
    dist = maze_env.task.dist_to_goal
    previous = dist[maze_env.position]
    for i in tree.path(node_id)[1:]:
        maze_env.step(tree.nodes[i].action)
        if dist[maze_env.position] != previous - 1:
            return False
        previous = dist[maze_env.position]
    return True


def test_maze_nodes_on_a_shortest_path_get_higher_values():
    from agentrm_jax.agents.factory import make_policy
    from agentrm_jax.envs.maze import MazeEnv

    on, off = [], []
    for seed in (0, 1):
        probe = MazeEnv()
        probe.reset(seed)
        turns = len(probe.expert_actions()) + 5  # detours cost turns the episode does not have
        cfg = ExploreConfig(env="maze", seeds=(seed,), policy="expert", noise=0.5, simulations=30, k=4,
                            rollouts=2, max_turns=turns)
        policy = make_policy("expert", probe, noise=0.5, seed=0)
        [tree] = grow_trees(cfg, [seed], policy_for=lambda s: policy,
                            factory=lambda: MazeEnv(max_turns=turns))
        checker = MazeEnv(max_turns=turns)
        for node in tree.nodes[1:]:
            (on if _on_shortest_path(checker, tree, node.id) else off).append(node.value)
    assert len(on) >= 5 and len(off) >= 5
    mean_on, mean_off = sum(on) / len(on), sum(off) / len(off)
    # measured at these seeds: 0.37 on a shortest path, 0.15 off it
    assert mean_on > mean_off + 0.15 and mean_on > 2 * mean_off, (mean_on, mean_off)


def test_progress_outcomes_and_the_prior_option():
    [tree] = grow(coin_cfg(value="progress", simulations=200))
    got = arms(tree)
    n = len(got["pull a"].rollouts)
    assert set(got["pull a"].rollouts) <= {0.5, 1.0}
    truth = P_HEADS + (1 - P_HEADS) * 0.5  # progress 1 on success, 0.5 after a pull that fails
    assert abs(got["pull a"].value - truth) <= 3 * 0.5 * math.sqrt(P_HEADS * (1 - P_HEADS) / n)
    plain = coin_cfg(max_depth=None, simulations=40, c=4.0)
    with_prior = plain.replace(prior=True)
    assert plain.fingerprint() != with_prior.fingerprint()
    assert [t.to_dict() for t in grow(plain)] != [t.to_dict() for t in grow(with_prior)]

"""The selection and backup arithmetic against hand-computed trees."""

from __future__ import annotations

import math

import pytest

from agentrm_jax.explore.uct import backup, mean_value, select_child, select_path, uct_score


def test_uct_score_by_hand():
    # value 3/4 + 1.5 * sqrt(ln 10 / 4) = 0.75 + 1.5 * 0.758714...
    assert uct_score(3.0, 4, 10, 1.5) == pytest.approx(0.75 + 1.5 * math.sqrt(math.log(10) / 4))
    assert uct_score(3.0, 4, 10, 1.5) == pytest.approx(1.888071, abs=1e-6)
    assert uct_score(1.0, 2, 1, 2.0) == pytest.approx(0.5)  # ln 1 = 0: no exploration bonus
    assert uct_score(0.0, 0, 5, 1.0) == math.inf
    assert uct_score(2.0, 4, 8, 1.0, prior=0.25) == pytest.approx(0.5 + 0.25 * math.sqrt(math.log(8) / 4))
    assert mean_value(0.0, 0) == 0.0 and mean_value(3.0, 4) == 0.75


def test_select_child_prefers_unvisited_then_the_highest_score_then_the_earliest():
    assert select_child([5, 0, 3], [5.0, 0.0, 0.0], 8, 1.0) == 1  # unvisited first, whatever the values
    assert select_child([0, 0], [0.0, 0.0], 0, 1.0) == 0  # ties: the earliest
    # parent 10 visits, c = 1: child 0 -> 0.5 + sqrt(ln10/4) = 1.2587; child 1 -> 0.8 + sqrt(ln10/5) = 1.4786
    assert select_child([4, 5], [2.0, 4.0], 10, 1.0) == 1
    # large c favours the less visited: child 0 -> 0.5 + 10*0.7587 = 8.09; child 1 -> 0.8 + 10*0.6786 = 7.59
    assert select_child([4, 5], [2.0, 4.0], 10, 10.0) == 0
    # c = 0 is greedy on value
    assert select_child([4, 5, 1], [2.0, 4.0, 0.9], 10, 0.0) == 2
    # a prior halves child 2's bonus: 0.5 + 0.5*sqrt(ln 9/1) = 1.241 vs child 0 0.9 + sqrt(ln9/8)=1.4240
    assert select_child([8, 1], [7.2, 0.5], 9, 1.0, priors=[1.0, 0.5]) == 0
    assert select_child([8, 1], [7.2, 0.5], 9, 1.0) == 1  # without it: 0.5 + 1.4823 = 1.98 wins
    with pytest.raises(ValueError):
        select_child([], [], 1, 1.0)


def test_select_path_on_a_hand_tree():
    #        0 (10)
    #      /       \
    #   1 (6, .5)  2 (4, .75)
    #   /    \
    #  3 (3) 4 (0)
    children = [[1, 2], [3, 4], [], [], []]
    visits = [10, 6, 4, 3, 0]
    sums = [6.0, 3.0, 3.0, 1.0, 0.0]
    # at the root, c = 1: child 1 -> .5 + sqrt(ln10/6) = 1.1195; child 2 -> .75 + sqrt(ln10/4) = 1.5087
    assert select_path(children, visits, sums, 1.0) == [0, 2]
    # c = 0: child 2 by value; with child 2 worse, child 1, then its unvisited child 4
    assert select_path(children, visits, [6.0, 3.0, 1.0, 1.0, 0.0], 0.0) == [0, 1, 4]
    assert select_path([[]], [0], [0.0], 1.0) == [0]


def test_backup_adds_along_the_path_and_leaves_its_inputs_alone():
    visits, sums = (10, 6, 4, 3, 0), (6.0, 3.0, 3.0, 1.0, 0.0)
    new_visits, new_sums = backup(visits, sums, [0, 1, 4], 0.5)
    assert new_visits == [11, 7, 4, 3, 1] and new_sums == [6.5, 3.5, 3.0, 1.0, 0.5]
    assert visits == (10, 6, 4, 3, 0) and sums == (6.0, 3.0, 3.0, 1.0, 0.0)
    assert backup([0, 0], [0.0, 0.0], [0, 1], 1.0, count=3) == ([3, 3], [3.0, 3.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        backup([0], [0.0], [0], 1.5)

"""`reproduce_report.cells`: which rows make a table cell, and rows of two settings of one policy refused."""

import pytest

from agentrm_jax.pipeline.reproduce_report import cells


def _row(policy: str, seed: int, success: bool, env: str = "maze") -> dict:
    return {"env": env, "split": "test", "seed": seed, "method": "greedy", "policy": policy,
            "success": success, "progress": 1.0 if success else 0.0, "key": f"{env}|{seed}|{policy}"}


def test_a_label_matches_itself_and_its_settings_but_not_a_longer_name():
    rows = [_row("bundled(max_new_tokens=64)", s, s < 3) for s in range(4)]
    rows += [_row("bundled_sft", s, True) for s in range(4)]  # another policy whose name starts the same
    got = cells(rows, policy="bundled", method="greedy")
    assert got["maze"].n == 4
    assert got["maze"].success_rate == pytest.approx(0.75)
    assert cells(rows, policy="bundled_sft", method="greedy")["maze"].success_rate == 1.0
    assert cells(rows, policy="expert", method="greedy") == {}


def test_rows_of_one_policy_with_two_settings_are_refused_naming_both():
    rows = [_row("bundled(max_new_tokens=64)", s, False) for s in range(3)]
    rows += [_row("bundled(max_new_tokens=96)", s, True) for s in range(3)]
    with pytest.raises(ValueError, match=r"bundled\(max_new_tokens=64\), bundled\(max_new_tokens=96\)"):
        cells(rows, policy="bundled", method="greedy")

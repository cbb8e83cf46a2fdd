"""Builders shared by the evaluation tests: small scripted-policy configs and row comparison."""

from __future__ import annotations

import copy

from agentrm_jax.evaluate import EvalConfig, parse_methods


def small_config(output, **overrides) -> EvalConfig:
    """A seconds-long eval: the noisy maze/pddl expert, oracle RM, greedy + BoN 2 + beam 2x2, 3 seeds."""
    values = dict(policy="expert", noise=0.5, rm="oracle", envs=("maze", "pddl"), seeds=3,
                  methods=parse_methods(["greedy", "best_of_n=2", "beam=2x2"]), temperature=1.0, max_turns=8,
                  output=str(output))
    values.update(overrides)
    return EvalConfig(**values)


def comparable(row: dict) -> dict:
    """A row without what legitimately differs between runs (wall-clock time)."""
    row = copy.deepcopy(row)
    row["costs"].pop("wall_s", None)
    return row


def by_key(rows) -> dict[str, dict]:
    out = {}
    for row in rows:
        assert row["key"] not in out, f"duplicate row {row['key']}"
        out[row["key"]] = comparable(row)
    return out

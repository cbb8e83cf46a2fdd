"""Greedy episodes played in lockstep by the eval runner: the same rows as one at a time, fewer calls."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from agentrm_jax.evaluate import EvalConfig, parse_methods, read_rows, run_eval
from agentrm_jax.evaluate.runner import lockstep_groups, plan_episodes
from agentrm_jax.search import Costs, SearchConfig, greedy, greedy_many
from agentrm_jax.search.greedy import split_costs

MOVES = ("move north", "move south", "move east", "move west")


@dataclasses.dataclass
class _Stats:
    generated_tokens: int = 0
    prefills: int = 0


class ContextHashPolicy:
    """A deterministic stand-in for a model: the action is a function of the whole context, so any change
    in what an episode saw changes what it does; records the size of every call."""

    def __init__(self):
        self.calls: list[int] = []
        self.stats = _Stats()

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        self.calls.append(len(contexts))
        rows = []
        for c in contexts:
            digest = hashlib.sha256(repr(c).encode()).digest()
            text = f"Thought: pick.\nAction: {MOVES[digest[0] % 4]}"
            self.stats.generated_tokens += 5
            self.stats.prefills += 1
            rows.append([text] * n)
        return rows


def _config(out, **overrides) -> EvalConfig:
    values = dict(policy="bundled", rm="oracle", envs=("maze",), seeds=6, methods=parse_methods(["greedy"]),
                  max_turns=6, output=str(out))
    values.update(overrides)
    return EvalConfig(**values)


def _without_costs(row):
    row = dict(row)
    row.pop("costs")
    return row


def test_lockstep_rows_equal_one_at_a_time_rows_with_fewer_calls(tmp_path):
    alone, together = ContextHashPolicy(), ContextHashPolicy()
    run_eval(_config(tmp_path / "a.jsonl", lockstep=1), policy=alone, progress=False)
    run_eval(_config(tmp_path / "b.jsonl", lockstep=4), policy=together, progress=False)
    rows_a = {r["key"]: r for r in read_rows(tmp_path / "a.jsonl")}
    rows_b = {r["key"]: r for r in read_rows(tmp_path / "b.jsonl")}
    assert rows_a.keys() == rows_b.keys() and len(rows_a) == 6
    for key in rows_a:
        assert _without_costs(rows_a[key]) == _without_costs(rows_b[key]), key
        a, b = rows_a[key]["costs"], rows_b[key]["costs"]
        for field in ("policy_calls", "policy_contexts", "policy_samples", "env_steps"):
            assert a[field] == b[field] == len(rows_a[key]["trajectory"]["steps"]), (key, field)
        assert b["lockstep"] in (4, 2) and "lockstep" not in a
    assert max(alone.calls) == 1
    assert max(together.calls) == 4 and len(together.calls) < len(alone.calls)
    # the group's generated tokens are shared out exactly
    assert sum(r["costs"]["policy_tokens"] for r in rows_b.values()) == together.stats.generated_tokens


def test_greedy_many_equals_greedy_per_seed():
    from agentrm_jax.envs import make

    def factory():
        return make("maze", split="test")

    cfgs = [SearchConfig(seed=s, max_turns=5) for s in (3, 1, 4)]
    together = greedy_many(ContextHashPolicy(), factory, cfgs)
    for cfg, result in zip(cfgs, together):
        alone = greedy(ContextHashPolicy(), factory, cfg)
        assert result.trajectory == alone.trajectory
        assert result.trajectory.meta["seed"] == cfg.seed
        assert result.params == alone.params


def test_greedy_many_reports_each_turn_with_the_live_count():
    from agentrm_jax.envs import make

    turns = []
    results = greedy_many(ContextHashPolicy(), lambda: make("maze", split="test"),
                          [SearchConfig(seed=s, max_turns=5) for s in (3, 1, 4)],
                          on_turn=lambda *t: turns.append(t))
    lengths = [len(r.trajectory.steps) for r in results]
    assert [t for t, _, _ in turns] == list(range(1, max(lengths) + 1))
    assert all(limit == 5 for _, limit, _ in turns)
    # live after turn t: the episodes that played more than t turns (at the limit, those not done)
    assert [live for _, _, live in turns[:-1]] == [sum(n > t for n in lengths) for t in range(1, max(lengths))]
    assert turns[-1][2] <= sum(n == max(lengths) for n in lengths)


def test_eval_progress_bar_shows_the_turn_a_lockstep_group_reached(tmp_path, capsys):
    run_eval(_config(tmp_path / "a.jsonl", seeds=3, max_turns=4, lockstep=3), policy=ContextHashPolicy())
    err = capsys.readouterr().err
    assert "group=3 maze" in err and "turn=1/4" in err


def test_greedy_many_refuses_configs_that_differ_beyond_the_seed():
    with pytest.raises(ValueError, match="seed only"):
        greedy_many(ContextHashPolicy(), lambda: None, [SearchConfig(seed=0, max_turns=3),
                                                        SearchConfig(seed=1, max_turns=4)])


def test_split_costs_adds_up_to_the_group_and_keeps_own_turns():
    group = Costs(policy_calls=9, policy_contexts=13, policy_samples=13, policy_tokens=101, env_steps=13,
                  rm_tokens=7, wall_s=3.0)
    parts = split_costs(group, [6, 4, 3])
    assert [p.policy_calls for p in parts] == [6, 4, 3] == [p.env_steps for p in parts]
    assert sum(p.policy_tokens for p in parts) == 101 and [p.policy_tokens for p in parts] == [34, 34, 33]
    assert sum(p.rm_tokens for p in parts) == 7
    assert sum(p.wall_s for p in parts) == pytest.approx(3.0)
    assert all(p.prefills_saved == 0 for p in parts)


def test_groups_hold_greedy_episodes_of_one_env_and_a_shared_policy(tmp_path):
    cfg = _config(tmp_path / "x.jsonl", envs=("maze", "pddl"), seeds=5, lockstep=2,
                  methods=parse_methods(["greedy", "best_of_n=2"]))
    groups = lockstep_groups(cfg, plan_episodes(cfg))
    for g in groups:
        assert len(g) <= 2
        assert len({ep.env for ep in g}) == 1
        if len(g) > 1:
            assert all(ep.method.name == "greedy" for ep in g)
    assert sum(len(g) for g in groups) == len(plan_episodes(cfg))
    assert [len(g) for g in groups if g[0].method.name == "greedy"] == [2, 2, 1, 2, 2, 1]
    expert = dataclasses.replace(cfg, policy="expert")
    assert all(len(g) == 1 for g in lockstep_groups(expert, plan_episodes(expert)))


def test_groups_leave_no_worker_idle(tmp_path):
    cfg = _config(tmp_path / "x.jsonl", seeds=16, lockstep=16, workers=4)
    groups = lockstep_groups(cfg, plan_episodes(cfg))
    assert [len(g) for g in groups] == [4, 4, 4, 4]
    one = dataclasses.replace(cfg, workers=1)
    assert [len(g) for g in lockstep_groups(one, plan_episodes(one))] == [16]


@pytest.mark.parametrize("bad", [0, -3, True, "4"])
def test_a_bad_lockstep_size_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="lockstep"):
        _config(tmp_path / "x.jsonl", lockstep=bad)


def test_release_memory_drops_programs_after_every_lockstep_turn_and_changes_no_row(tmp_path, monkeypatch):
    from agentrm_jax.models import host_memory

    releases = []
    monkeypatch.setattr(host_memory, "release_compiled_programs", lambda: releases.append(1))
    run_eval(_config(tmp_path / "a.jsonl", seeds=3, max_turns=4, lockstep=3), policy=ContextHashPolicy(),
             progress=False)
    assert releases == []  # off unless asked: it is process-wide
    run_eval(_config(tmp_path / "b.jsonl", seeds=3, max_turns=4, lockstep=3), policy=ContextHashPolicy(),
             progress=False, release_memory=True)
    rows_b = read_rows(tmp_path / "b.jsonl")
    assert len(releases) == max(len(r["trajectory"]["steps"]) for r in rows_b) > 0  # one per turn played
    rows_a = {r["key"]: _without_costs(r) for r in read_rows(tmp_path / "a.jsonl")}
    assert rows_a == {r["key"]: _without_costs(r) for r in rows_b}

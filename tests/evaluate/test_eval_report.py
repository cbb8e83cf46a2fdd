"""`agentrm report`: the table's rows, columns and numbers, the PNGs, and determinism."""

from __future__ import annotations

import json
import math
import random

import pytest

from agentrm_jax.cli import main
from agentrm_jax.evaluate import read_rows, run_eval
from agentrm_jax.evaluate.report import summarize, t_interval, t_quantile_975, wilson_interval, write_report

from eval_helpers import small_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "rows.jsonl"
    run_eval(small_config(out), progress=False)
    return out


def _table(markdown: str) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row] for row in rows]


def test_wilson_and_t_intervals_match_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert t_quantile_975(1) == pytest.approx(12.7062047) and t_quantile_975(40) == pytest.approx(2.021, abs=1e-3)
    assert t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)
    mean, half = t_interval([0.0, 1.0])
    assert mean == 0.5 and half == pytest.approx(12.7062047 * math.sqrt(0.5 / 2))
    assert math.isnan(t_interval([0.3])[1])


def test_report_writes_the_table_and_valid_pngs(results, tmp_path, capsys):
    out_dir = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    markdown = (out_dir / "results.md").read_text()
    assert markdown.strip() in printed
    table = _table(markdown)
    assert table[0] == ["method", "maze (held-out, n=3)", "pddl (held-out, n=3)", "mean (n=6)"]
    labels = [row[0] for row in table[2:]]
    assert labels == ["greedy", "best_of_n N=1", "best_of_n N=2", "random pick N=1", "random pick N=2",
                      "pass@N=1 (oracle)", "pass@N=2 (oracle)", "beam 2x2"]
    # The N=1 rows come from the first sample of each N=2 run and say so.
    assert all(cell.endswith("†") for cell in table[3][1:]) and "first N samples" in markdown
    assert not any(cell.endswith("†") for cell in table[4][1:])

    # The greedy maze cell, recomputed from the rows.
    rows = [r for r in read_rows(results) if r["method"] == "greedy" and r["env"] == "maze"]
    wins, progress = sum(r["success"] for r in rows), [r["progress"] for r in rows]
    lo, hi = wilson_interval(wins, 3)
    mean, half = t_interval(progress)
    assert table[2][1] == f"{100 * wins / 3:.0f} [{100 * lo:.0f}, {100 * hi:.0f}] · {mean:.2f} ± {half:.2f}"

    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert pngs == ["scaling_maze.png", "scaling_mean.png", "scaling_pddl.png"]
    import matplotlib.image

    for name in pngs:
        data = (out_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        image = matplotlib.image.imread(out_dir / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
        assert image.std() > 0.01  # something was drawn


def test_report_does_not_depend_on_row_order(results, tmp_path):
    rows = results.read_text().splitlines()
    random.Random(0).shuffle(rows)
    shuffled = tmp_path / results.name
    shuffled.write_text("\n".join(rows) + "\n")
    _, _, a = write_report(results, tmp_path / "a")
    _, _, b = write_report(shuffled, tmp_path / "b")
    assert a == b


def _row(env, seed, method, success, progress, *, rm="oracle", **params):
    baselines = params.pop("baselines", {})
    return {"env": env, "seed": seed, "method": method, "params": params, "success": success,
            "progress": progress, "rm": rm, "split": "test", "policy": "p", "baselines": baselines}


def test_columns_are_grouped_held_in_then_held_out_with_averages():
    rows = [_row(env, s, "greedy", s % 2 == 0, 0.5, rm=None) for env in ("maze", "sciworld") for s in range(4)]
    summary = summarize(rows)
    assert summary.envs == ("sciworld", "maze")  # sciworld is held-in
    assert summary.averages == ("held-in mean", "held-out mean", "mean")
    [key] = summary.rows
    assert summary.cells[(key, "mean")].n == 8 and summary.cells[(key, "mean")].successes == 4


def test_a_run_of_its_own_wins_over_prefix_figures():
    b4 = {"random_pick_success": 0.0, "random_pick_progress": 0.1, "oracle_pass": 1.0, "oracle_progress": 1.0,
          "rm_pick_success@1": 0.0, "rm_pick_progress@1": 0.2, "random_pick_success@1": 0.0,
          "random_pick_progress@1": 0.2, "oracle_pass@1": 0.0}
    rows = [_row("maze", s, "best_of_n", True, 1.0, n=4, temperature=0.7, baselines=b4) for s in range(3)]
    rows += [_row("maze", s, "best_of_n", True, 0.9, n=1, temperature=0.7) for s in range(3)]
    summary = summarize(rows)
    n1 = next(k for k in summary.rows if k.kind == "best_of_n" and k.size == (1,))
    cell = summary.cells[(n1, "maze")]
    assert not cell.derived and cell.successes == 3  # the N=1 run, not the first sample of N=4 (0 successes)
    r1 = next(k for k in summary.rows if k.kind == "random_pick" and k.size == (1,))
    assert summary.cells[(r1, "maze")].derived  # no run supplies random pick N=1 but the prefix


def test_rows_with_foreign_keys_and_rm_none_are_read(tmp_path):
    # rows written by other drivers: rm "none" for greedy and keys of their own
    rows = [dict(_row("maze", s, "greedy", True, 1.0, rm="none", max_turns=6), key=json.dumps(["maze", s]))
            for s in range(2)]
    rows += [_row("maze", s, "beam", False, 0.5, rm="random", beam_width=2, expansions=2, temperature=0.7)
             for s in range(2)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, pngs, markdown = write_report(path, tmp_path)
    labels = [row[0] for row in _table(markdown)[2:]]
    assert labels == ["greedy", "beam 2x2"]
    assert [p.name for p in pngs] == ["scaling_maze.png", "scaling_mean.png"]


def test_report_errors_are_clear(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "score": 1}\n')
    assert main(["report", str(bad)]) == 2
    assert "not an eval row" in capsys.readouterr().err


def test_a_split_given_to_write_report_decides_the_role_columns(tmp_path):
    """maze is held-out in the split file; a run whose config trained on it passes a split that says so."""
    import json

    from agentrm_jax.envs.split import load_split
    from agentrm_jax.evaluate.report import write_report

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"env": env, "seed": 0, "method": "greedy", "params": {}, "success": True,
                                        "progress": 1.0, "split": "test", "policy": "p", "key": f"{env}/0"}) + "\n"
                            for env in ("maze", "shop")))
    _, _, default = write_report(rows, tmp_path / "a")
    assert "maze (held-out" in default
    _, _, moved = write_report(rows, tmp_path / "b", split=load_split().with_roles(("shop", "maze"), ()))
    assert "maze (held-in" in moved and "held-out mean" not in moved

"""`agentrm reproduce` at test size (tests/pipeline/fixtures/reproduce_tiny.yaml: a random base policy, a
tiny random model for SFT, the RMs and the judge): a run stopped by an exception in the middle of an eval
stage resumes: finished stages are skipped, the eval stage continues where its rows stopped without
writing any episode twice, and results.md has every table's rows. About two minutes on 2 CPU cores."""

from __future__ import annotations

import json

import pytest
from reproduce_helpers import tiny_config, tiny_model_dir

from agentrm_jax.pipeline.reproduce import ROWS, reproduce_stages
from agentrm_jax.pipeline.reproduce_config import ReproduceConfig
from agentrm_jax.pipeline.reproduce_report import table_names
from agentrm_jax.pipeline.stages import MANIFEST, run_stages


class Stop(Exception):
    """The injected failure (a kill, as far as the stage runner can tell: its manifest stays 'running')."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("reproduce")
    return ReproduceConfig.from_yaml(tiny_config(base, tiny_model_dir(base / "tiny"))), base


def test_a_run_stopped_inside_an_eval_stage_resumes_without_duplicates(tiny, monkeypatch):
    import agentrm_jax.evaluate.runner as runner

    cfg, base = tiny
    out = base / "out"
    real_append, appended = runner.append_jsonl, []

    def append_then_stop(path, rows):
        real_append(path, rows)
        if "table2" in str(path) and rows:
            appended.append(len(rows))
            if sum(appended) >= 3:
                raise Stop("stopped after 3 rows of table2")

    monkeypatch.setattr(runner, "append_jsonl", append_then_stop)
    with pytest.raises(Stop):
        run_stages(reproduce_stages(cfg, command="pytest"), out, log=lambda line: None)
    monkeypatch.setattr(runner, "append_jsonl", real_append)
    partial = [json.loads(x) for x in (out / "table2" / ROWS).read_text().splitlines()]
    assert len(partial) == sum(appended) >= 3  # lockstep groups append their rows together
    assert json.loads((out / "table2" / MANIFEST).read_text())["status"] == "running"
    assert json.loads((out / "table1" / MANIFEST).read_text())["status"] == "complete"

    lines: list[str] = []
    summaries = run_stages(reproduce_stages(cfg, command="pytest"), out, log=lines.append)
    order = [s.name for s in reproduce_stages(cfg)]
    done_before = order[:order.index("table2")]
    for name in done_before:
        assert any(line.startswith(f"[{order.index(name) + 1}/{len(order)}] {name}: done already, skipped")
                   for line in lines), name
    assert any("table2: resuming an interrupted run" in line for line in lines)

    rows = [json.loads(x) for x in (out / "table2" / ROWS).read_text().splitlines()]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys))  # nothing written twice
    # greedy + 3 Best-of-N + beam, each on 2 families x 2 seeds
    assert len(rows) == 5 * len(cfg.families) * cfg.eval.seeds
    assert [r["key"] for r in rows[:len(partial)]] == [r["key"] for r in partial]  # rows before the stop kept

    results = (out / "report" / "results.md").read_text()
    sections = {part.split("\n", 1)[0]: part for part in results.split("### ")[1:]}
    for title in ("Table 1: the base policy (`random`)", "Table 2: the SFT policy (`sft/run`)"):
        table = [line for line in sections[title].splitlines() if line.startswith("| ")]
        assert [line.split(" | ")[0][2:] for line in table[1:]] == [name for name, _ in table_names(cfg)]
        assert not any("—" in line for line in table), title  # every row has a figure in every column
    for heading in ("### Policy FT vs RM FT", "### Weak-to-strong", "### Test-time scaling", "## Reading",
                    "## Wall time per stage"):
        assert heading in results
    assert "| policy FT on shop (greedy) |" in results and "| RM FT on shop (base policy, Best-of-2) |" in results
    assert cfg.sha256 in results and "`pytest`" in results
    for png in ("transfer_policy.png", "transfer_rm.png", "scaling_mean.png"):
        assert (out / "report" / png).read_bytes()[:4] == b"\x89PNG"
    assert "claims read" in summaries["report"]

    # a third run does nothing but skip
    lines.clear()
    run_stages(reproduce_stages(cfg, command="pytest"), out, log=lines.append)
    assert all("done already, skipped" in line for line in lines) and len(lines) == len(order)

"""`agentrm demo --quick` end to end on the bundled model: every stage's outputs, the table's rows, a rerun
that skips every stage, and a changed config refused in one line. (--fresh recomputing is the stage runner's,
tested without a model in test_stage_runner.py: a second real demo here would double this test's minutes.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ("demos", "sft", "explore", "samples", "rm", "eval", "report")
OUTPUTS = ("demos/demos.jsonl", "sft/run/policy", "explore/trees.jsonl", "explore/policy_choice.txt",
           "samples/train.jsonl", "rm/run/checkpoints", "eval/rows.jsonl", "report/results.md",
           "report/scaling_mean.png")


def _demo(out: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "agentrm_jax.cli", "demo", "--quick", "--out", str(out), *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)


def _manifests(out: Path) -> dict[str, dict]:
    return {name: json.loads((out / name / "stage.json").read_text()) for name in STAGES}


@pytest.mark.real_model
def test_agentrm_demo_quick_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache")}
    out = tmp_path / "demo"
    first = _demo(out, env)
    assert first.returncode == 0, first.stderr[-4000:]
    for path in OUTPUTS:
        assert (out / path).exists(), path
    manifests = _manifests(out)
    assert all(m["status"] == "complete" and m["summary"] for m in manifests.values())
    # the eval runner's rows: every env x method x seed, one row each
    rows = [json.loads(line) for line in (out / "eval" / "rows.jsonl").read_text().splitlines()]
    assert sorted({r["env"] for r in rows}) == ["maze", "shop"]
    assert sorted({r["method"] for r in rows}) == ["beam", "best_of_n", "greedy"] and len(rows) == 6
    assert len({r["key"] for r in rows}) == 6
    # the table, printed and written, has every row and both roles' columns
    table = (out / "report" / "results.md").read_text()
    for label in ("| greedy |", "| best_of_n N=2 |", "| random pick N=2 |", "| pass@N=2 (oracle) |", "| beam 1x2 |"):
        assert label in table and label in first.stdout, label
    assert "shop (held-in" in table and "maze (held-out" in table
    assert "RM vs random pick (held-out):" in table and "random pick" in manifests["report"]["summary"]
    # what the demo says about its own choices and its limits, and what to run next
    assert "noisy expert" in first.stderr and "not the task" in first.stderr and "Next:" in first.stderr
    assert "noisy expert" in (out / "explore" / "policy_choice.txt").read_text()
    rows_bytes = (out / "eval" / "rows.jsonl").read_bytes()

    second = _demo(out, env)
    assert second.returncode == 0, second.stderr[-4000:]
    skipped = [line for line in second.stderr.splitlines() if "done already, skipped" in line]
    assert len(skipped) == len(STAGES) and "running" not in second.stderr
    assert (out / "eval" / "rows.jsonl").read_bytes() == rows_bytes
    assert _manifests(out) == manifests

    config = (REPO / "configs" / "demo.yaml").read_text()
    assert "  rm: {steps: 2," in config  # the quick RM size this test changes
    changed = tmp_path / "demo_changed.yaml"
    changed.write_text(config.replace("  rm: {steps: 2,", "  rm: {steps: 3,"))
    refused = _demo(out, env, "--config", str(changed))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("agentrm demo: error: stage 'rm'") and "steps: 2 -> 3" in last and "--fresh" in last
    assert _manifests(out) == manifests  # nothing was touched

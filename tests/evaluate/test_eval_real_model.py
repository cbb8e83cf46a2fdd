"""The whole eval path on the bundled SmolLM2 policy with an explicit RM (untrained head).

It must run and write a table and a PNG; the numbers mean nothing.
"""

from __future__ import annotations

import pytest

from agentrm_jax.evaluate import EvalConfig, parse_methods, read_rows, run_eval
from agentrm_jax.evaluate.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.real_model
def test_bundled_policy_with_an_explicit_rm_end_to_end(bundled_ours, tmp_path):
    from agentrm_jax.agents.policies import JaxPolicy
    from agentrm_jax.rewards.heads import ValueModel
    from agentrm_jax.rewards.scoring import ExplicitRM

    model, tokenizer = bundled_ours
    policy = JaxPolicy(model, tokenizer, max_new_tokens=48)
    rm = ExplicitRM(ValueModel.create(model, seed=0), tokenizer)  # untrained head on the bundled backbone
    cfg = EvalConfig(policy="bundled", rm="explicit:untrained-head", envs=("maze",), seeds=1,
                     methods=parse_methods(["best_of_n=2"]), temperature=0.7, max_turns=2,
                     output=str(tmp_path / "rows.jsonl"))
    run_eval(cfg, policy=policy, rm=rm, progress=False)
    [row] = read_rows(cfg.output)
    assert row["method"] == "best_of_n" and row["params"]["n"] == 2 and row["rm"] == "explicit:untrained-head"
    assert len(row["candidate_scores"]) == 2 and all(isinstance(s, float) for s in row["candidate_scores"])
    assert row["score"] == max(row["candidate_scores"])
    assert 1 <= len(row["trajectory"]["steps"]) <= 2
    assert row["costs"]["policy_tokens"] > 0 and row["costs"]["rm_tokens"] > 0

    md_path, pngs, markdown = write_report(cfg.output, tmp_path / "report")
    assert md_path.exists() and "| best_of_n N=2 |" in markdown and "maze (held-out, n=1)" in markdown
    assert pngs and all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)

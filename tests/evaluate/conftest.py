"""Evaluation fixtures: one uninterrupted reference run shared by the runner tests."""

from __future__ import annotations

import pytest
from eval_helpers import by_key, small_config


@pytest.fixture(scope="session")
def reference_rows(tmp_path_factory):
    """The rows of an uninterrupted single-worker run of `small_config` (computed once per session)."""
    from agentrm_jax.evaluate import read_rows, run_eval

    out = tmp_path_factory.mktemp("reference") / "rows.jsonl"
    run_eval(small_config(out), progress=False)
    return by_key(read_rows(out))

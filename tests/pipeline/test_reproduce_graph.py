"""The reproduce stage graph: which stages, what each needs, and which a config change invalidates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agentrm_jax.pipeline.reproduce import reproduce_stages
from agentrm_jax.pipeline.reproduce_config import ReproduceConfig
from agentrm_jax.pipeline.stages import fingerprints

MINI = Path(__file__).resolve().parents[2] / "configs" / "reproduce_mini.yaml"
FAMILIES = ("shop", "twx", "sciworld")


def _graph(cfg):
    return {s.name: s.needs for s in reproduce_stages(cfg)}


def test_the_mini_config_builds_every_stage_with_its_inputs():
    graph = _graph(ReproduceConfig.from_yaml(MINI))
    assert list(graph) == ["demos", "sft", *(f"sft_{f}" for f in FAMILIES), "explore", "samples", "rm_explicit",
                           "rm_implicit", *(f"rm_{f}" for f in FAMILIES), "table1", "table2", "transfer",
                           "weak_to_strong", "scaling", "robustness", "report"]
    assert graph["explore"] == ()  # the noisy expert explores: no SFT policy needed
    assert graph["table1"] == ("rm_explicit", "rm_implicit")
    assert graph["table2"] == ("sft", "rm_explicit", "rm_implicit")
    assert set(graph["transfer"]) == {*(f"sft_{f}" for f in FAMILIES), *(f"rm_{f}" for f in FAMILIES)}
    assert graph["robustness"] == ("sft", "rm_explicit")
    assert graph["report"] == ("table1", "table2", "transfer", "weak_to_strong", "scaling", "robustness")


def test_exploring_with_the_sft_policy_makes_explore_need_it_and_disabled_parts_drop_out():
    cfg = ReproduceConfig.from_yaml(MINI)
    cfg = dataclasses.replace(cfg, explore=dataclasses.replace(cfg.explore, policy="sft"),
                              scaling=dataclasses.replace(cfg.scaling, enabled=False),
                              transfer=dataclasses.replace(cfg.transfer, enabled=False))
    graph = _graph(cfg)
    assert graph["explore"] == ("sft",)
    assert "scaling" not in graph and "transfer" not in graph and "rm_shop" not in graph
    assert "sft_shop" in graph  # sft.per_family still asks for them
    assert graph["report"] == ("table1", "table2", "weak_to_strong", "robustness")


def _changed(before, after) -> set[str]:
    a, b = fingerprints(reproduce_stages(before)), fingerprints(reproduce_stages(after))
    assert a.keys() == b.keys()
    return {name for name in a if a[name] != b[name]}


def test_a_changed_rm_config_invalidates_exactly_the_stages_below_it():
    cfg = ReproduceConfig.from_yaml(MINI)
    changed = _changed(cfg, dataclasses.replace(cfg, rm=dataclasses.replace(cfg.rm, steps=cfg.rm.steps + 1)))
    assert changed == {"rm_explicit", *(f"rm_{f}" for f in FAMILIES), "table1", "table2", "transfer",
                       "weak_to_strong", "scaling", "robustness", "report"}
    changed = _changed(cfg, dataclasses.replace(cfg, implicit=dataclasses.replace(cfg.implicit, beta=0.1)))
    assert changed == {"rm_implicit", "table1", "table2", "report"}
    changed = _changed(cfg, dataclasses.replace(cfg, samples=dataclasses.replace(cfg.samples, min_visits=3)))
    assert "samples" in changed and not changed & {"demos", "sft", "explore", *(f"sft_{f}" for f in FAMILIES)}
    changed = _changed(cfg, dataclasses.replace(cfg, scaling=dataclasses.replace(cfg.scaling, n=(1, 2, 4))))
    assert changed == {"scaling", "report"}


def test_speed_only_settings_invalidate_nothing_and_eval_seeds_only_the_evals():
    cfg = ReproduceConfig.from_yaml(MINI)
    faster = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, lockstep=cfg.eval.lockstep * 2,
                                                               rm_batch_size=cfg.eval.rm_batch_size * 2))
    assert _changed(cfg, faster) == set()
    more = _changed(cfg, dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, seeds=cfg.eval.seeds + 1)))
    assert more == {"table1", "table2", "transfer", "weak_to_strong", "scaling", "robustness", "report"}

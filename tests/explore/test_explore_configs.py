"""Every shipped explore config parses, and the paper-scale one describes the run its comments state."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrm_jax.envs import REGISTRY
from agentrm_jax.explore.config import ExploreConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("explore_*.yaml"))


def test_the_explore_configs_are_found():
    assert {p.name for p in CONFIGS} >= {"explore_cpu.yaml", "explore_paper.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_explore_config_parses_to_a_held_in_env(path):
    cfg = ExploreConfig.from_yaml(path)
    assert cfg.env in REGISTRY and REGISTRY[cfg.env].role == "held_in" and cfg.split == "train"


def test_the_paper_config_is_a_served_policy_on_a_ray_cluster_for_each_held_in_env():
    path = REPO / "configs/explore_paper.yaml"
    cfg = ExploreConfig.from_yaml(path)
    assert cfg.policy.startswith("http://") and cfg.ray == "auto" and cfg.workers == 64
    assert len(cfg.seeds) == 2000 and cfg.simulations == 24 and cfg.k == 5 and cfg.value == "progress"
    for env in ("shop", "twx", "sciworld"):  # the commands in its header, each a valid config
        assert f"--config configs/explore_paper.yaml --env {env} " in path.read_text()
        assert ExploreConfig.from_yaml(path, {"env": env}).env == env

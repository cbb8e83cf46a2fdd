"""Every file in configs/ reads with the loader its name says (train_ -> TrainConfig, eval_ -> EvalConfig,
explore_ -> ExploreConfig, sft_ -> the SFT config, reproduce_ / demo -> the pipelines', tasks/ -> the task split, data/ -> JSONL records), so a
stale or misspelled key in a shipped config fails here, naming the file and line, not on a user's machine.
A file no loader claims fails too: add its loader to LOADERS."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = sorted(p for p in (REPO / "configs").rglob("*") if p.is_file())


def _train(path):
    from agentrm_jax.training.config import TrainConfig

    return TrainConfig.from_yaml(path)


def _eval(path):
    from agentrm_jax.evaluate.config import EvalConfig

    return EvalConfig.from_yaml(path)


def _explore(path):
    from agentrm_jax.explore.config import ExploreConfig

    return ExploreConfig.from_yaml(path)


def _sft(path):
    from agentrm_jax.sft.config import read_sft_config

    return read_sft_config(path)


def _split(path):
    from agentrm_jax.envs.split import load_split

    return load_split(path)


def _reproduce(path):
    from agentrm_jax.pipeline.reproduce_config import ReproduceConfig

    return ReproduceConfig.from_yaml(path)


def _demo(path):
    from agentrm_jax.pipeline.demo_config import DemoConfig

    return DemoConfig.from_yaml(path), DemoConfig.from_yaml(path, quick=True)  # its quick: part too


def _records(path):
    from agentrm_jax.records import read_jsonl

    records = read_jsonl(path)
    assert records, f"{path} holds no records"
    return records


# (directory relative to configs/, file-name prefix, suffix) -> loader
LOADERS = {("", "train_", ".yaml"): _train, ("", "eval_", ".yaml"): _eval, ("", "explore_", ".yaml"): _explore,
           ("", "sft_", ".yaml"): _sft, ("", "reproduce_", ".yaml"): _reproduce,
           ("", "demo", ".yaml"): _demo,
           ("tasks", "", ".yaml"): _split, ("data", "", ".jsonl"): _records}


def loader_of(path: Path):
    folder = str(path.parent.relative_to(REPO / "configs")).replace(".", "")
    for (where, prefix, suffix), load in LOADERS.items():
        if folder == where and path.name.startswith(prefix) and path.name.endswith(suffix):
            return load
    return None


def test_there_are_configs_of_every_kind():
    claimed = {key for key in LOADERS for p in FILES if loader_of(p) is LOADERS[key]}
    assert {("", "train_", ".yaml"), ("", "eval_", ".yaml"), ("tasks", "", ".yaml")} <= claimed


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_reads_with_its_loader(path):
    load = loader_of(path)
    assert load is not None, f"{path}: no loader in LOADERS claims this file; add one to tests/test_configs_parse.py"
    assert load(path) is not None

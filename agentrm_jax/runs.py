"""What a training run directory (`agentrm train --out RUN_DIR`) holds, for every stage that reads one.

    RUN_DIR/train_config.json    the run's TrainConfig (`TrainConfig.to_dict()`)
    RUN_DIR/metrics.jsonl        one JSON row per logged step (loss, lr, eval metrics, ...)
    RUN_DIR/checkpoints/<step>/  orbax checkpoints (`training.checkpoint`); a damaged one the trainer
                                 skipped is set aside as `<step>.corrupt`

Runs written before `train_config.json` existed keep the train config in `config.json`, the name
transformers gives a model's config. That legacy file counts only when it holds a train config, so
a model directory is never taken for a run (nor a run for a model, once it names its file apart).

Below every stage, like `records`: training writes runs (`training.run_dir` decides what may be
created or deleted in one), scoring recognises them (`rewards.io`), and neither imports the other
for it. Imports only the standard library and `records`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agentrm_jax.records import read_object_lines

__all__ = ["CHECKPOINTS", "LEGACY_TRAIN_CONFIG_FILE", "METRICS_FILE", "TRAIN_CONFIG_FILE", "is_training_run",
           "read_metrics", "read_train_config", "train_config_file"]

TRAIN_CONFIG_FILE = "train_config.json"
LEGACY_TRAIN_CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"

# Top-level keys every TrainConfig dict has, in the nested layout of `TrainConfig.to_dict()` or the flat
# one of older runs; a transformers config.json has none of them.
_TRAIN_CONFIG_KEYS = (frozenset({"kind", "finetune", "out", "data", "outputs"}),
                      frozenset({"kind", "finetune", "out", "train", "save_every"}))


def _is_train_config(data) -> bool:
    return (isinstance(data, dict) and "model_type" not in data
            and any(keys <= data.keys() for keys in _TRAIN_CONFIG_KEYS))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def train_config_file(path: str | os.PathLike) -> Path | None:
    """The file holding the train config of the run at `path`: `train_config.json`, else a legacy
    `config.json` that is a train config (not a model's); None when `path` holds neither."""
    path = Path(path)
    current = path / TRAIN_CONFIG_FILE
    if current.is_file():
        return current
    legacy = path / LEGACY_TRAIN_CONFIG_FILE
    if legacy.is_file() and _is_train_config(_read_json(legacy)):
        return legacy
    return None


def read_train_config(path: str | os.PathLike) -> dict | None:
    """The train-config dict of the run at `path` (see `train_config_file`); None when there is none
    or it cannot be read as JSON."""
    file = train_config_file(path)
    if file is None:
        return None
    data = _read_json(file)
    return data if isinstance(data, dict) else None


def is_training_run(path: str | os.PathLike) -> bool:
    """Whether `path` is the run directory of `agentrm train` (it holds the run's train config).

    Cheap (reads at most one small JSON file) and never raises: a missing path is not a run.
    """
    try:
        return Path(path).is_dir() and train_config_file(path) is not None
    except OSError:
        return False


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a run's metrics.jsonl (`path`: the run directory or the file), in file order; a torn
    last line (a writer killed mid-line) is left out, a malformed line elsewhere is a RecordError naming
    file:line. [] when there is no such file."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    return [row for _, row in read_object_lines(path)]

"""The trainer's side of a run directory; importable without jax. The layout itself (file names,
telling a run from a model directory, reading its config and metrics) is `agentrm_jax.runs`, re-exported here.

The trainer's handling of the directory lives here too (`check_out_dir` refuses a non-empty directory
that is not a run, `clear_run` is `--overwrite`, `write_train_config` also renames a legacy file), so
that what a run directory is and what may be deleted in it are decided in one place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from agentrm_jax.runs import (CHECKPOINTS, LEGACY_TRAIN_CONFIG_FILE, METRICS_FILE, TRAIN_CONFIG_FILE,
                              is_training_run, read_metrics, read_train_config, train_config_file)

__all__ = ["CHECKPOINTS", "LEGACY_TRAIN_CONFIG_FILE", "METRICS_FILE", "TRAIN_CONFIG_FILE", "check_out_dir",
           "clear_run", "is_training_run", "read_metrics", "read_train_config", "train_config_file",
           "truncate_metrics", "write_train_config"]

def _listing(path: Path, limit: int = 6) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuses an `out` that is a file, or a non-empty directory that is not a run (unless overwrite).
    Changes nothing: clearing waits until the config has proved loadable (`clear_run`)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"TrainConfig.out: {out} is a file, not a run directory; choose a directory (--out)")
    if not out.is_dir() or is_training_run(out) or not any(out.iterdir()):
        return
    if overwrite:
        # --overwrite deletes the run files; in a directory that is not a run, files of those names
        # belong to someone else
        foreign = [name for name in (CHECKPOINTS, METRICS_FILE, TRAIN_CONFIG_FILE) if (out / name).exists()]
        if foreign:
            raise ValueError(f"TrainConfig.out: {out} is not a training run but holds {', '.join(foreign)}, which "
                             "--overwrite would delete; move them away or choose another --out")
        return
    raise ValueError(f"TrainConfig.out: {out} is not empty and is not a training run (it holds {_listing(out)}); "
                     f"choose a new or empty --out, or pass --overwrite to train there (that replaces only "
                     f"{CHECKPOINTS}/, {METRICS_FILE} and {TRAIN_CONFIG_FILE}; other files stay)")


def clear_run(out: Path) -> str | None:
    """Deletes the run files in `out` (checkpoints/, metrics.jsonl, the train config; nothing else) and
    says what it removed; None when there was nothing to remove."""
    if not out.is_dir():
        return None
    removed = []
    legacy = train_config_file(out)
    names = [CHECKPOINTS, METRICS_FILE, TRAIN_CONFIG_FILE]
    if legacy is not None and legacy.name == LEGACY_TRAIN_CONFIG_FILE:
        names.append(LEGACY_TRAIN_CONFIG_FILE)  # only when it is a train config, never a model's config.json
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name + ("/" if name == CHECKPOINTS else ""))
    if not removed:
        return None
    kept = f"; kept {_listing(out)}" if any(out.iterdir()) else ""
    return f"--overwrite: removed {', '.join(removed)} from {out} and started afresh{kept}"


def write_train_config(out: Path, config: dict) -> str | None:
    """Writes out/train_config.json (atomically); a legacy out/config.json holding the train config is
    renamed to it first. Returns a note about that rename, else None."""
    out.mkdir(parents=True, exist_ok=True)
    note = None
    legacy = train_config_file(out)
    if legacy is not None and legacy.name == LEGACY_TRAIN_CONFIG_FILE:
        os.replace(legacy, out / TRAIN_CONFIG_FILE)
        note = (f"renamed {legacy} (the train config, under the name of an HF model config) to "
                f"{out / TRAIN_CONFIG_FILE}")
    tmp = out / f".{TRAIN_CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=2), encoding="utf-8")
    os.replace(tmp, out / TRAIN_CONFIG_FILE)
    return note


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics rows after `last_step` (written after the checkpoint a resumed run starts from);
    the file is replaced atomically, so a kill leaves the old or the new rows, never half."""
    if not path.exists():
        return
    kept = [row for row in read_metrics(path) if row.get("step", 0) <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
    os.replace(tmp, path)

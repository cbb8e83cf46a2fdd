"""The identity of a model's base weights, cheap enough to take at every start: a resumed run must train on
the backbone it started on (its frozen weights are reloaded from `TrainConfig.model`, not checkpointed),
and LoRA adapters (`models.adapters`) must be applied to the base they were trained on.

    base_fingerprint(path) -> {"path": str, "files": {name: {"size": bytes, "sha256": hex}}}
    fingerprint_change(saved, current) -> None, or what differs, in words

Per weight file (a .gguf / .safetensors file, or each of an HF directory's `*.safetensors`, `*.gguf`, `*.bin`
files plus its config.json): the size in bytes and a sha256 over its first MiB (the safetensors or GGUF
header: tensor names, shapes, dtypes, offsets) and 16 evenly spaced 64 KiB samples through the rest, so a
checkpoint of the same architecture written over the old file is told apart without reading all of it
(about 2 MiB read per file). The path is recorded but not compared: a model directory may move.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["base_fingerprint", "describe", "fingerprint_change"]

_HEAD_BYTES = 1 << 20
_SAMPLES = 16
_SAMPLE_BYTES = 64 << 10
_WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin")


def _file_digest(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_HEAD_BYTES))
        rest = size - _HEAD_BYTES
        if rest > 0:
            stride = max(rest // _SAMPLES, 1)
            for i in range(_SAMPLES):
                offset = _HEAD_BYTES + i * stride
                if offset >= size:
                    break
                f.seek(offset)
                digest.update(f.read(min(_SAMPLE_BYTES, size - offset)))
            f.seek(max(size - _SAMPLE_BYTES, _HEAD_BYTES))  # the tail: the last tensors written
            digest.update(f.read())
    return digest.hexdigest()


def base_fingerprint(path: str | os.PathLike) -> dict:
    """{"path", "files": {name: {"size", "sha256"}}} of a model file or HF directory (see the module
    docstring). Raises FileNotFoundError when `path` is neither a file nor a directory."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")
                       and (f.name.endswith(_WEIGHT_SUFFIXES) or f.name == "config.json"))
    else:
        raise FileNotFoundError(f"{path}: no such model file or directory")
    entries = {}
    for f in files:
        size = f.stat().st_size
        entries[f.name] = {"size": size, "sha256": _file_digest(f, size)}
    return {"path": str(path.resolve()), "files": entries}


def describe(fingerprint: dict) -> str:
    """One-line form: `PATH (name SIZE B sha256 0123456789ab, ...)`."""
    files = ", ".join(f"{name} {entry['size']} B sha256 {entry['sha256'][:12]}"
                      for name, entry in sorted(fingerprint.get("files", {}).items()))
    return f"{fingerprint.get('path')} ({files or 'no weight files'})"


def fingerprint_change(saved: dict, current: dict) -> str | None:
    """None when both fingerprints name the same weights (path aside), else what changed, e.g.
    "model.safetensors: 1024 B sha256 0123456789ab -> 2048 B sha256 ba9876543210"."""
    before, after = saved.get("files", {}), current.get("files", {})
    if before == after:
        return None
    changes = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        show = (lambda e: "absent" if e is None else f"{e['size']} B sha256 {e['sha256'][:12]}")
        changes.append(f"{name}: {show(old)} -> {show(new)}")
    return "; ".join(changes)

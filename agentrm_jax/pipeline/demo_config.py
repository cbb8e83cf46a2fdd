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

from agentrm_jax.pipeline.config_checks import (ConfigKeyError, Part, as_tuple, check_beam, check_choice, check_float,
                                                check_int, check_seeds, key_lines)
from agentrm_jax.training.config import HEAD_INITS
from agentrm_jax.yaml_config import check_keys, read_mapping

__all__ = ["DemoConfig", "DemosSection", "EvalSection", "ExploreSection", "RMSection", "SFTSection",
           "SamplesSection", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = "configs/demo.yaml"
# Families that need no extra package (the fresh venv of README command 1 has the base dependencies only).
BASE_ENVS = ("shop", "maze", "tool_query", "tool_operation")


def _envs(section: str, name: str, value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigKeyError(f"{section}.{name} must be a list of env names, got {value!r}", f"{section}.{name}")
    bad = [v for v in value if v not in BASE_ENVS]
    if bad:
        raise ConfigKeyError(f"{section}.{name}: {bad[0]!r} is not one of the families the demo can run offline with "
                             f"the base install ({', '.join(BASE_ENVS)})", f"{section}.{name}")


@dataclass(frozen=True, kw_only=True)
class DemosSection(Part):
    """Expert demos for policy SFT: `envs` x `seeds` of the train split (`agents.collect`)."""

    envs: tuple[str, ...] = ("shop",)
    seeds: str = "0-7"

    def __post_init__(self):
        as_tuple(self, "envs")
        _envs("demos", "envs", self.envs)
        check_seeds("demos.seeds", self.seeds)


@dataclass(frozen=True, kw_only=True)
class SFTSection(Part):
    """A short LoRA SFT of the bundled model on the demos (`sft.run_sft`)."""

    steps: int = 4
    batch_size: int = 2
    max_length: int = 1024
    lora_rank: int = 8
    lr: float = 1.0e-3

    def __post_init__(self):
        for name, lo in (("steps", 1), ("batch_size", 1), ("max_length", 64), ("lora_rank", 1)):
            check_int(f"sft.{name}", getattr(self, name), lo)
        check_float("sft.lr", self.lr, 0.0)


@dataclass(frozen=True, kw_only=True)
class ExploreSection(Part):
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
        check_seeds("explore.seeds", self.seeds)
        if self.policy not in ("expert", "sft"):
            raise ConfigKeyError(f"explore.policy must be expert (the noisy expert) or sft (the demo's SFT "
                                 f"policy), got {self.policy!r}", "explore.policy")
        check_float("explore.noise", self.noise, 0.0, 1.0)
        for name in ("simulations", "k", "rollouts"):
            check_int(f"explore.{name}", getattr(self, name), 1)


@dataclass(frozen=True, kw_only=True)
class SamplesSection(Part):
    """Trees -> regression records (`explore.samples`); the last `eval_trees` trees' records are the RM's eval set."""

    min_visits: int = 2
    eval_trees: int = 2

    def __post_init__(self):
        check_int("samples.min_visits", self.min_visits, 1)
        check_int("samples.eval_trees", self.eval_trees, 0)


@dataclass(frozen=True, kw_only=True)
class RMSection(Part):
    """The explicit RM on the bundled backbone (`training.trainer.train`, kind explicit, target value)."""

    finetune: str = "head"
    head_init: str = "mean"  # training.config.TrainConfig.head_init
    steps: int = 16
    batch_size: int = 8
    max_length: int = 512
    lr: float = 2.0e-4

    def __post_init__(self):
        check_choice("rm.finetune", self.finetune, ("head", "lora"))
        check_choice("rm.head_init", self.head_init, HEAD_INITS)
        for name, lo in (("steps", 1), ("batch_size", 1), ("max_length", 64)):
            check_int(f"rm.{name}", getattr(self, name), lo)
        check_float("rm.lr", self.lr, 0.0)


@dataclass(frozen=True, kw_only=True)
class EvalSection(Part):
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
            as_tuple(self, name)
            _envs("eval", name, getattr(self, name))
        if not self.held_in or not self.held_out:
            raise ConfigKeyError("eval.held_in and eval.held_out each need at least one env", "eval.held_in")
        for name, lo in (("seeds", 1), ("best_of_n", 2), ("max_turns", 1), ("max_new_tokens", 8)):
            check_int(f"eval.{name}", getattr(self, name), lo)
        check_beam("eval.beam", self.beam)
        check_float("eval.temperature", self.temperature, 0.0)


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

    def section(self, name: str) -> Part:
        """The section of stage `name`."""
        return getattr(self, name)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike = DEFAULT_CONFIG, *, quick: bool = False) -> DemoConfig:
        """Read the file; with `quick`, its `quick:` section's keys replace the full sizes."""
        data, lines = read_mapping(path, "demo config", DEFAULT_CONFIG)
        check_keys(data, [*_SECTIONS, "quick"], source=str(path), what="demo config", lines=lines)
        nested = key_lines(path)
        overrides = data.get("quick") or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"{path}:{lines.get('quick', '?')}: quick is a mapping of sections, got {overrides!r}")
        check_keys(overrides, _SECTIONS, source=str(path), what="demo config's quick section",
                   lines={k.split(".", 1)[1]: v for k, v in nested.items() if k.startswith("quick.")} or lines)
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
            except ConfigKeyError as e:
                from_quick = e.key.split(".", 1)[-1] in extra  # the bad value is the quick: section's
                line = nested.get(f"quick.{name}") if from_quick else nested.get(e.key, lines.get(name))
                raise ValueError(f"{path}:{line or '?'}: {'quick.' if from_quick else ''}{e}") from None
            except TypeError as e:
                raise ValueError(f"{path}:{lines.get(name, '?')}: {name}: {e}") from None
        return cls(**sections, quick=quick)

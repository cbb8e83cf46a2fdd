"""Model configuration: one frozen dataclass for every supported Llama-family model.

`ModelConfig.from_hf_config` reads a transformers config (a `config.json` dict or a
`PretrainedConfig`) and refuses, by name, anything the decoder in `llama.py` would
silently compute differently: another architecture, another RoPE scaling rule,
sliding-window attention, another activation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
REMAT_POLICIES = ("none", "full", "dots_saveable")
ATTENTION_IMPLS = ("grouped", "dot_product")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Llama3RopeScaling:
    """Llama-3.1 frequency-dependent RoPE scaling (`rope_type: llama3` in HF)."""

    factor: float  # HF `factor`
    low_freq_factor: float  # HF `low_freq_factor`
    high_freq_factor: float  # HF `high_freq_factor`
    original_max_position_embeddings: int  # HF `original_max_position_embeddings`

    def __post_init__(self):
        if not self.high_freq_factor > self.low_freq_factor > 0:
            raise ValueError(
                "rope_scaling: need high_freq_factor > low_freq_factor > 0, got "
                f"high_freq_factor={self.high_freq_factor}, low_freq_factor={self.low_freq_factor}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and numerics of a Llama-family decoder (Llama, Llama-3, Qwen2, SmolLM2).

    Field comments give the transformers `config.json` name each value comes from. The last
    three fields are how the forward runs, not what it computes (same numbers to 1e-5); no HF
    field sets them and `to_hf_config` leaves them out.
    """

    model_type: str = "llama"  # HF `model_type`: "llama" or "qwen2"
    vocab_size: int  # HF `vocab_size`
    hidden_size: int  # HF `hidden_size`
    intermediate_size: int  # HF `intermediate_size`
    num_layers: int  # HF `num_hidden_layers`
    num_heads: int  # HF `num_attention_heads`
    num_kv_heads: int  # HF `num_key_value_heads`
    head_dim: int  # HF `head_dim` (default hidden_size // num_heads)
    rms_norm_eps: float = 1e-6  # HF `rms_norm_eps`
    rope_theta: float = 10000.0  # HF `rope_theta` / `rope_parameters.rope_theta`
    rope_scaling: Llama3RopeScaling | None = None  # HF `rope_scaling` / `rope_parameters`
    max_position_embeddings: int = 2048  # HF `max_position_embeddings`
    tie_word_embeddings: bool = False  # HF `tie_word_embeddings`
    qkv_bias: bool = False  # llama `attention_bias`; always True for qwen2
    o_bias: bool = False  # llama `attention_bias`; always False for qwen2
    mlp_bias: bool = False  # llama `mlp_bias`
    bos_token_id: int | None = None  # HF `bos_token_id`
    eos_token_ids: tuple[int, ...] = ()  # HF `eos_token_id` (int or list)
    pad_token_id: int | None = None  # HF `pad_token_id`
    # Runtime options (ours). remat: what a decoder layer keeps for the backward pass
    # ("none": everything; "full": only its input, the rest is recomputed; "dots_saveable":
    # matmul outputs). scan_layers: one lax.scan over the layers, so compile time does not grow
    # with depth. attention_impl: "grouped" (matmul form, fastest on XLA:CPU) or "dot_product"
    # (jax.nn.dot_product_attention: cuDNN / flash kernels on GPU).
    remat: str = "none"
    scan_layers: bool = False
    attention_impl: str = "grouped"

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type={self.model_type!r} is not supported; expected one of {SUPPORTED_MODEL_TYPES}"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads} "
                "(grouped-query attention shares each KV head among num_heads // num_kv_heads query heads)"
            )
        # Bias layouts transformers can express (and so load back after export).
        if self.model_type == "qwen2" and (not self.qkv_bias or self.o_bias or self.mlp_bias):
            raise ValueError(f"qwen2 has q/k/v biases only: need qkv_bias=True, o_bias=False, mlp_bias=False, got "
                             f"qkv_bias={self.qkv_bias}, o_bias={self.o_bias}, mlp_bias={self.mlp_bias}")
        if self.model_type == "llama" and self.qkv_bias != self.o_bias:
            raise ValueError(f"llama's attention_bias covers q, k, v and o together: qkv_bias={self.qkv_bias} "
                             f"and o_bias={self.o_bias} must be equal")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"ModelConfig.remat={self.remat!r} is not a remat policy; expected one of {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"ModelConfig.attention_impl={self.attention_impl!r} is not supported; expected one of "
                             f"{ATTENTION_IMPLS}")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"ModelConfig.scan_layers must be True or False, got {self.scan_layers!r}")

    @property
    def num_query_groups(self) -> int:
        """Query heads per KV head."""
        return self.num_heads // self.num_kv_heads

    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * hd * (2 * self.num_heads + 2 * self.num_kv_heads)
        if self.qkv_bias:
            attn += hd * (self.num_heads + 2 * self.num_kv_heads)
        if self.o_bias:
            attn += d
        mlp = 3 * d * f + (2 * f + d if self.mlp_bias else 0)
        per_layer = attn + mlp + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + emb + d

    # ------------------------------------------------------------------ HF interop

    @classmethod
    def from_hf_config(cls, hf_config: Mapping[str, Any] | Any) -> "ModelConfig":
        """Builds a config from a transformers config dict or `PretrainedConfig`.

        Raises ValueError naming the field and value for anything unsupported.
        """
        cfg = dict(hf_config.to_dict() if hasattr(hf_config, "to_dict") else hf_config)
        model_type = cfg.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"config field model_type={model_type!r} is not supported; agentrm_jax loads "
                f"{SUPPORTED_MODEL_TYPES} (Llama, Llama-3, SmolLM2, Qwen2)"
            )
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"config field hidden_act={act!r} is not supported; expected 'silu' (SwiGLU MLP)")
        if cfg.get("use_sliding_window") or (model_type != "qwen2" and cfg.get("sliding_window")):
            raise ValueError(
                f"config field use_sliding_window={cfg.get('use_sliding_window')!r} "
                f"(sliding_window={cfg.get('sliding_window')!r}) is not supported: "
                "agentrm_jax implements full causal attention only"
            )
        layer_types = cfg.get("layer_types")
        if layer_types and any(t != "full_attention" for t in layer_types):
            bad = sorted({t for t in layer_types if t != "full_attention"})
            raise ValueError(f"config field layer_types contains {bad}; only 'full_attention' is supported")

        rope_theta, rope_scaling = _parse_rope(cfg)
        num_heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        head_dim = cfg.get("head_dim") or hidden // num_heads
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (int(eos),))
        if model_type == "qwen2":
            qkv_bias, o_bias, mlp_bias = True, False, False
        else:
            qkv_bias = o_bias = bool(cfg.get("attention_bias", False))
            mlp_bias = bool(cfg.get("mlp_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=mlp_bias,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=cfg.get("pad_token_id"),
        )

    def to_hf_config(self) -> dict[str, Any]:
        """The transformers `config.json` dict that reproduces this model."""
        rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            rope = {"rope_type": "llama3", "rope_theta": self.rope_theta,
                    **dataclasses.asdict(self.rope_scaling)}
        out: dict[str, Any] = {
            "model_type": self.model_type,
            "architectures": ["LlamaForCausalLM" if self.model_type == "llama" else "Qwen2ForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": (list(self.eos_token_ids) if len(self.eos_token_ids) > 1
                             else (self.eos_token_ids[0] if self.eos_token_ids else None)),
            "pad_token_id": self.pad_token_id,
        }
        if self.model_type == "llama":
            out["attention_bias"] = self.qkv_bias
            out["mlp_bias"] = self.mlp_bias
        return out

    # ------------------------------------------------------------------ presets

    @classmethod
    def tiny(cls, **overrides) -> "ModelConfig":
        """A tiny random-init config for unit tests (prime-ish sizes expose shape bugs)."""
        base = dict(vocab_size=211, hidden_size=40, intermediate_size=74, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=10, rms_norm_eps=1e-5, rope_theta=10000.0,
                    max_position_embeddings=1024, eos_token_ids=(2,), pad_token_id=2, bos_token_id=1)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def smollm2_135m(cls) -> "ModelConfig":
        """SmolLM2-135M(-Instruct), the bundled model."""
        return cls(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                   num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0,
                   max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=1,
                   eos_token_ids=(2,), pad_token_id=2)


def _parse_rope(cfg: dict[str, Any]) -> tuple[float, Llama3RopeScaling | None]:
    """(rope_theta, scaling) from either the v4 `rope_scaling` or the v5 `rope_parameters` field."""
    params = cfg.get("rope_parameters") or {}
    legacy = cfg.get("rope_scaling") or {}
    field = "rope_parameters" if params else "rope_scaling"
    spec = params or legacy
    theta = float(spec.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = spec.get("rope_type") or spec.get("type") or "default"  # v4 configs used "type"
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ValueError(
            f"config field {field}.rope_type={rope_type!r} is not supported; "
            "agentrm_jax implements 'default' and 'llama3' RoPE"
        )
    try:
        scaling = Llama3RopeScaling(
            factor=float(spec["factor"]),
            low_freq_factor=float(spec["low_freq_factor"]),
            high_freq_factor=float(spec["high_freq_factor"]),
            original_max_position_embeddings=int(spec["original_max_position_embeddings"]),
        )
    except KeyError as missing:
        raise ValueError(f"config field {field} with rope_type 'llama3' lacks {missing}") from None
    return theta, scaling


def rope_inverse_frequencies(config: ModelConfig) -> "list[float]":
    """Inverse frequencies [head_dim // 2] of the rotary embedding, with llama3 scaling applied."""
    half = config.head_dim // 2
    inv = [1.0 / (config.rope_theta ** (2 * i / config.head_dim)) for i in range(half)]
    s = config.rope_scaling
    if s is None:
        return inv
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    out = []
    for f in inv:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(f)
        elif wavelen > low_wavelen:
            out.append(f / s.factor)
        else:
            smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
                s.high_freq_factor - s.low_freq_factor)
            out.append((1 - smooth) * f / s.factor + smooth * f)
    return out

"""A value head on any decoder backbone: one scalar per token.

`ValueModel(backbone, head)(input_ids, attention_mask) -> [B, T]` runs the
backbone's final hidden states (not its logits) through `ValueHead`. The head
is a linear map ([1, hidden] weight, optional bias) or a small MLP. The linear
head without bias is exactly transformers' `*ForSequenceClassification.score`
with one label, which is how our RMs are saved and how RMs trained elsewhere
are loaded (`rewards.io`).

`value_head(params, hidden)` is the head as a pure function of its parameter
dict (`nnx.to_pure_dict(nnx.state(head))`: weight, and bias / mlp_weight /
mlp_bias when configured), for hidden states computed anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from agentrm_jax.models.llama import LlamaForCausalLM

__all__ = ["HeadConfig", "ValueHead", "ValueModel", "value_head"]


def value_head(params: Mapping[str, jax.Array], hidden: jax.Array) -> jax.Array:
    """hidden [..., D] -> value [...] float32: the value head as a pure function of its parameters.

    params: "weight" [1, W] (W = D, or the MLP width), optional "bias" [1], and for an MLP head
    "mlp_weight" [M, D] and "mlp_bias" [M] (SiLU between). Weights are [out, in]. Computed in float32
    whatever the parameters' or hidden states' dtype.
    """
    x = hidden.astype(jnp.float32)
    if "mlp_weight" in params:
        x = jax.nn.silu(x @ jnp.asarray(params["mlp_weight"], jnp.float32).T
                        + jnp.asarray(params["mlp_bias"], jnp.float32))
    out = x @ jnp.asarray(params["weight"], jnp.float32).T  # [..., 1]
    if "bias" in params:
        out = out + jnp.asarray(params["bias"], jnp.float32)
    return out[..., 0]


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    """Value head shape.

    mlp_size: 0 for a linear head; otherwise one hidden layer of this width (SiLU).
    bias: add a bias to the output (a linear head without bias is what
      transformers' sequence classifiers use; with bias it cannot be exported to them).
    init_std: normal init scale of the weights (transformers uses 0.02).
    """

    mlp_size: int = 0
    bias: bool = False
    init_std: float = 0.02

    def __post_init__(self):
        if self.mlp_size < 0:
            raise ValueError(f"HeadConfig.mlp_size must be >= 0, got {self.mlp_size}")
        if not self.init_std > 0:
            raise ValueError(f"HeadConfig.init_std must be > 0, got {self.init_std}")

    @property
    def hf_compatible(self) -> bool:
        """Whether the head is a plain `score` weight (one label, no bias) in transformers' format."""
        return self.mlp_size == 0 and not self.bias

    def to_dict(self) -> dict:
        return {"mlp_size": self.mlp_size, "bias": self.bias, "init_std": self.init_std}


class ValueHead(nnx.Module):
    """hidden [B, T, D] -> value [B, T] (float32). Weights are stored [out, in] like the backbone."""

    def __init__(self, hidden_size: int, config: HeadConfig = HeadConfig(), *, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.config = config
        normal = nnx.initializers.normal(config.init_std)
        if config.mlp_size:
            self.mlp_weight = nnx.Param(normal(rngs.params(), (config.mlp_size, hidden_size), param_dtype),
                                        logical_axes=("mlp", "embed"))
            self.mlp_bias = nnx.Param(jnp.zeros((config.mlp_size,), param_dtype), logical_axes=("mlp",))
            width, width_axis = config.mlp_size, "mlp"
        else:
            width, width_axis = hidden_size, "embed"
        self.weight = nnx.Param(normal(rngs.params(), (1, width), param_dtype), logical_axes=(None, width_axis))
        if config.bias:
            self.bias = nnx.Param(jnp.zeros((1,), param_dtype), logical_axes=(None,))

    def params(self) -> dict[str, jax.Array]:
        """The parameter dict `value_head` takes (weight, and bias / mlp_weight / mlp_bias when configured)."""
        names = ["weight"] + ["bias"] * self.config.bias + ["mlp_weight", "mlp_bias"] * bool(self.config.mlp_size)
        return {name: getattr(self, name)[...] for name in names}

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return value_head(self.params(), hidden)


class ValueModel(nnx.Module):
    """A decoder backbone with a value head: `(input_ids [B, T], attention_mask [B, T]) -> values [B, T]`.

    Values are the head's raw output (float32) at every position; what they
    mean (a regression value, or a logit for BCE) is the reward model's
    business (`rewards.explicit`). The backbone's lm_head is never used.
    """

    def __init__(self, backbone: LlamaForCausalLM, head: ValueHead):
        self.backbone = backbone
        self.head = head

    @classmethod
    def create(cls, backbone: LlamaForCausalLM, head_config: HeadConfig = HeadConfig(), *, seed: int = 0
               ) -> ValueModel:
        """A fresh head (seeded) on `backbone`."""
        head = ValueHead(backbone.config.hidden_size, head_config,
                         param_dtype=backbone.embed[...].dtype, rngs=nnx.Rngs(seed))
        return cls(backbone, head)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        hidden, _ = self.backbone.backbone(input_ids, attention_mask)
        return self.head(hidden)

"""Parity with transformers+torch on tiny random checkpoints written by `save_pretrained`.

Each case: a torch model with noise added to every weight (so norms and biases are not 1/0),
saved to a temp dir, loaded by `load_model`; weights compared exactly first, then logits on a
~500-token batch with a left-padded and a right-padded row (short prompts hide RoPE bugs).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from agentrm_jax.models import ModelConfig, load_model, save_pretrained, to_hf_state_dict

VOCAB = 211
LENGTH = 500
LEFT_PAD, RIGHT_PAD = 37, 53
TOL = 1e-4

LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

CASES = {
    # GQA 8 query heads over 2 KV heads; head_dim 14 != hidden / heads (56 / 8) so a wrong default shows.
    "llama3_gqa": (LlamaForCausalLM, LlamaConfig, dict(
        hidden_size=56, intermediate_size=74, num_attention_heads=8, num_key_value_heads=2, head_dim=14,
        rope_parameters=LLAMA3)),
    "qwen2_bias": (Qwen2ForCausalLM, Qwen2Config, dict(
        hidden_size=60, intermediate_size=74, num_attention_heads=6, num_key_value_heads=2,
        rope_theta=1000000.0)),
    "llama_tied_kv1": (LlamaForCausalLM, LlamaConfig, dict(
        hidden_size=36, intermediate_size=70, num_attention_heads=3, num_key_value_heads=1,
        tie_word_embeddings=True)),
    "llama_kv4_bias": (LlamaForCausalLM, LlamaConfig, dict(
        hidden_size=64, intermediate_size=70, num_attention_heads=8, num_key_value_heads=4,
        attention_bias=True, mlp_bias=True)),
}


@nnx.jit
def forward(model, ids, mask):
    return model(ids, mask)


def _batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, LENGTH), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :LEFT_PAD] = 0  # left-padded row
    mask[2, -RIGHT_PAD:] = 0  # right-padded row
    return ids, mask


IDS, MASK = _batch()
REAL = MASK.numpy().astype(bool)


def _ours(model, ids=IDS, mask=MASK) -> np.ndarray:
    return np.asarray(forward(model, jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))


def _theirs(model, ids=IDS, mask=MASK) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float().numpy()


def _max_diff(a, b, real=REAL) -> float:
    return float(np.abs(a - b)[real].max())


@dataclasses.dataclass
class Case:
    name: str
    ref: torch.nn.Module
    path: Path
    ours: object
    ref_logits: np.ndarray
    our_logits: np.ndarray


def _build(name: str, root: Path) -> Case:
    model_cls, config_cls, kw = CASES[name]
    torch.manual_seed(0)
    hf = config_cls(vocab_size=VOCAB, num_hidden_layers=2, max_position_embeddings=4096, rms_norm_eps=1e-5, **kw)
    ref = model_cls(hf).eval()
    with torch.no_grad():
        for p in ref.parameters():  # non-trivial norms and biases (a tied weight is visited once)
            p.add_(0.05 * torch.randn_like(p))
    path = root / name
    ref.save_pretrained(path)
    ours = load_model(path)
    return Case(name, ref, path, ours, _theirs(ref), _ours(ours))


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    cache: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in cache:
            cache[name] = _build(name, root)
        return cache[name]

    return get


@pytest.fixture(params=list(CASES))
def case(request, build) -> Case:
    return build(request.param)


# ---------------------------------------------------------------- loading


def test_checkpoint_is_what_the_case_claims(case):
    files = {p.name for p in case.path.iterdir()}
    assert "config.json" in files and "model.safetensors" in files
    cfg = case.ours.config
    if case.name == "llama3_gqa":
        assert cfg.rope_scaling is not None and cfg.head_dim * cfg.num_heads != cfg.hidden_size
    assert cfg.num_kv_heads == case.ref.config.num_key_value_heads
    tied = case.ref.lm_head.weight.data_ptr() == case.ref.model.embed_tokens.weight.data_ptr()
    assert cfg.tie_word_embeddings == tied


def test_config_matches_transformers(case):
    assert ModelConfig.from_hf_config(case.ref.config) == case.ours.config
    assert ModelConfig.from_hf_config(json.loads((case.path / "config.json").read_text())) == case.ours.config


def test_weights_are_equal_after_loading(case):
    theirs = {k: v.numpy() for k, v in case.ref.state_dict().items()}
    mine = to_hf_state_dict(case.ours)
    expected_names = set(theirs) - ({"lm_head.weight"} if case.ours.config.tie_word_embeddings else set())
    assert set(mine) == expected_names
    for name, value in mine.items():
        np.testing.assert_array_equal(value, theirs[name], err_msg=name)


def test_logits_match_transformers_on_long_padded_batch(case):
    assert case.our_logits.shape == case.ref_logits.shape == (3, LENGTH, VOCAB)
    assert _max_diff(case.our_logits, case.ref_logits) <= TOL
    # Per-row check as well, so a left-padding-only bug cannot hide under the max of other rows.
    for row in range(3):
        assert _max_diff(case.our_logits[row], case.ref_logits[row], REAL[row]) <= TOL, row
    assert np.abs(case.ref_logits).max() > 0.1  # logits are not trivially small


# ---------------------------------------------------------------- export


def test_export_loads_in_transformers_with_equal_logits(case, tmp_path):
    save_pretrained(case.ours, tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(back) is type(case.ref)
    theirs = {k: v.numpy() for k, v in back.state_dict().items()}
    for name, value in to_hf_state_dict(case.ours).items():
        np.testing.assert_array_equal(theirs[name], value, err_msg=name)
    assert _max_diff(_theirs(back), case.our_logits) <= TOL
    # ...and our own loader reads the export back to the same model.
    again = load_model(tmp_path)
    assert again.config == case.ours.config
    for name, value in to_hf_state_dict(again).items():
        np.testing.assert_array_equal(value, theirs[name], err_msg=name)


# ---------------------------------------------------------------- other checkpoint layouts


def test_sharded_checkpoint_loads(build, tmp_path):
    case = build("llama3_gqa")
    case.ref.save_pretrained(tmp_path, max_shard_size="60KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert (tmp_path / "model.safetensors.index.json").exists() and len(shards) >= 3, shards
    sharded = load_model(tmp_path)
    mine = to_hf_state_dict(sharded)
    for name, value in to_hf_state_dict(case.ours).items():
        np.testing.assert_array_equal(mine[name], value, err_msg=name)
    assert _max_diff(_ours(sharded), case.ref_logits) <= TOL


def test_bf16_checkpoint_loads_and_runs(build, tmp_path):
    case = build("llama3_gqa")
    half_ref = copy.deepcopy(case.ref).to(torch.bfloat16)
    half_ref.save_pretrained(tmp_path)
    half = load_model(tmp_path, dtype="bfloat16")
    assert half.embed[...].dtype == jnp.bfloat16 and half.layers[0].attn.q_proj[...].dtype == jnp.bfloat16
    # The bf16 values arrive bit-exact.
    for name, value in half_ref.state_dict().items():
        np.testing.assert_array_equal(to_hf_state_dict(half)[name], value.float().numpy(), err_msg=name)
    got = _ours(half)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    # Same bf16 weights computed in f32 vs in bf16: only compute rounding differs.
    exact = _ours(load_model(tmp_path, dtype="float32"))
    agree = np.mean(got.argmax(-1)[REAL] == exact.argmax(-1)[REAL])
    assert agree >= 0.95, agree
    assert _max_diff(got, exact) < 0.1 * np.abs(exact).max()
    # And bf16-stored weights stay close to the f32 original.
    assert np.mean(exact.argmax(-1)[REAL] == case.ref_logits.argmax(-1)[REAL]) >= 0.95

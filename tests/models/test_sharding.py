"""Sharding rules: one table maps logical axes to mesh axes.

The mesh tests run in a subprocess with 8 fake CPU devices (XLA_FLAGS must be set before jax
initialises, and this pytest process already has one CPU device); the rule-table tests run
in-process on abstract meshes, which carry axis sizes but no devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from agentrm_jax.models.sharding import (MESH_AXES, SAMPLE_RULES, TRAIN_RULES, ShardingPlan, logical_to_spec,
                                         make_mesh)

REPO = Path(__file__).resolve().parents[2]
MESHES = [(1, 8, 1), (2, 2, 2), (8, 1, 1)]

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from agentrm_jax.models import LlamaForCausalLM, ModelConfig
    from agentrm_jax.models.sharding import ShardingPlan, largest_replicated, make_mesh, shard_model

    assert jax.device_count() == 8, jax.devices()
    # Every sharded dimension divides 8 (fsdp) or 2 (tensor): embed 48, vocab 214, heads 4, kv 2, mlp 74.
    cfg = ModelConfig.tiny(vocab_size=214, hidden_size=48, intermediate_size=74, num_heads=4, num_kv_heads=2,
                           head_dim=12)

    def random_model(config):
        model = LlamaForCausalLM(config, rngs=None)
        rng = np.random.default_rng(0)
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            noise = rng.standard_normal(var.shape)
            value = 1 + 0.1 * noise if "norm" in ".".join(map(str, path)) else 0.1 * noise
            var.set_value(jnp.asarray(value, jnp.float32))
        return model

    @nnx.jit
    def forward(model, ids, mask):
        return model(ids, mask)

    rng = np.random.default_rng(1)
    ids = rng.integers(0, cfg.vocab_size, size=(8, 24)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :7] = 0  # left padding
    mask[6, 15:] = 0  # right padding
    reference = np.asarray(forward(random_model(cfg), jnp.asarray(ids), jnp.asarray(mask)))

    def spec_of(array):
        spec = list(array.sharding.spec) + [None] * (array.ndim - len(array.sharding.spec))  # jax drops trailing Nones
        return [None if a is None else (list(a) if isinstance(a, tuple) else a) for a in spec]

    results = {}
    for shape in json.loads(sys.argv[1]):
        mesh = make_mesh(*shape)
        model = shard_model(random_model(cfg), ShardingPlan(mesh))
        # Read placements before the forward: nnx.jit hands parameters back as outputs, and on size-1
        # mesh axes XLA may then pick a different but equivalent spec.
        specs = dict(embed=spec_of(model.embed[...]), gate=spec_of(model.layers[0].mlp.gate_proj[...]),
                     q=spec_of(model.layers[0].attn.q_proj[...]), o=spec_of(model.layers[0].attn.o_proj[...]),
                     lm_head=spec_of(model.lm_head[...]))
        replicated = [name for name, _ in largest_replicated(model, top=1000)]
        batch = NamedSharding(mesh, P(("data", "fsdp"), None))
        with jax.set_mesh(mesh):
            logits = forward(model, jax.device_put(ids, batch), jax.device_put(mask, batch))
        real = mask.astype(bool)
        results["x".join(map(str, shape))] = dict(
            max_diff=float(np.abs(np.asarray(logits) - reference)[real].max()),
            replicated=replicated,
            replicated_after_forward=[name for name, _ in largest_replicated(model, top=1000)],
            devices_per_param=len(model.layers[0].mlp.gate_proj[...].sharding.device_set),
            specs=specs,
            logits_shape=list(logits.shape),
        )

    # A vocab of 211 does not divide tensor=2: strict refuses, non-strict replicates that dimension.
    odd = ModelConfig.tiny(vocab_size=211, hidden_size=48, num_heads=4, num_kv_heads=2, head_dim=12,
                           intermediate_size=74)
    plan = ShardingPlan(make_mesh(2, 2, 2))
    try:
        shard_model(LlamaForCausalLM(odd, rngs=None), plan)
        results["strict_error"] = None
    except ValueError as err:
        results["strict_error"] = str(err)
    lenient = shard_model(LlamaForCausalLM(odd, rngs=None), plan, strict=False)
    results["lenient_embed_spec"] = spec_of(lenient.embed[...])
    print("RESULTS" + json.dumps(results))
""")


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    script = tmp_path_factory.mktemp("sharding") / "run_meshes.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, str(script), json.dumps(MESHES)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULTS"))
    return json.loads(line[len("RESULTS"):])


NORMS = ("input_norm.weight", "post_attn_norm.weight", "norm.weight")


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_forward_matches_unsharded(sharded_runs, shape):
    run = sharded_runs["x".join(map(str, shape))]
    assert run["logits_shape"] == [8, 24, 214]
    assert run["max_diff"] <= 1e-5


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_large_parameters_are_sharded(sharded_runs, shape):
    run = sharded_runs["x".join(map(str, shape))]
    data, fsdp, tensor = shape
    if fsdp * tensor > 1:
        # Only the 1-D norm weights stay whole on every device.
        assert run["replicated"] and all(name.endswith(NORMS) for name in run["replicated"]), run["replicated"]
        assert run["devices_per_param"] == 8
    else:
        # A pure data-parallel mesh replicates every parameter by design.
        assert "embed" in run["replicated"] and "lm_head" in run["replicated"]


def test_parameter_specs_follow_the_rules_table(sharded_runs):
    specs = sharded_runs["2x2x2"]["specs"]
    assert specs["embed"] == ["tensor", "fsdp"]  # (vocab, embed)
    assert specs["lm_head"] == ["tensor", "fsdp"]  # (vocab, embed): [out, in] like transformers
    assert specs["gate"] == ["tensor", "fsdp"]  # (mlp, embed)
    assert specs["q"] == ["tensor", None, "fsdp"]  # (heads, head_dim, embed)
    assert specs["o"] == ["fsdp", "tensor", None]  # (embed, heads, head_dim)
    assert sharded_runs["1x8x1"]["specs"]["gate"] == ["tensor", "fsdp"]  # size-1 tensor axis named, harmless
    assert sharded_runs["8x1x1"]["specs"]["q"] == ["tensor", None, "fsdp"]


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_a_jitted_forward_keeps_parameters_sharded(sharded_runs, shape):
    run = sharded_runs["x".join(map(str, shape))]
    assert sorted(run["replicated_after_forward"]) == sorted(run["replicated"])


def test_strict_sharding_names_the_parameter_and_dimension(sharded_runs):
    err = sharded_runs["strict_error"]
    assert err is not None and "embed" in err and "vocab=211" in err and "tensor" in err
    assert sharded_runs["lenient_embed_spec"] == [None, "fsdp"]


# ---------------------------------------------------------------- in-process: the rules table


def _mesh(data=1, fsdp=1, tensor=1) -> AbstractMesh:
    return AbstractMesh((data, fsdp, tensor), MESH_AXES)


def test_logical_to_spec_maps_names_through_the_rules():
    mesh = _mesh(2, 4, 2)
    assert logical_to_spec(("vocab", "embed"), (10, 8), mesh, TRAIN_RULES) == P("tensor", "fsdp")
    assert logical_to_spec(("batch", "length"), (16, 5), mesh, TRAIN_RULES) == P(("data", "fsdp"), None)
    assert logical_to_spec(("norm",), (7,), mesh, TRAIN_RULES) == P(None)
    assert logical_to_spec((None, "mlp"), (3, 6), mesh, TRAIN_RULES) == P(None, "tensor")
    # Sampling rules keep the embed dimension whole.
    assert logical_to_spec(("embed", "mlp"), (8, 6), mesh, SAMPLE_RULES) == P(None, "tensor")
    assert ShardingPlan(mesh).spec(("embed", "mlp"), (8, 6)) == P("fsdp", "tensor")


def test_a_mesh_axis_is_used_once_per_array():
    # heads and mlp both map to "tensor": only the first gets it.
    assert logical_to_spec(("heads", "mlp"), (4, 6), _mesh(tensor=2), TRAIN_RULES) == P("tensor", None)


def test_strict_spec_raises_on_non_divisible_dims_naming_param_and_dimension():
    with pytest.raises(ValueError) as err:
        logical_to_spec(("embed", "mlp"), (12, 74), _mesh(fsdp=8), TRAIN_RULES, name="layers.0.mlp.gate_proj")
    msg = str(err.value)
    assert "layers.0.mlp.gate_proj" in msg and "embed=12" in msg and "8" in msg
    with pytest.raises(ValueError, match=r"layers\.0\.mlp\.up_proj.*mlp=74"):
        ShardingPlan(_mesh(tensor=4)).spec(("embed", "mlp"), (12, 74), name="layers.0.mlp.up_proj")


def test_non_strict_spec_replicates_non_divisible_dims():
    spec = logical_to_spec(("embed", "mlp"), (12, 74), _mesh(fsdp=8, tensor=2), TRAIN_RULES, strict=False)
    assert spec == P(None, "tensor")  # 12 % 8 != 0 -> replicated; 74 % 2 == 0 -> still sharded
    assert logical_to_spec(("batch",), (6,), _mesh(2, 4), TRAIN_RULES, strict=False) == P(None)


def test_size_one_mesh_axes_never_raise():
    assert logical_to_spec(("vocab", "embed"), (211, 13), _mesh(), TRAIN_RULES) == P("tensor", "fsdp")


def test_unknown_logical_axis_and_rank_mismatch_raise():
    with pytest.raises(ValueError, match=r"q_proj.*'bogus'"):
        logical_to_spec(("embed", "bogus"), (8, 8), _mesh(), TRAIN_RULES, name="q_proj")
    with pytest.raises(ValueError, match=r"w: 1 logical axes"):
        logical_to_spec(("embed",), (8, 8), _mesh(), TRAIN_RULES, name="w")


def test_make_mesh_requires_the_device_count():
    import jax

    n = jax.device_count()
    mesh = make_mesh(1, n, 1)
    assert mesh.axis_names == MESH_AXES and dict(mesh.shape) == {"data": 1, "fsdp": n, "tensor": 1}
    with pytest.raises(ValueError, match=rf"data=2 x fsdp=3 x tensor=1 = 6 devices, but {n} are available"):
        make_mesh(2, 3, 1)

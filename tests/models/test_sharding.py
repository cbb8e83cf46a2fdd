"""Sharding rules, and a sharded forward on 8 fake CPU devices (in a subprocess: the device
count must be fixed before jax initialises its backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest
from jax.sharding import PartitionSpec as P

from agentrm_jax.models.sharding import TRAIN_RULES, logical_to_spec, make_mesh

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from agentrm_jax.models import ModelConfig, init_model
    from agentrm_jax.models.sharding import ShardingPlan, largest_replicated, make_mesh, shard_model

    assert jax.device_count() == 8, jax.devices()
    cfg = ModelConfig.tiny(hidden_size=48, intermediate_size=96, num_heads=8, num_kv_heads=8, head_dim=6,
                           vocab_size=224)
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 224, size=(8, 24)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, :5].set(0)
    reference = np.asarray(init_model(cfg, seed=1)(ids, mask))
    results = {}
    for shape in [(1, 8, 1), (2, 2, 2), (8, 1, 1)]:
        mesh = make_mesh(*shape)
        model = shard_model(init_model(cfg, seed=1), ShardingPlan(mesh))
        forward = nnx.jit(lambda m, i, k: m(i, k))
        batch = jax.sharding.NamedSharding(mesh, jax.P(("data", "fsdp")))
        with jax.set_mesh(mesh):
            got = forward(model, jax.device_put(ids, batch), jax.device_put(mask, batch))
        replicated = [name for name, _ in largest_replicated(model, top=1000)]
        results[str(shape)] = {
            "max_diff": float(np.abs(np.asarray(got) - reference).max()),
            "replicated_non_norm": [n for n in replicated if not n.endswith("norm.weight")],
            "gate_spec": str(model.layers[0].mlp.gate_proj[...].sharding.spec),
        }
    print(json.dumps(results))
""")


def test_sharded_forward_on_8_fake_devices_equals_unsharded():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(results) == {"(1, 8, 1)", "(2, 2, 2)", "(8, 1, 1)"}
    for shape, r in results.items():
        assert r["max_diff"] <= 1e-5, (shape, r)
    # with fsdp or tensor > 1 every matrix is split; with data only, parameters are replicated
    assert results["(1, 8, 1)"]["replicated_non_norm"] == []
    assert results["(2, 2, 2)"]["replicated_non_norm"] == []
    assert results["(2, 2, 2)"]["gate_spec"] == str(P("fsdp", "tensor"))


class FakeMesh:
    shape = {"data": 2, "fsdp": 2, "tensor": 2}


def test_specs_follow_the_rules_table():
    spec = logical_to_spec(("embed", "mlp"), (48, 96), FakeMesh(), TRAIN_RULES)
    assert spec == P("fsdp", "tensor")
    assert logical_to_spec(("batch", "length"), (8, 5), FakeMesh(), TRAIN_RULES) == P(("data", "fsdp"), None)


def test_indivisible_dimension_is_an_error_or_replicated():
    with pytest.raises(ValueError) as err:
        logical_to_spec(("embed", "kv_heads", "head_dim"), (48, 3, 64), FakeMesh(), TRAIN_RULES,
                        name="layers.0.attn.k_proj")
    assert "layers.0.attn.k_proj" in str(err.value) and "kv_heads=3" in str(err.value)
    spec = logical_to_spec(("embed", "kv_heads", "head_dim"), (48, 3, 64), FakeMesh(), TRAIN_RULES, strict=False)
    assert spec == P("fsdp", None, None)


def test_unknown_logical_axis_is_an_error():
    with pytest.raises(ValueError, match="'experts' has no rule"):
        logical_to_spec(("experts",), (4,), FakeMesh(), TRAIN_RULES)


def test_mesh_must_match_the_device_count():
    with pytest.raises(ValueError, match="devices"):
        make_mesh(2, 2, 2, devices=jax.devices()[:1])
    assert make_mesh(1, 1, 1).shape == {"data": 1, "fsdp": 1, "tensor": 1}

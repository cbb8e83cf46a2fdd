"""Sharded loading: parameters go from the file straight to their target shardings.

The mesh runs happen in one subprocess with 8 fake CPU devices (XLA_FLAGS must be set before
jax initialises); a tiny random model is saved as safetensors (and a tiny GGUF written as
llama.cpp would) and loaded onto several meshes. Checked: every parameter's sharding is the
rules table's, values equal the unsharded load exactly, each device holds exactly its shards,
and the host hands over one device slice at a time (never a whole tensor to one device). The
replication guardrail is checked on the same devices. The 1-device path runs in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from agentrm_jax.models import ModelConfig, load_model, save_pretrained
from agentrm_jax.models.llama import LlamaForCausalLM

REPO = Path(__file__).resolve().parents[2]
MESHES = [(1, 8, 1), (2, 2, 2), (1, 4, 2)]

SCRIPT = textwrap.dedent("""
    import json, math, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding
    sys.path.insert(0, sys.argv[3])  # tests/models: the GGUF writer of test_gguf_io
    import test_gguf_io as G
    from agentrm_jax.models import ModelConfig, load_model, save_pretrained
    from agentrm_jax.models import loading
    from agentrm_jax.models.llama import LlamaForCausalLM
    from agentrm_jax.models.sharding import TRAIN_RULES, SAMPLE_RULES, ShardingPlan, logical_to_spec, make_mesh, \\
        shard_model

    assert jax.device_count() == 8, jax.devices()
    workdir = sys.argv[2]

    def random_model(config, seed=0):
        model = LlamaForCausalLM(config, rngs=None)
        rng = np.random.default_rng(seed)
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            noise = rng.standard_normal(var.shape)
            var.set_value(jnp.asarray(1 + 0.1 * noise if "norm" in ".".join(map(str, path)) else 0.1 * noise,
                                      jnp.float32))
        return model

    def flat(model):
        return {".".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}

    # Record the host slices handed to devices: each must be exactly one device's shard.
    slices, wrong_size = [], []
    def counting_place(host, sharding, dtype):
        shard_size = math.prod(sharding.shard_shape(host.shape))
        def cb(index):
            piece = np.array(host[index], dtype=dtype, copy=True)
            slices.append(piece.size)
            if piece.size != shard_size:
                wrong_size.append([list(host.shape), piece.size, shard_size])
            return piece
        return jax.make_array_from_callback(host.shape, sharding, cb)
    loading._place = counting_place

    def check(model, reference, mesh, rules):
        out = dict(bad_sharding=[], bad_values=[], bad_shards=[])
        per_device = {d: 0 for d in mesh.devices.flat}
        expected_per_device = {d: 0 for d in mesh.devices.flat}
        for name, var in flat(model).items():
            value = var.get_value()
            axes = var.get_metadata()["logical_axes"]
            want = NamedSharding(mesh, logical_to_spec(axes, value.shape, mesh, rules, name=name))
            if not value.sharding.is_equivalent_to(want, value.ndim) or value.sharding.spec != want.spec:
                out["bad_sharding"].append([name, str(value.sharding), str(want)])
            if not np.array_equal(np.asarray(value), np.asarray(reference[name].get_value())):
                out["bad_values"].append(name)
            shard_shape = want.shard_shape(value.shape)
            for shard in value.addressable_shards:
                if shard.data.shape != shard_shape:
                    out["bad_shards"].append([name, list(shard.data.shape), list(shard_shape)])
                per_device[shard.device] += shard.data.nbytes
                expected_per_device[shard.device] += math.prod(shard_shape) * value.dtype.itemsize
        out["bytes_per_device"] = sorted(set(per_device.values()))
        out["bytes_match"] = per_device == expected_per_device
        out["total_bytes"] = sum(v.get_value().nbytes for v in flat(model).values())
        return out

    results = {}
    cfg = ModelConfig.tiny(vocab_size=214, hidden_size=48, intermediate_size=74, num_heads=4, num_kv_heads=2,
                           head_dim=12, qkv_bias=True, o_bias=True)
    save_pretrained(random_model(cfg), workdir + "/st")
    reference = flat(load_model(workdir + "/st"))  # one device
    for shape in json.loads(sys.argv[1]):
        mesh = make_mesh(*shape)
        for rules_name, rules in (("train", TRAIN_RULES), ("sample", SAMPLE_RULES)):
            slices.clear(); wrong_size.clear()
            model = load_model(workdir + "/st", mesh=mesh, rules=rules)
            run = check(model, reference, mesh, rules)
            run["wrong_size"] = list(wrong_size)
            run["slices"] = len(slices)
            run["max_slice"] = max(slices)
            run["expected_slices"] = 8 * len(reference)
            results["st_" + rules_name + "_" + "x".join(map(str, shape))] = run

    # GGUF: vocab 67 divides nothing, so the tensor axis stays size 1 here.
    G.write_gguf(workdir + "/m.gguf", G.random_llama(0), types=G.TYPES)
    gguf_reference = flat(load_model(workdir + "/m.gguf"))
    mesh = make_mesh(1, 8, 1)
    model = load_model(workdir + "/m.gguf", mesh=mesh)
    results["gguf_1x8x1"] = check(model, gguf_reference, mesh, TRAIN_RULES)

    # Guardrail: dims that divide nothing on fsdp=8 leave every matrix whole on every device.
    odd = ModelConfig.tiny(vocab_size=211, hidden_size=42, intermediate_size=74, num_heads=3, num_kv_heads=1,
                           head_dim=14)
    save_pretrained(random_model(odd), workdir + "/odd")
    mesh = make_mesh(1, 8, 1)
    slices.clear()
    try:
        load_model(workdir + "/odd", mesh=mesh, strict=False)
        results["guard_error"] = None
    except ValueError as err:
        results["guard_error"] = str(err)
    results["guard_slices_read"] = len(slices)  # refused before reading any tensor
    lenient = load_model(workdir + "/odd", mesh=mesh, strict=False, max_replicated_fraction=1.0)
    results["guard_override_ok"] = bool(flat(lenient)["embed"].get_value().sharding.is_fully_replicated)
    try:
        shard_model(random_model(odd), ShardingPlan(mesh), strict=False)
        results["shard_model_error"] = None
    except ValueError as err:
        results["shard_model_error"] = str(err)
    # The divisible config on the same mesh passes, on a data-only mesh nothing can be split: no error.
    shard_model(random_model(cfg), ShardingPlan(mesh))
    shard_model(random_model(odd), ShardingPlan(make_mesh(8, 1, 1)))
    results["divisible_ok"] = True
    print("RESULTS" + json.dumps(results))
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("sharded_loading")
    script = work / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, str(script), json.dumps(MESHES), str(work), str(REPO / "tests/models")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULTS"))
    return json.loads(line[len("RESULTS"):])


KEYS = [f"st_{rules}_{'x'.join(map(str, s))}" for s in MESHES for rules in ("train", "sample")] + ["gguf_1x8x1"]


@pytest.mark.parametrize("key", KEYS)
def test_every_parameter_lands_on_its_target_sharding_with_exact_values(runs, key):
    run = runs[key]
    assert run["bad_sharding"] == [] and run["bad_values"] == [] and run["bad_shards"] == []
    assert run["bytes_match"]  # each device holds exactly its shards, nothing more


@pytest.mark.parametrize("key", [k for k in KEYS if k.startswith("st_")])
def test_the_host_hands_over_one_device_slice_at_a_time(runs, key):
    run = runs[key]
    assert run["wrong_size"] == []  # every read is one device's shard, never the whole tensor
    # At most one read per (parameter, device); jax reads a replicated slice once for all its devices.
    assert len(KEYS) and 0 < run["slices"] <= run["expected_slices"]


def test_fsdp_splits_the_parameter_bytes(runs):
    run = runs["st_train_1x8x1"]
    # Everything but the norms and biases is split 8 ways: a device holds about 1/8 of the model.
    assert run["total_bytes"] / 8 < max(run["bytes_per_device"]) < run["total_bytes"] / 8 * 1.1
    assert run["max_slice"] == 214 * 48 // 8  # the largest tensor (embed) travels in eighths


def test_guardrail_names_the_largest_replicated_tensors(runs):
    err = runs["guard_error"]
    assert err is not None and "replicated" in err and "limit 5%" in err
    assert "embed [211, 42]" in err and "max_replicated_fraction" in err
    assert runs["guard_slices_read"] == 0  # refused before reading a tensor
    assert runs["guard_override_ok"]
    assert runs["shard_model_error"] is not None and "embed [211, 42]" in runs["shard_model_error"]
    assert runs["divisible_ok"]


# ---------------------------------------------------------------- in-process: one device


def test_one_device_load_uses_the_same_path(tmp_path):
    from flax import nnx

    cfg = ModelConfig.tiny()
    model = LlamaForCausalLM(cfg, rngs=None)
    rng = np.random.default_rng(0)
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        var.set_value(rng.standard_normal(var.shape).astype(np.float32))
    save_pretrained(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m", config_overrides={"remat": "full"})
    assert loaded.config.remat == "full"
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model, nnx.Param)),
                                 nnx.to_flat_state(nnx.state(loaded, nnx.Param))):
        value = b.get_value()
        assert value.sharding.device_set == {jax.devices()[0]}
        np.testing.assert_array_equal(np.asarray(value), np.asarray(a.get_value()), err_msg=str(path))
    # The file can be overwritten after loading: the model holds copies, not views of the mapping.
    save_pretrained(LlamaForCausalLM(cfg, rngs=None), tmp_path / "m")
    assert float(np.abs(np.asarray(loaded.embed[...])).sum()) > 0
    with pytest.raises(ValueError, match=r"config_overrides \['remats'\]"):
        load_model(tmp_path / "m", config_overrides={"remats": "full"})

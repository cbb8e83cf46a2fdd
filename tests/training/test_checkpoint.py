"""Checkpointer: bitwise round trips of a real train state (nnx params, adamw state, PRNG keys), rotation,
atomicity against a writer killed mid-save, restore onto another mesh, and the errors.

The multi-device and kill tests run small scripts in subprocesses: 8 fake CPU devices need XLA_FLAGS set
before jax initialises (this pytest process already has one device), and a SIGKILL must hit a process of
its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from agentrm_jax.training.checkpoint import Checkpointer, read_meta

REPO = Path(__file__).resolve().parents[2]
TMP_SUFFIX = ".orbax-checkpoint-tmp"


def make_state(dtype=jnp.float32, seed=0):
    """A real train state: nnx params, adamw state after one update, PRNG keys, step. The subprocess
    scripts import this too, so both sides build the same state."""
    model = nnx.Linear(8, 16, param_dtype=dtype, rngs=nnx.Rngs(seed))  # sizes divide the fsdp=8 mesh
    params = nnx.state(model, nnx.Param)
    tx = optax.adamw(1e-2)
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5) + p, params)
    updates, opt_state = tx.update(grads, opt_state, params)  # non-zero mu / nu / count
    params = optax.apply_updates(params, updates)
    return {"params": params, "opt_state": opt_state, "rng": jax.random.key(seed + 7),
            "rngs": jax.random.split(jax.random.key(seed + 1), 8), "step": jnp.int32(11)}


def abstract(tree):
    """The target for restoring `tree` where it lives: ShapeDtypeStructs carrying each array's sharding."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                        if isinstance(x, jax.Array) else x, tree)


def raw(x):
    """Bytes + dtype of a leaf (key data for PRNG keys): equal raw() means bitwise equal."""
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return ("key", str(jax.random.key_impl(x)), raw(jax.random.key_data(x)))
    a = np.asarray(x)
    return (str(a.dtype), a.shape, a.tobytes())


def assert_bitwise_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
        assert raw(g) == raw(w), jax.tree_util.keystr(path)


SCRIPT_HEADER = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import jax, jax.numpy as jnp
from test_checkpoint import make_state
"""


def run_script(script: str, *args, tmp_path: Path, devices: int = 1) -> subprocess.CompletedProcess:
    path = tmp_path / "script.py"
    path.write_text(SCRIPT_HEADER + textwrap.dedent(script))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, str(path), *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_round_trip_is_bitwise(tmp_path, dtype):
    state = make_state(dtype)
    with Checkpointer(tmp_path / "run") as ckpt:
        ckpt.save(11, state, data_state={"epoch": 0}, meta={})
    with Checkpointer(tmp_path / "run") as ckpt:  # a fresh process's view: nothing cached
        got, _, _ = ckpt.restore(None, abstract(state))
    assert_bitwise_equal(got, state)
    assert got["params"]["kernel"].dtype == dtype
    # The target's wrappers come back: an nnx.State of Params, optax's named tuples, a typed key.
    assert isinstance(got["params"], nnx.State) and isinstance(got["params"]["kernel"], nnx.Param)
    assert isinstance(got["opt_state"][0], optax.ScaleByAdamState)
    assert jax.dtypes.issubdtype(got["rng"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.normal(got["rng"], (3,)), jax.random.normal(state["rng"], (3,)))
    # The restored params drop back into a model.
    model = nnx.Linear(8, 16, param_dtype=dtype, rngs=nnx.Rngs(99))
    nnx.update(model, got["params"])
    np.testing.assert_array_equal(model.kernel[...], state["params"]["kernel"][...])


def test_concrete_targets_numpy_leaves_and_python_scalars(tmp_path):
    state = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "table": np.arange(5, dtype=np.int64),
             "lr": 0.1 + 0.2, "done": True, "tokens": 12345678901}
    with Checkpointer(tmp_path / "run") as ckpt:
        ckpt.save(1, state, data_state={}, meta={})
        target = {"w": jnp.zeros((2, 3), jnp.float32), "table": np.zeros(5, np.int64), "lr": 0.0, "done": False,
                  "tokens": 0}
        got, _, _ = ckpt.restore(1, target)
    assert isinstance(got["table"], np.ndarray) and isinstance(got["w"], jax.Array)
    assert_bitwise_equal({k: got[k] for k in ("w", "table")}, {k: state[k] for k in ("w", "table")})
    assert (got["lr"], got["done"], got["tokens"]) == (0.1 + 0.2, True, 12345678901)
    assert type(got["done"]) is bool and type(got["tokens"]) is int
    # A target dtype other than the saved one is a cast (here float32 -> bfloat16).
    with Checkpointer(tmp_path / "run") as ckpt:
        got, _, _ = ckpt.restore(1, {**target, "w": jnp.zeros((2, 3), jnp.bfloat16)})
    assert got["w"].dtype == jnp.bfloat16 and raw(got["w"]) == raw(state["w"].astype(jnp.bfloat16))
    # A state of python scalars alone (orbax refuses an empty array item) still round-trips.
    with Checkpointer(tmp_path / "scalars") as ckpt:
        ckpt.save(1, {"lr": 0.5, "step": 3}, data_state={}, meta={})
        assert ckpt.restore(1, {"lr": 0.0, "step": 0})[0] == {"lr": 0.5, "step": 3}


def test_data_state_and_meta_round_trip_as_json(tmp_path):
    data_state = {"epoch": 2, "position": 1337, "seed": 0, "order": [3, 1, 2], "source": "train.jsonl"}
    meta = {"config": {"lr": 3e-4, "kind": "explicit", "lora": None, "bf16": False},
            "losses": [0.693, 0.5123456789012345, float("1e-30")], "note": "ünïcode"}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(5, {"x": jnp.ones(2)}, data_state=data_state, meta=meta)
        _, got_data, got_meta = ckpt.restore(5, {"x": jax.ShapeDtypeStruct((2,), jnp.float32,
                                                                             sharding=jnp.ones(2).sharding)})
    assert got_data == data_state and got_meta == meta


def test_non_json_meta_is_refused_before_anything_is_written(tmp_path):
    with Checkpointer(tmp_path / "run") as ckpt:
        with pytest.raises(TypeError, match="meta is not JSON-serialisable"):
            ckpt.save(1, {"x": jnp.ones(2)}, data_state={}, meta={"array": np.ones(2)})
        assert ckpt.all_steps() == []
    assert not (tmp_path / "run").exists()


def test_read_meta_without_a_target(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        for step in (1, 2):
            ckpt.save(step, make_state(), data_state={}, meta={"step": step, "loss": 1.0 / step})
    assert read_meta(tmp_path) == {"step": 2, "loss": 0.5}
    assert read_meta(tmp_path, step=1) == {"step": 1, "loss": 1.0}


# ---------------------------------------------------------------- rotation, re-saves, atomicity


def test_keep_two_leaves_the_newest_two(tmp_path):
    with Checkpointer(tmp_path, keep=2) as ckpt:
        for step in (10, 20, 30, 40):
            ckpt.save(step, {"x": jnp.full(3, step)}, data_state={}, meta={"step": step})
        assert ckpt.all_steps() == [30, 40] and ckpt.latest_step() == 40
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["30", "40"]
    with Checkpointer(tmp_path, keep=2) as ckpt:
        assert ckpt.all_steps() == [30, 40]
        got, _, meta = ckpt.restore(30, abstract({"x": jnp.full(3, 30)}))
    assert meta == {"step": 30} and got["x"].tolist() == [30, 30, 30]


def test_an_existing_step_is_replaced_only_with_force(tmp_path):
    target = abstract({"x": jnp.zeros(2)})
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(3, {"x": jnp.ones(2)}, data_state={}, meta={"v": 1})
        ckpt.save(3, {"x": jnp.full(2, 2.0)}, data_state={}, meta={"v": 2})
        assert ckpt.restore(3, target)[2] == {"v": 1}
        ckpt.save(3, {"x": jnp.full(2, 2.0)}, data_state={}, meta={"v": 2}, force=True)
        got, _, meta = ckpt.restore(3, target)
        assert meta == {"v": 2} and got["x"].tolist() == [2.0, 2.0] and ckpt.all_steps() == [3]


def test_latest_step_ignores_a_tmp_directory(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"x": jnp.ones(2)}, data_state={}, meta={"step": 1})
    # What orbax leaves while writing step 5: everything in place but the final rename.
    shutil.copytree(tmp_path / "1", tmp_path / f"5{TMP_SUFFIX}")
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
        assert ckpt.read_meta() == {"step": 1}


KILLED_MID_SAVE = """
    import os, signal, sys
    from orbax.checkpoint.path import atomicity
    from agentrm_jax.training.checkpoint import Checkpointer

    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, make_state(seed=1), data_state={"pos": 1}, meta={"step": 1})

    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def killed(self, *args, **kwargs):
        # Step 2's arrays and JSON are all written; die just before its directory is renamed into place.
        if self.get_final().name == "2":
            os.kill(os.getpid(), signal.SIGKILL)
        return await finalize(self, *args, **kwargs)
    atomicity.AtomicRenameTemporaryPath.finalize = killed
    ckpt.save(2, make_state(seed=2), data_state={"pos": 2}, meta={"step": 2})
    print("NOT KILLED")
"""


def test_a_save_killed_mid_write_is_never_picked(tmp_path):
    run = tmp_path / "run"
    proc = run_script(KILLED_MID_SAVE, run, tmp_path=tmp_path)
    assert proc.returncode == -9, proc.stdout + proc.stderr[-3000:]
    leftovers = [p.name for p in run.iterdir() if p.name.startswith("2")]
    assert leftovers and all(TMP_SUFFIX in name for name in leftovers), leftovers
    with Checkpointer(run) as ckpt:
        assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
        state, data_state, meta = ckpt.restore(None, abstract(make_state()))
        assert_bitwise_equal(state, make_state(seed=1))
        assert (data_state, meta) == ({"pos": 1}, {"step": 1})
        # The retried save of step 2 goes through and the dead writer's leftovers are gone.
        ckpt.save(2, make_state(seed=2), data_state={"pos": 2}, meta={"step": 2})
        assert ckpt.all_steps() == [1, 2]
    assert not [p.name for p in run.iterdir() if TMP_SUFFIX in p.name]


# ---------------------------------------------------------------- other meshes


RESHARD = """
    import json, sys
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from agentrm_jax.models.sharding import make_mesh
    from agentrm_jax.training.checkpoint import Checkpointer

    assert jax.device_count() == 8, jax.devices()
    mesh = make_mesh(1, 8, 1)
    def spec(x):  # the last dim split 8 ways (kernel [8, 16], bias / mu / nu [16], keys [8]); scalars whole
        return P() if x.ndim == 0 else P(*([None] * (x.ndim - 1)), "fsdp")
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec(x))),
                          make_state())
    with Checkpointer(sys.argv[1]) as ckpt:
        got, data_state, meta = ckpt.restore(None, target)

    report = {"meta": meta, "data_state": data_state, "leaves": {}}
    for (path, x), want in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(target)):
        data = jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        report["leaves"][jax.tree_util.keystr(path)] = dict(
            sharding_ok=x.sharding.is_equivalent_to(want.sharding, x.ndim), spec=str(x.sharding.spec),
            devices=len(x.sharding.device_set), shard_shape=list(x.addressable_shards[0].data.shape),
            dtype=str(x.dtype), values=np.asarray(data).astype(np.float64).tolist())
    # Save the 8-way sharded state back for the 1-device restore in the parent.
    got["step"] = got["step"] + 1
    with Checkpointer(sys.argv[2]) as ckpt:
        ckpt.save(12, got, data_state=data_state, meta={**meta, "saved_on": 8})
    print("REPORT" + json.dumps(report))
"""


def test_restore_onto_another_mesh_and_back(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path / "one_device") as ckpt:
        ckpt.save(11, state, data_state={"pos": 4}, meta={"saved_on": 1})
    proc = run_script(RESHARD, tmp_path / "one_device", tmp_path / "eight_devices", tmp_path=tmp_path, devices=8)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("REPORT"))[len("REPORT"):])
    assert report["meta"] == {"saved_on": 1} and report["data_state"] == {"pos": 4}

    # 1 device -> fsdp=8: equal values, and every array placed as the target asked.
    leaves = report["leaves"]
    for (path, want) in jax.tree_util.tree_flatten_with_path(state)[0]:
        row = leaves[jax.tree_util.keystr(path)]
        assert row["sharding_ok"], (jax.tree_util.keystr(path), row["spec"])
        assert row["devices"] == 8 and row["dtype"] == str(want.dtype)
        data = jax.random.key_data(want) if jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key) else want
        np.testing.assert_array_equal(np.asarray(row["values"]), np.asarray(data).astype(np.float64))
    kernel = next(row for key, row in leaves.items() if key.startswith("['params']['kernel']"))
    assert kernel["shard_shape"] == [8, 2]  # [8, 16] split 8 ways on the out dim
    assert leaves["['rngs']"]["shard_shape"] == [1] and leaves["['step']"]["shard_shape"] == []

    # fsdp=8 -> 1 device: bitwise equal to the original, on this process's device.
    with Checkpointer(tmp_path / "eight_devices") as ckpt:
        got, data_state, meta = ckpt.restore(12, abstract(state))
    assert meta == {"saved_on": 8} and data_state == {"pos": 4}
    assert int(got["step"]) == 12
    got["step"] = state["step"]
    assert_bitwise_equal(got, state)
    assert all(x.sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0]) for x in jax.tree.leaves(got))


# ---------------------------------------------------------------- errors


def test_missing_directory_or_step_is_a_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "no_such_run"
    with Checkpointer(missing) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        with pytest.raises(FileNotFoundError, match="no_such_run"):
            ckpt.restore(None, abstract(make_state()))
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        read_meta(missing)
    assert not missing.exists()  # restoring never creates the directory
    with Checkpointer(tmp_path / "run") as ckpt:
        ckpt.save(1, {"x": jnp.ones(2)}, data_state={}, meta={})
        with pytest.raises(FileNotFoundError, match=r"step 7 .*available: \[1\]"):
            ckpt.restore(7, abstract({"x": jnp.ones(2)}))


def test_structure_mismatch_names_the_first_mismatched_key_path(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, data_state={}, meta={})
        target = abstract(state)
        del target["rngs"]
        with pytest.raises(ValueError, match=r"checkpoint has 'rngs', which the target lacks"):
            ckpt.restore(1, target)
        target = {**abstract(state), "ema": abstract(state["params"])}
        with pytest.raises(ValueError, match=r"target has 'ema/bias', which the checkpoint lacks"):
            ckpt.restore(1, target)
        wider = {**state, "params": nnx.state(nnx.Linear(8, 17, rngs=nnx.Rngs(0)), nnx.Param)}
        with pytest.raises(ValueError, match=r"'params/bias' has shape \(16,\) in the checkpoint, .* \(17,\)"):
            ckpt.restore(1, abstract(wider))
        with pytest.raises(ValueError, match=r"at 'rng': saved a key, the target has an array"):
            ckpt.restore(1, {**abstract(state), "rng": abstract(jnp.zeros((2,), jnp.uint32))})
        with pytest.raises(ValueError, match=r"'step' has no sharding"):
            ckpt.restore(1, {**abstract(state), "step": jax.ShapeDtypeStruct((), jnp.int32)})


# ---------------------------------------------------------------- damaged checkpoints


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize("damage", ["array", "array_missing", "meta", "layout", "data_state", "item_missing"])
def test_a_damaged_checkpoint_names_its_step_and_file(tmp_path, damage):
    from agentrm_jax.training.checkpoint import CorruptCheckpointError

    state = make_state()
    with Checkpointer(tmp_path) as ckpt:
        for step in (1, 2):
            ckpt.save(step, state, data_state={"epoch": 0}, meta={"step": step})
    step_dir = tmp_path / "2"
    arrays = sorted((step_dir / "state" / "d").iterdir())
    if damage == "array":
        for f in arrays:
            _truncate(f, 10)
        expected = r"state/d/\w+ is truncated \(OUT_OF_RANGE"
    elif damage == "array_missing":
        for f in arrays:
            f.unlink()
        expected = r"state/d/\w+ is missing \(NOT_FOUND"
    elif damage == "item_missing":
        shutil.rmtree(step_dir / "data_state")
        expected = r"data_state/ is missing"
    else:
        _truncate(step_dir / damage / "metadata", 5)
        expected = rf"{damage}/metadata is not valid JSON \("
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CorruptCheckpointError, match=rf"^checkpoint step 2 in {tmp_path} is damaged: {expected}"
                           ) as err:
            ckpt.restore(None, abstract(state))
        assert err.value.step == 2 and "\n" not in str(err.value)
        got, _, meta = ckpt.restore(1, abstract(state))  # the older one still reads back whole
        assert meta == {"step": 1}
        assert_bitwise_equal(got, state)


def test_a_structure_mismatch_is_not_called_damage(tmp_path):
    from agentrm_jax.training.checkpoint import CorruptCheckpointError

    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"x": jnp.ones(2)}, data_state={}, meta={})
        with pytest.raises(ValueError) as err:
            ckpt.restore(1, abstract({"y": jnp.ones(2)}))
    assert not isinstance(err.value, CorruptCheckpointError)


def test_set_aside_renames_a_step_and_rotation_goes_on(tmp_path):
    with Checkpointer(tmp_path, keep=2) as ckpt:
        for step in (1, 2):
            ckpt.save(step, {"x": jnp.full(2, step)}, data_state={}, meta={"step": step})
        moved = ckpt.set_aside(2)
        assert moved.name == "2.corrupt" and ckpt.all_steps() == [1]
        for step in (2, 3, 4):  # step 2 saved again, and rotation to the newest two
            ckpt.save(step, {"x": jnp.full(2, step)}, data_state={}, meta={"step": step})
        assert ckpt.all_steps() == [3, 4]
        assert ckpt.set_aside(4).name == "4.corrupt"
        ckpt.save(4, {"x": jnp.full(2, 4)}, data_state={}, meta={"step": 4})
        assert ckpt.set_aside(4).name == "4.corrupt.1"  # an earlier one is never overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.corrupt", "3", "4.corrupt", "4.corrupt.1"]
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.all_steps() == [3]

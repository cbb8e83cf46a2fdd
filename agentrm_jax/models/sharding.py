"""Logical axis names -> mesh axes: the one rules table of agentrm_jax.

Model code tags every parameter with logical names (`logical_axes` metadata,
e.g. ("embed", "mlp")). Which mesh axis each name is split over is decided here
and nowhere else, so the same model runs on one CPU, 8 fake CPU devices and a pod.
Mesh axes: `data` (batch only), `fsdp` (batch and parameter shards), `tensor`
(model parallel within a layer).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None

# Training: parameters are split over fsdp on their embed dimension and over
# tensor on heads / mlp / vocab; activations' batch over data x fsdp.
TRAIN_RULES: Mapping[str, MeshAxes] = {
    "batch": ("data", "fsdp"),
    "length": None,
    "embed": "fsdp",
    "vocab": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "norm": None,
}

# Sampling: no optimizer state to spread, so parameters are only split over tensor.
SAMPLE_RULES: Mapping[str, MeshAxes] = {**TRAIN_RULES, "embed": None}


# MaxText's guardrail: on a mesh that can split parameters, a model that leaves more than this
# share of its parameter bytes whole on every device is a wrong mesh or rules, not a choice.
MAX_REPLICATED_FRACTION = 0.05


@dataclasses.dataclass(frozen=True)
class ShardingPlan:
    """A mesh plus the rules that place logical axes on it."""

    mesh: Mesh
    rules: Mapping[str, MeshAxes] = dataclasses.field(default_factory=lambda: dict(TRAIN_RULES))

    def spec(self, logical_axes: tuple[str | None, ...], shape: tuple[int, ...], *, name: str = "?",
             strict: bool = True) -> PartitionSpec:
        """PartitionSpec for one array; `strict` raises when a dimension does not divide evenly,
        otherwise that dimension is replicated."""
        return logical_to_spec(logical_axes, shape, self.mesh, self.rules, name=name, strict=strict)


def logical_to_spec(logical_axes, shape, mesh: Mesh, rules: Mapping[str, MeshAxes], *, name: str = "?",
                    strict: bool = True) -> PartitionSpec:
    """Maps logical names to a PartitionSpec over `mesh`.

    Unknown logical names are an error; a mesh axis is used at most once per array.
    A dimension not divisible by its mesh axes' size raises (strict) or is replicated.
    """
    if len(logical_axes) != len(shape):
        raise ValueError(f"{name}: {len(logical_axes)} logical axes {logical_axes} for shape {shape}")
    used: set[str] = set()
    out = []
    for axis_name, dim in zip(logical_axes, shape):
        if axis_name is None:
            out.append(None)
            continue
        if axis_name not in rules:
            raise ValueError(f"{name}: logical axis {axis_name!r} has no rule; known: {sorted(rules)}")
        target = rules[axis_name]
        mesh_axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
        mesh_axes = tuple(a for a in mesh_axes if a in mesh.shape and a not in used)
        size = math.prod(mesh.shape[a] for a in mesh_axes)
        if size > 1 and dim % size:
            if strict:
                raise ValueError(f"{name}: dimension {axis_name}={dim} is not divisible by mesh axes "
                                 f"{mesh_axes} of size {size}; change the mesh shape or the model size")
            mesh_axes = ()
        used.update(mesh_axes)
        out.append(None if not mesh_axes else (mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes))
    return PartitionSpec(*out)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh; raises if the product is not the number of devices."""
    devices = jax.devices() if devices is None else devices
    want = data * fsdp * tensor
    if want != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} = {want} devices, but "
                         f"{len(devices)} are available; make the product equal the device count")
    return jax.make_mesh((data, fsdp, tensor), MESH_AXES, devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)


def param_shardings(model: nnx.Module, plan: ShardingPlan, *, strict: bool = True):
    """An nnx.State of NamedSharding mirroring the model's parameters."""
    state = nnx.state(model, nnx.Param)

    def one(path, var):
        axes = var.get_metadata().get("logical_axes")
        if axes is None:
            raise ValueError(f"parameter {'.'.join(map(str, path))} has no logical_axes metadata")
        spec = plan.spec(axes, var.shape, name=".".join(map(str, path)), strict=strict)
        return NamedSharding(plan.mesh, spec)

    return nnx.map_state(one, state)


def shard_model(model: nnx.Module, plan: ShardingPlan, *, strict: bool = True,
                max_replicated_fraction: float = MAX_REPLICATED_FRACTION) -> nnx.Module:
    """Places the model's parameters on the mesh (in place) and returns it.

    Raises (before moving anything) when more than `max_replicated_fraction` of the parameter
    bytes would stay whole on every device: see `check_replication`.
    """
    shardings = param_shardings(model, plan, strict=strict)
    params = nnx.state(model, nnx.Param)
    check_replication(params, shardings, plan, max_replicated_fraction=max_replicated_fraction)
    for (_, var), (_, sharding) in zip(nnx.to_flat_state(params), nnx.to_flat_state(shardings)):
        var.set_value(jax.device_put(var.get_value(), sharding))
    return model



def parameter_split_size(params: nnx.State, plan: ShardingPlan) -> int:
    """How many ways the rules could split parameters on this mesh: the product of the sizes of
    the mesh axes that the parameters' logical axes map to (1 on a data-only mesh)."""
    names = {a for _, var in nnx.to_flat_state(params) for a in (var.get_metadata().get("logical_axes") or ())
             if a is not None}
    axes: set[str] = set()
    for name in names:
        target = plan.rules.get(name)
        axes.update(() if target is None else ((target,) if isinstance(target, str) else target))
    return math.prod(plan.mesh.shape[a] for a in axes if a in plan.mesh.shape)


def check_replication(params: nnx.State, shardings, plan: ShardingPlan, *,
                      max_replicated_fraction: float = MAX_REPLICATED_FRACTION) -> float:
    """Returns the fraction of parameter bytes that `shardings` leave fully replicated, and raises
    one ValueError naming the largest replicated tensors when it exceeds `max_replicated_fraction`
    on a mesh whose parameter axes (`parameter_split_size`) have more than one device.

    `params`: an nnx.State of parameters (concrete or abstract); `shardings`: the matching State
    of NamedSharding (`param_shardings`) or None to read each array's own sharding.
    """
    flat = nnx.to_flat_state(params)
    placed = [s for _, s in nnx.to_flat_state(shardings)] if shardings is not None else \
        [var.get_value().sharding for _, var in flat]
    total, rows = 0, []
    for (path, var), sharding in zip(flat, placed):
        nbytes = math.prod(var.shape) * jax.numpy.dtype(var.get_value().dtype).itemsize
        total += nbytes
        if sharding.is_fully_replicated:
            rows.append((nbytes, ".".join(map(str, path)), tuple(var.shape)))
    fraction = sum(r[0] for r in rows) / max(total, 1)
    split = parameter_split_size(params, plan)
    if split > 1 and fraction > max_replicated_fraction:
        rows.sort(reverse=True)
        size = lambda n: f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"
        largest = ", ".join(f"{name} {list(shape)} ({size(nbytes)})" for nbytes, name, shape in rows[:5])
        raise ValueError(f"{fraction:.0%} of parameter bytes would be replicated on every device of mesh "
                         f"{dict(plan.mesh.shape)} (limit {max_replicated_fraction:.0%}); largest replicated: "
                         f"{largest}; pick fsdp / tensor sizes that divide these dimensions, or pass "
                         f"max_replicated_fraction=1.0 to accept it")
    return fraction


def largest_replicated(model: nnx.Module, top: int = 5) -> list[tuple[str, int]]:
    """The `top` largest parameters (name, size) that are fully replicated on their mesh."""
    rows = []
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var.get_value()
        sharding = getattr(value, "sharding", None)
        if sharding is not None and sharding.is_fully_replicated:
            rows.append((".".join(map(str, path)), int(value.size)))
    return sorted(rows, key=lambda r: -r[1])[:top]

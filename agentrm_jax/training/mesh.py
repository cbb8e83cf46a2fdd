"""The training mesh: (data, fsdp, tensor) over every device of every host.

`initialize_distributed()` starts `jax.distributed` when the process runs
under a cluster launcher (several processes), and is a no-op on one host.
`training_mesh(shape)` checks the shape against the device count before
anything is compiled and builds the mesh with `models.sharding.make_mesh`
(axis types Auto: see docs/ARCHITECTURE.md, "Training").
"""

from __future__ import annotations

import os

import jax
from jax.sharding import Mesh

from agentrm_jax.models.sharding import make_mesh
from agentrm_jax.training.config import MeshShape

__all__ = ["cluster_detected", "initialize_distributed", "training_mesh"]

# Variables that launchers set when a job spans several processes; any of them (with more than
# one process) means jax.distributed.initialize() can find its coordinator by itself.
_CLUSTER_VARIABLES = {
    "JAX_COORDINATOR_ADDRESS": None,  # explicit: jax reads it with JAX_NUM_PROCESSES / JAX_PROCESS_ID
    "SLURM_NTASKS": "SLURM",  # SLURM srun
    "OMPI_COMM_WORLD_SIZE": "Open MPI",  # mpirun
    "TPU_WORKER_HOSTNAMES": "Cloud TPU",  # multi-host TPU slices
}


def cluster_detected(environ=None) -> str | None:
    """The launcher whose variables say this is one process of several, or None on a single host."""
    environ = os.environ if environ is None else environ
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    for name, launcher in _CLUSTER_VARIABLES.items():
        value = environ.get(name, "")
        if launcher and value:
            parts = value.split(",") if name == "TPU_WORKER_HOSTNAMES" else [None] * _int(value)
            if len(parts) > 1:
                return launcher
    return None


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def initialize_distributed() -> bool:
    """Start jax.distributed when a cluster launcher is detected; returns whether it did.

    Must run before anything touches a device (jax.devices() included).
    """
    launcher = cluster_detected()
    if launcher is None:
        return False
    jax.distributed.initialize()
    return True


def training_mesh(shape: MeshShape, devices=None) -> Mesh:
    """The (data, fsdp, tensor) mesh of `shape` over `devices` (default: every device of every host).

    Raises ValueError, before any compilation, when the shape's product is not the device count.
    """
    devices = jax.devices() if devices is None else list(devices)
    if shape.size != len(devices):
        raise ValueError(f"mesh {shape} needs {shape.size} devices but {len(devices)} are available "
                         f"({jax.process_count()} process(es)); set --mesh so data x fsdp x tensor = {len(devices)}")
    return make_mesh(shape.data, shape.fsdp, shape.tensor, devices=devices)

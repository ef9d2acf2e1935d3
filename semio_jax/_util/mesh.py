"""Device meshes for sharded builds and solves (JAX's ``Mesh``), and multi-host start-up.

A one-axis mesh named ``"states"`` over the devices; the state index is split
over every axis of a mesh, so a hand-built mesh with several axes works too.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

__all__ = ["AXIS", "device_mesh", "initialize_distributed", "mesh_axes", "to_host"]

AXIS = "states"


def initialize_distributed(**kwargs) -> None:
    """``jax.distributed.initialize(**kwargs)`` for multi-host runs (idempotent).

    Call it first thing in every process (before any JAX computation); with no
    arguments JAX reads the cluster from the environment (SLURM, Open MPI, TPU,
    or ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``).
    Pass ``coordinator_address="host:port", num_processes=P, process_id=i``
    to set it by hand.
    """
    try:
        from jax._src import distributed as _dist  # state object; public API has no "is initialised"
        if getattr(_dist.global_state, "client", None) is not None:
            return
    except Exception:  # pragma: no cover - private layout changed: just try
        pass
    jax.distributed.initialize(**kwargs)


def device_mesh(n: int | None = None, devices=None, axis_name: str = AXIS) -> Mesh:
    """A one-axis mesh over ``n`` devices (default: all of ``jax.devices()``, of every process).

    The state index is split over every axis of the mesh, so a mesh built by
    hand with several axes (e.g. hosts x local devices) works as well: the
    blocks follow the row-major order of the mesh's devices.
    """
    devs = list(devices) if devices is not None else list(jax.devices())
    if n is not None:
        if not 1 <= int(n) <= len(devs):
            raise ValueError(f"asked for {n} devices but {len(devs)} are available ({devs[0].platform}); "
                             f"on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=K before JAX starts")
        devs = devs[: int(n)]
    return Mesh(np.array(devs, dtype=object), (axis_name,))


def mesh_axes(mesh: Mesh) -> tuple:
    """The mesh's axis names: the state index is split over all of them."""
    return tuple(mesh.axis_names)


def to_host(x) -> np.ndarray:
    """A global jax array as one host numpy array (every process gets all of it)."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

"""Structured products and solver kernels on an operator sharded across devices (``shard_map``).

The table ``probs[S, N]`` and every vector of length S are split into D
contiguous blocks of the state index (padded with zero rows to a multiple of
D). A pull ``P f`` all-gathers f and gathers ``f[succ(s, y)]`` for the local
rows; a push ``dist P`` scatters the local flow ``dist[s] probs[s, y]`` onto
``succ(s, y)`` in a full-length partial vector and reduce-scatters it
(``psum_scatter``). Successors are computed from the index arithmetic of the
space (``(s mod N^(L-1)) N + y`` for full states, the prefix-tree rule for
prefix states), never stored.

Kernels for the solvers: lazy power iteration as one compiled
``lax.while_loop`` (the residual is a ``psum``), exact n-step hitting
probabilities of a state (behind the stationary error bound), and restarted
GMRES (:func:`jax.scipy.sparse.linalg.gmres`) on the sharded push. The
stationary solve that uses them is ``semio_jax.analysis.stationary_result(op,
mesh=...)``. Everything is float64; what stays on the host is the class
decomposition and the host copy of the table.
"""

from __future__ import annotations

import scipy.sparse.linalg as spla
from jax.scipy.sparse.linalg import gmres
from dataclasses import dataclass
from functools import cached_property, lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._util.mesh import device_mesh, mesh_axes, to_host
from ..core.operator import Operator
from ..core.space import StateSpace

__all__ = ["ShardedOperator", "shard_operator", "sharded_push", "sharded_pull"]


# ----------------------------------------------------------- index layout
def _successor_fn(space: StateSpace, fill: int):
    """jnp: global state indices int64[B] -> successors int64[B, N]; indices >= |S| map to ``fill``."""
    n, length = space.n_tokens, space.length
    nf, m, total = space.num_full, n ** (length - 1), space.num_states
    starts = [space.group_offsets[k] for k in range(1, length)] if space.prefixes else []
    nexts = [space.group_offsets[k + 1] for k in range(1, length)] if space.prefixes else []  # offsets[L] == 0

    def succ(s):
        y = jnp.arange(n, dtype=jnp.int64)  # [N]
        t = (s % m)[:, None] * n + y[None, :]  # full states: drop the oldest token, append y
        if starts:
            st = jnp.asarray(starts, dtype=jnp.int64)  # [L-1]
            nx = jnp.asarray(nexts, dtype=jnp.int64)
            g = jnp.clip(jnp.searchsorted(st, s, side="right") - 1, 0, len(starts) - 1)  # group of s
            tp = (nx[g] + (s - st[g]) * n)[:, None] + y[None, :]  # length k -> k+1: append y
            t = jnp.where((s >= nf)[:, None], tp, t)
        return jnp.where((s < total)[:, None], t, fill)

    return succ


@dataclass(frozen=True)
class _Layout:
    num_states: int
    n_tokens: int
    devices: int

    @property
    def block(self) -> int:
        return -(-self.num_states // self.devices)

    @property
    def padded(self) -> int:
        return self.block * self.devices


# --------------------------------------------------------- local kernels
def _local_rows(axes, block):
    d = jax.lax.axis_index(axes)
    return d.astype(jnp.int64) * block + jnp.arange(block, dtype=jnp.int64)  # global indices of the local rows


def _pull_local(p, f, *, axes, block, padded, succ):
    """(P f) for the local rows: p [B, N], f [B, ...] (local block) -> [B, ...]."""
    f_all = jax.lax.all_gather(f, axes, axis=0, tiled=True)  # [S_pad, ...]
    t = succ(_local_rows(axes, block))  # [B, N]
    g = jnp.take(f_all, t, axis=0, mode="fill", fill_value=0)  # [B, N, ...]
    return jnp.einsum("sy,sy...->s...", p, g)


def _push_local(p, d, *, axes, block, padded, succ):
    """(d P) restricted to the local block of targets: p [B, N], d [B, ...] -> [B, ...]."""
    t = succ(_local_rows(axes, block))  # [B, N]; padding rows -> padded (dropped)
    flow = d[:, None] * p.reshape(p.shape + (1,) * (d.ndim - 1))  # [B, N, ...]
    partial_ = jnp.zeros((padded,) + d.shape[1:], dtype=flow.dtype)
    partial_ = partial_.at[t.reshape(-1)].add(flow.reshape((-1,) + d.shape[1:]), mode="drop")  # [S_pad, ...]
    return jax.lax.psum_scatter(partial_, axes, scatter_dimension=0, tiled=True)  # [B, ...]


def _power_local(p, v0, tol, max_iter, *, axes, push):
    """Lazy power iteration v <- (v + v P) / 2 until ||v P - v||_1 <= tol (every step lazy; the single-device solver
    takes plain steps with a lazy one every eighth)."""

    def l1(x):
        return jax.lax.psum(jnp.sum(jnp.abs(x)), axes)

    w0 = push(p, v0)
    state = (v0, w0, l1(w0 - v0), jnp.asarray(1, jnp.int64))

    def cond(c):
        return (c[2] > tol) & (c[3] < max_iter)

    def body(c):
        v, w, _, it = c
        v = 0.5 * (v + w)
        w = push(p, v)
        return v, w, l1(w - v), it + 1

    v, w, res, it = jax.lax.while_loop(cond, body, state)
    return w / jax.lax.psum(jnp.sum(w), axes), res, it


def _hitting_local(p, g, j, steps, *, axes, block, pull):
    """``steps`` times g <- P g with g[j] = 1 (n-step hitting probabilities of state j)."""
    rows = _local_rows(axes, block)

    def body(_, g):
        return jnp.where(rows == j, 1.0, pull(p, g))

    return jax.lax.fori_loop(0, steps, body, g)


# ------------------------------------------------------- sharded operator
class _Kernels:
    """The compiled sharded programs of one (space, mesh); the table is an argument, so every
    ShardedOperator of the same space and mesh shares them (one compilation each)."""

    def __init__(self, space: StateSpace, mesh: Mesh):
        self.mesh = mesh
        self.axes = mesh_axes(mesh)
        lay = _Layout(space.num_states, space.n_tokens, int(mesh.devices.size))
        self.kw = dict(axes=self.axes, block=lay.block, padded=lay.padded, succ=_successor_fn(space, lay.padded))
        self._products: dict = {}
        self._solvers: dict = {}

    def spec(self, ndim: int) -> PartitionSpec:
        return PartitionSpec(self.axes, *([None] * (ndim - 1)))

    def shard_map(self, fn, in_specs, out_specs):
        return jax.jit(jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False))

    def product(self, kind: str, ndim: int):
        key = (kind, ndim)
        if key not in self._products:
            local = partial(_pull_local if kind == "pull" else _push_local, **self.kw)
            self._products[key] = self.shard_map(local, (self.spec(2), self.spec(ndim)), self.spec(ndim))
        return self._products[key]

    @cached_property
    def power(self):
        fn = partial(_power_local, axes=self.axes, push=partial(_push_local, **self.kw))
        rep = PartitionSpec()
        return self.shard_map(fn, (self.spec(2), self.spec(1), rep, rep), (self.spec(1), rep, rep))

    @cached_property
    def hitting(self):
        fn = partial(_hitting_local, axes=self.axes, block=self.kw["block"], pull=partial(_pull_local, **self.kw))
        rep = PartitionSpec()
        return self.shard_map(fn, (self.spec(2), self.spec(1), rep, rep), self.spec(1))

    def gmres(self, restart: int, maxiter: int, tol: float):
        key = ("gmres", restart, maxiter, tol)
        if key not in self._solvers:
            self._solvers[key] = _gmres_solver(self.product("push", 1), restart, maxiter, tol)
        return self._solvers[key]


@lru_cache(maxsize=32)
def _kernels(space: StateSpace, mesh: Mesh) -> _Kernels:
    return _Kernels(space, mesh)


class ShardedOperator:
    """An :class:`Operator`'s table laid out over the devices of a mesh.

    Attributes:
      operator: the host Operator it was made from.
      mesh: the mesh; the state index is split over all of its axes.
      probs: float64[padded, N] jax array, rows split into contiguous blocks
        (``padded`` = |S| rounded up to a multiple of the device count; the extra
        rows are zero, so padded entries of every vector stay zero).

    Vectors on the devices are float64[padded] (or [padded, m]) jax arrays with
    :attr:`vector_sharding`; :meth:`vector` and :meth:`to_numpy` convert.
    :meth:`push` / :meth:`pull` take and return such arrays and can be traced
    inside ``jax.jit`` (e.g. as the matvec of :func:`jax.scipy.sparse.linalg.gmres`);
    :meth:`push_numpy` / :meth:`pull_numpy` and :meth:`linear_operator` work on
    host vectors of length |S|.
    """

    def __init__(self, operator: Operator, mesh: Mesh | None = None):
        self.operator = operator
        self.mesh = mesh if mesh is not None else device_mesh()
        self.space = operator.space
        self.layout = _Layout(operator.num_states, operator.n_tokens, int(self.mesh.devices.size))
        axes = mesh_axes(self.mesh)
        self.vector_sharding = NamedSharding(self.mesh, PartitionSpec(axes))
        self.table_sharding = NamedSharding(self.mesh, PartitionSpec(axes, None))
        lay = self.layout
        probs = operator.probs

        def rows(index):
            r = index[0]
            start, stop = r.start or 0, lay.padded if r.stop is None else r.stop
            out = np.zeros((stop - start, lay.n_tokens), dtype=np.float64)
            real = max(0, min(stop, lay.num_states) - start)
            out[:real] = probs[start:start + real]
            return out

        self.probs = jax.make_array_from_callback((lay.padded, lay.n_tokens), self.table_sharding, rows)

    # ------------------------------------------------------------ sizes
    @property
    def num_states(self) -> int:
        return self.layout.num_states

    @property
    def n_devices(self) -> int:
        return self.layout.devices

    @property
    def padded_size(self) -> int:
        return self.layout.padded

    def __repr__(self) -> str:
        return (f"ShardedOperator({self.space!r}, {self.n_devices} devices "
                f"({self.mesh.devices.flat[0].platform}), {self.layout.block} states per device)")

    # ------------------------------------------------------------ vectors
    def vector(self, x) -> jax.Array:
        """Host vector float64[|S|] (or [|S|, m]) -> padded, sharded device vector."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[0] != self.num_states:
            raise ValueError(f"expected a vector of shape [{self.num_states}] or [{self.num_states}, m], got {x.shape}")
        lay = self.layout
        sharding = self.vector_sharding if x.ndim == 1 else self.table_sharding

        def piece(index):
            r = index[0]
            start, stop = r.start or 0, lay.padded if r.stop is None else r.stop
            out = np.zeros((stop - start,) + x.shape[1:], dtype=np.float64)
            real = max(0, min(stop, lay.num_states) - start)
            out[:real] = x[start:start + real]
            return out

        return jax.make_array_from_callback((lay.padded,) + x.shape[1:], sharding, piece)

    def to_numpy(self, x) -> np.ndarray:
        """Padded device vector -> host float64[|S|] (or [|S|, m])."""
        return to_host(x)[: self.num_states]

    def indicator(self, states) -> jax.Array:
        """Sharded float64 0/1 vector of a set of states."""
        v = np.zeros(self.num_states)
        v[np.asarray(states, dtype=np.int64)] = 1.0
        return self.vector(v)

    # ----------------------------------------------------------- kernels
    @property
    def _kernels(self) -> "_Kernels":
        return _kernels(self.space, self.mesh)

    def push(self, x: jax.Array) -> jax.Array:
        """x P for a padded sharded row vector x (float64[padded] or [padded, m])."""
        return self._kernels.product("push", x.ndim)(self.probs, x)

    def pull(self, f: jax.Array) -> jax.Array:
        """P f for a padded sharded column vector f (float64[padded] or [padded, m])."""
        return self._kernels.product("pull", f.ndim)(self.probs, f)

    def push_numpy(self, dist) -> np.ndarray:
        """Same as :meth:`Operator.push` on host vectors, computed on the mesh."""
        return self.to_numpy(self.push(self.vector(dist)))

    def pull_numpy(self, f) -> np.ndarray:
        """Same as :meth:`Operator.pull` on host vectors, computed on the mesh."""
        return self.to_numpy(self.pull(self.vector(f)))

    def linear_operator(self, transpose: bool = False):
        """A scipy LinearOperator on host vectors of length |S|: P x (or P^T x = (x^T P)^T when transpose).

        For scipy's Krylov solvers (gmres, bicgstab, eigs, ...); the products run on the mesh.
        For JAX's own solvers pass :meth:`pull` / :meth:`push` on device vectors instead.
        """

        fwd, bwd = (self.push_numpy, self.pull_numpy) if transpose else (self.pull_numpy, self.push_numpy)
        return spla.LinearOperator((self.num_states, self.num_states), matvec=fwd, rmatvec=bwd, dtype=np.float64)

    # ----------------------------------------------------------- solvers
    def power(self, v0: jax.Array, tol: float, max_iter: int) -> tuple[jax.Array, float, int]:
        """Lazy power iteration from v0 (device vector): (w / sum w, last residual, pushes done).

        Stops at the first push w = v P with ||w - v||_1 <= tol or after max_iter pushes,
        (the caller decides what a miss means).
        """
        w, res, it = self._kernels.power(self.probs, v0, jnp.float64(tol), jnp.int64(max_iter))
        return w, float(res), int(it)

    def hitting_time_bound(self, members: np.ndarray, j: int, max_factor: int = 64) -> float | None:
        """Sharded :func:`semio_jax.analysis.stationary.hitting_time_bound` (same doubling schedule)."""
        g = self.indicator([j])
        mask = self.indicator(members) > 0
        n, target = 0, self.space.length
        while target <= max_factor * self.space.length:
            g = self._kernels.hitting(self.probs, g, jnp.int64(j), jnp.int64(target - n))
            n = target
            p_min = float(jnp.min(jnp.where(mask, g, jnp.inf)))
            if p_min > 0:
                return n / p_min
            target *= 2
        return None


def shard_operator(op: Operator, mesh: Mesh | None = None) -> ShardedOperator:
    """Lay an Operator's table out over ``mesh`` (default: all devices)."""
    return ShardedOperator(op, mesh)


def sharded_push(op: Operator | ShardedOperator, dist, mesh: Mesh | None = None) -> np.ndarray:
    """:meth:`Operator.push` (dist @ P) computed on the mesh; host in, host out."""
    sop = op if isinstance(op, ShardedOperator) else ShardedOperator(op, mesh)
    return sop.push_numpy(dist)


def sharded_pull(op: Operator | ShardedOperator, f, mesh: Mesh | None = None) -> np.ndarray:
    """:meth:`Operator.pull` (P @ f) computed on the mesh; host in, host out."""
    sop = op if isinstance(op, ShardedOperator) else ShardedOperator(op, mesh)
    return sop.pull_numpy(f)


def _gmres_solver(push, restart: int, maxiter: int, tol: float):

    def solve(probs, mask, ej):
        b = mask * push(probs, ej)  # r_j: row j of P on C \ {j}

        def a(x):  # x (I - Q_j) on C \ {j}, the identity elsewhere
            return x - mask * push(probs, mask * x)

        x, _ = gmres(a, b, tol=tol, atol=0.0, restart=restart, maxiter=maxiter, solve_method="batched")
        return x

    return jax.jit(solve)

"""The state space sharded across devices with JAX's own sharding (``Mesh`` + ``shard_map``).

Three things are spread over the devices of a :class:`jax.sharding.Mesh`:

* **the operator build** (:func:`build_operator_sharded`): each model call
  evaluates ``devices x batch_size`` contexts; every device generates its own
  contexts from a slice of state indices (no host-to-device traffic), runs the
  model on them and applies the sampling procedure in float64. The result is
  gathered to the host and returned as the ordinary :class:`~semio_jax.operator.Operator`.
* **the structured products** (:class:`ShardedOperator`, :func:`sharded_push`,
  :func:`sharded_pull`): the table ``probs[S, N]`` and every vector of length S
  are split into D contiguous blocks of the state index (padded with zero rows
  to a multiple of D). A pull ``P f`` all-gathers f and gathers
  ``f[succ(s, y)]`` for the local rows; a push ``dist P`` scatters the local
  flow ``dist[s] probs[s, y]`` onto ``succ(s, y)`` in a full-length partial
  vector and reduce-scatters it (``psum_scatter``). Successors are computed
  from the index arithmetic of the space (``(s mod N^(L-1)) N + y`` for full
  states, the prefix-tree rule for prefix states), never stored.
* **the solvers** (:func:`stationary_sharded`): the lazy power iteration of
  :mod:`semio_jax.analysis.stationary` runs as one compiled
  ``lax.while_loop`` on the devices (the residual is a ``psum``), and so do the
  exact n-step hitting probabilities behind its certified error bound; the
  ``"gmres"`` method solves the reference-state system ``x (I - Q_j) = r_j``
  with :func:`jax.scipy.sparse.linalg.gmres` on the sharded operator. The
  result is the same :class:`~semio_jax.analysis.stationary.StationaryResult`.

What stays on the host: the class decomposition (scipy's strongly connected
components on the support graph) and the host copy of the table that every
:class:`Operator` holds. Everything is float64 (``jax_enable_x64`` is switched
on when semio_jax is imported); models keep their own (usually float32) logits.

Multi-host: call :func:`initialize_distributed` (``jax.distributed.initialize``)
in every process before anything else; :func:`device_mesh` then spans the
devices of all processes, every process runs the same calls (SPMD), and every
process gets the whole host table back. See docs/sharding.md.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from functools import cached_property, lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import ConvergenceError, LogitsShapeError
from .model import describe_model
from .operator import (
    _DEFAULT_BATCH,
    Operator,
    _apply_procedure,
    _check_logits,
    _check_model_fits,
    _evaluate_prefix_tree,
    _progress_bar,
    build_operator,
    check_fits,
)
from .sampling import Procedure, parse
from .space import StateSpace

__all__ = [
    "AXIS",
    "device_mesh",
    "initialize_distributed",
    "ShardedOperator",
    "shard_operator",
    "sharded_push",
    "sharded_pull",
    "evaluate_logits_sharded",
    "build_operator_sharded",
    "stationary_sharded",
]

AXIS = "states"
_EPS = float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------- meshes
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


def _axes(mesh: Mesh) -> tuple:
    return tuple(mesh.axis_names)


def _to_host(x) -> np.ndarray:
    """A global jax array as one host numpy array (every process gets all of it)."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


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
    """Lazy power iteration v <- (v + v P) / 2 until ||v P - v||_1 <= tol, as _solve_power does it."""

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
        self.axes = _axes(mesh)
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
        axes = _axes(self.mesh)
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
        return _to_host(x)[: self.num_states]

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
        import scipy.sparse.linalg as spla

        fwd, bwd = (self.push_numpy, self.pull_numpy) if transpose else (self.pull_numpy, self.push_numpy)
        return spla.LinearOperator((self.num_states, self.num_states), matvec=fwd, rmatvec=bwd, dtype=np.float64)

    # ----------------------------------------------------------- solvers
    def power(self, v0: jax.Array, tol: float, max_iter: int) -> tuple[jax.Array, float, int]:
        """Lazy power iteration from v0 (device vector): (w / sum w, last residual, pushes done).

        Stops at the first push w = v P with ||w - v||_1 <= tol or after max_iter pushes,
        exactly like the single-device ``_solve_power`` (the caller decides what a miss means).
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


# -------------------------------------------------------------- the build
def _digits_jnp(values, base: int, k: int):
    """Big-endian digits int64[B] -> int32[B, k] (as StateSpace.contexts)."""
    weights = jnp.asarray([base ** (k - 1 - i) for i in range(k)], dtype=jnp.int64)  # [k]
    return ((values[:, None] // weights[None, :]) % base).astype(jnp.int32)


_EVALUATORS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _group_evaluator(model, procedure: Procedure, mesh: Mesh, n: int, k: int, per_device: int):
    """Compiled: (start) -> (logits, probs) of group-local states start + [0, D * per_device), sharded.

    Made once per (model, procedure, mesh, k, per_device) and kept while the model lives.
    """
    key = (procedure, mesh, n, k, per_device)
    try:
        cache = _EVALUATORS.setdefault(model, {})
    except TypeError:  # not weak-referenceable: compile afresh
        cache = {}
    if key in cache:
        return cache[key]
    try:
        ref = weakref.ref(model)  # the compiled function must not keep its model alive
    except TypeError:
        ref = lambda: model  # noqa: E731
    axes = _axes(mesh)
    size = n**k

    def local(start):
        d = jax.lax.axis_index(axes).astype(jnp.int64)
        idx = start + d * per_device + jnp.arange(per_device, dtype=jnp.int64)
        ctx = _digits_jnp(jnp.minimum(idx, size - 1), n, k)  # padding repeats the last real context
        logits = ref()(ctx)  # [b, N]
        if getattr(logits, "ndim", None) != 2 or tuple(logits.shape) != (per_device, n):
            raise LogitsShapeError(
                f"the model returned logits of shape {tuple(getattr(logits, 'shape', ()))} for contexts of shape "
                f"{(per_device, k)}; expected [B, N] = {(per_device, n)} (last-position logits over an alphabet "
                f"of N={n})")
        return logits, procedure.probabilities(logits)

    spec = PartitionSpec(axes, None)
    fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=PartitionSpec(), out_specs=(spec, spec), check_vma=False))
    cache[key] = fn
    return fn


def evaluate_logits_sharded(model, space: StateSpace, procedure: Procedure | str | None = None, *,
                            mesh: Mesh | None = None, batch_size: int = _DEFAULT_BATCH,
                            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probs) for every state of ``space``, evaluated over the devices of ``mesh``.

    Each call evaluates ``devices x per_device`` contexts of one length k with
    ``per_device = min(batch_size, ceil(N^k / devices))``; the states are the
    big-endian group-local indices, each device generating its own contexts.
    The procedure is applied on the devices (float64). Returns host arrays
    logits float32[|S|, N] (float64 if the model's are) and probs float64[|S|, N].
    """
    mesh = mesh if mesh is not None else device_mesh()
    procedure = parse(procedure if procedure is not None else "temperature=1").validate_for(space.n_tokens)
    _check_model_fits(model, space)
    n, devices = space.n_tokens, int(mesh.devices.size)
    logits_out = probs_out = None
    bar = _progress_bar(space.num_states, progress)
    for k, offset in space.iter_groups():
        size = n**k
        per_device = max(1, min(int(batch_size), -(-size // devices)))
        chunk = per_device * devices
        fn = _group_evaluator(model, procedure, mesh, n, k, per_device)
        for start in range(0, size, chunk):
            lg, pr = fn(jnp.int64(start))
            real = min(chunk, size - start)
            lg, pr = _to_host(lg)[:real], _to_host(pr)[:real]
            _check_logits(lg, None, n, k, lambda s=start, r=real: space.contexts(k, s, s + r))
            if logits_out is None:
                dtype = np.float64 if lg.dtype == np.float64 else np.float32
                logits_out = np.empty((space.num_states, n), dtype=dtype)
                probs_out = np.empty((space.num_states, n), dtype=np.float64)
            logits_out[offset + start: offset + start + real] = lg
            probs_out[offset + start: offset + start + real] = pr
            bar.update(real)
    bar.close()
    return logits_out, probs_out


def build_operator_sharded(model, space: StateSpace, procedure: Procedure | str | None = None, *,
                           mesh: Mesh | None = None, batch_size: int = _DEFAULT_BATCH,
                           memory_limit: int | None = None, keep_logits: bool = True,
                           progress: bool = False, method: str = "auto") -> Operator:
    """:func:`~semio_jax.operator.build_operator` with the model calls spread over ``mesh``.

    ``method`` "auto"/"prefix": a model whose ``prefix_tree_logits`` accepts
    ``mesh=`` (the zoo's TransformerModel) walks its prefix tree with D subtrees
    at a time, one per device (blocks of ``batch_size`` nodes per device); the
    procedure is then applied on the host in float64. "plain" (and "auto" for
    other models): every model call evaluates ``devices x batch_size`` contexts
    (``batch_size`` is per device here), each state at its full length k. Returns the
    ordinary host :class:`Operator`. Models marked ``jittable = False`` cannot
    run inside ``shard_map``: they get the ordinary single-device build.
    """
    procedure = parse(procedure if procedure is not None else "temperature=1").validate_for(space.n_tokens)
    if not getattr(model, "jittable", True):
        return build_operator(model, space, procedure, batch_size=batch_size, memory_limit=memory_limit,
                              keep_logits=keep_logits, progress=progress, method="plain", checkpoint_dir=None)
    check_fits(space, memory_limit, keep_logits)
    if method not in ("auto", "plain", "prefix"):
        raise ValueError(f"unknown evaluation method {method!r}; use auto, plain or prefix")
    walk = getattr(model, "prefix_tree_logits", None)
    walks_on_mesh = callable(walk) and "mesh" in inspect.signature(walk).parameters
    if method == "prefix" and not walks_on_mesh:
        raise ValueError(f"{type(model).__name__} has no prefix_tree_logits(..., mesh=); use method='plain'")
    if method != "plain" and walks_on_mesh:
        mesh = mesh if mesh is not None else device_mesh()
        logits = _evaluate_prefix_tree(model, space, batch_size, progress, mesh=mesh)
        probs = _apply_procedure(procedure, logits)
        return Operator(space, probs, procedure, logits if keep_logits else None, describe_model(model))
    logits, probs = evaluate_logits_sharded(model, space, procedure, mesh=mesh, batch_size=batch_size,
                                            progress=progress)
    return Operator(space, probs, procedure, logits if keep_logits else None, describe_model(model))


# ------------------------------------------------------------ stationary
def _gmres_solver(push, restart: int, maxiter: int, tol: float):
    from jax.scipy.sparse.linalg import gmres

    def solve(probs, mask, ej):
        b = mask * push(probs, ej)  # r_j: row j of P on C \ {j}

        def a(x):  # x (I - Q_j) on C \ {j}, the identity elsewhere
            return x - mask * push(probs, mask * x)

        x, _ = gmres(a, b, tol=tol, atol=0.0, restart=restart, maxiter=maxiter, solve_method="batched")
        return x

    return jax.jit(solve)


def stationary_sharded(op: Operator | ShardedOperator, mesh: Mesh | None = None, *, method: str = "power",
                       tol: float = 1e-12, max_iter: int = 100_000, restart: int = 30,
                       gmres_maxiter: int = 200):
    """Stationary distribution of every attractor computed on the mesh, with certified bounds.

    Returns a :class:`~semio_jax.analysis.stationary.StationaryResult` built as
    ``stationary_result(op, method="power")`` builds it: the residual
    ||pi P - pi||_1, the bound ``4 tau_j residual`` (with the same rounding
    margins) where tau_j is bounded from exact n-step hitting probabilities of
    the reference state j (largest mass), all products on the mesh.

    Methods:
      "power": lazy power iteration pi <- pi (I + P) / 2 from the uniform
        vector on the attractor until the residual is <= ``tol`` (else
        ConvergenceError), one compiled loop on the devices.
      "gmres": j = argmax of a 200-step lazy power run, then
        ``x (I - Q_j) = r_j`` by restarted GMRES (jax.scipy.sparse.linalg.gmres
        with the sharded push as its operator), pi = (x, 1) / Z, then lazy power
        steps from there until the residual is <= ``tol`` (usually none).
    """
    from .analysis.classes import class_structure
    from .analysis.stationary import StationaryResult

    if method not in ("power", "gmres"):
        raise ValueError(f"unknown sharded stationary method {method!r}; use power or gmres")
    sop = op if isinstance(op, ShardedOperator) else ShardedOperator(op, mesh)
    base = sop.operator
    cs = class_structure(base)
    out = StationaryResult(num_states=base.num_states)
    label = f"{method} (sharded, {sop.n_devices} devices)"
    for i, members in enumerate(cs.attractors):
        uniform = np.zeros(base.num_states)
        uniform[members] = 1.0 / members.size
        v0 = sop.vector(uniform)
        if method == "gmres" and members.size > 1:
            w, _, _ = sop.power(v0, 0.0, 200)  # short lazy run for a reference state of large mass
            j = int(members[np.argmax(sop.to_numpy(w)[members])])
            mask = sop.indicator(members[members != j])
            ej = sop.indicator([j])
            solve = sop._kernels.gmres(restart, gmres_maxiter, min(tol, 1e-13))
            x = sop.to_numpy(solve(sop.probs, mask, ej))
            pi0 = np.zeros(base.num_states)
            pi0[members] = np.maximum(x[members], 0.0)
            pi0[j] = 1.0
            v0 = sop.vector(pi0 / pi0.sum())
        w, res, it = sop.power(v0, tol, max_iter)
        if res > tol:
            raise ConvergenceError(
                f"sharded power iteration did not reach residual {tol:g} in {max_iter} steps (last residual "
                f"{res:.2e}); the chain mixes slowly: use method='gmres' or the single-device 'lu'/'gth'"
            )
        pi_full = sop.to_numpy(w)
        j = int(members[np.argmax(pi_full[members])])
        tau = sop.hitting_time_bound(members, j)
        resid = float(np.abs(sop.to_numpy(sop.push(sop.vector(pi_full))) - pi_full).sum())
        out._store(members, pi_full)
        out.residuals.append(resid)
        out.hitting_times.append(tau)
        resid_hi = resid * (1.0 + base.num_states * _EPS) + (base.n_tokens + 3) * _EPS  # as stationary_result
        bound = None if tau is None else 4.0 * max(tau, 1.0) * resid_hi + abs(float(pi_full.sum()) - 1.0)
        out.error_bounds.append(bound if bound is not None and bound < 1.0 else None)
        out.reference_states.append(j)
        out.methods.append(label)
    return out

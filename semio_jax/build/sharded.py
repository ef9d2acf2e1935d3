"""The operator build spread over the devices of a mesh (JAX's ``Mesh`` + ``shard_map``).

Each model call evaluates ``devices x batch_size`` contexts; every device
generates its own contexts from a slice of state indices (no host-to-device
traffic), runs the model on them and applies the sampling procedure in
float64. A model whose shared-prefix walk accepts ``mesh=`` walks D subtrees
at a time instead. The result is gathered to the host and returned as the
ordinary :class:`~semio_jax.core.operator.Operator`. See docs/sharding.md.
"""

from __future__ import annotations

import inspect
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from .._util.memory import check_fits
from .._util.mesh import device_mesh, mesh_axes, to_host
from .._util.progress import progress_bar
from ..core.model import check_model_fits, describe_model
from ..core.operator import Operator
from ..core.procedure import Procedure, parse
from ..core.space import StateSpace
from ..errors import LogitsShapeError
from .logits import DEFAULT_BATCH, check_logits, evaluate_logits, evaluate_prefix_tree

__all__ = ["evaluate_logits_sharded", "build_operator_sharded"]


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
    axes = mesh_axes(mesh)
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
                            mesh: Mesh | None = None, batch_size: int = DEFAULT_BATCH,
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
    check_model_fits(model, space)
    n, devices = space.n_tokens, int(mesh.devices.size)
    logits_out = probs_out = None
    bar = progress_bar(space.num_states, progress)
    for k, offset in space.iter_groups():
        size = n**k
        per_device = max(1, min(int(batch_size), -(-size // devices)))
        chunk = per_device * devices
        fn = _group_evaluator(model, procedure, mesh, n, k, per_device)
        for start in range(0, size, chunk):
            lg, pr = fn(jnp.int64(start))
            real = min(chunk, size - start)
            lg, pr = to_host(lg)[:real], to_host(pr)[:real]
            check_logits(lg, None, n, k, lambda s=start, r=real: space.contexts(k, s, s + r))
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
                           mesh: Mesh | None = None, batch_size: int = DEFAULT_BATCH,
                           memory_limit: int | None = None, keep_logits: bool = True,
                           progress: bool = False, method: str = "auto") -> Operator:
    """:func:`~semio_jax.build.build_operator` with the model calls spread over ``mesh``.

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
    check_fits(space, memory_limit, keep_logits)
    if not getattr(model, "jittable", True):
        logits = evaluate_logits(model, space, batch_size=batch_size, progress=progress, method="plain")
        return Operator.from_logits(space, procedure, logits, keep_logits=keep_logits,
                                    model_info=describe_model(model))
    if method not in ("auto", "plain", "prefix"):
        raise ValueError(f"unknown evaluation method {method!r}; use auto, plain or prefix")
    walk = getattr(model, "prefix_tree_logits", None)
    walks_on_mesh = callable(walk) and "mesh" in inspect.signature(walk).parameters
    if method == "prefix" and not walks_on_mesh:
        raise ValueError(f"{type(model).__name__} has no prefix_tree_logits(..., mesh=); use method='plain'")
    if method != "plain" and walks_on_mesh:
        mesh = mesh if mesh is not None else device_mesh()
        logits = evaluate_prefix_tree(model, space, batch_size, progress, mesh=mesh)
    else:
        logits, _ = evaluate_logits_sharded(model, space, procedure, mesh=mesh, batch_size=batch_size,
                                            progress=progress)
    # the procedure on the host: the exact support decisions and log-probabilities (as build_operator)
    return Operator.from_logits(space, procedure, logits, keep_logits=keep_logits, model_info=describe_model(model))

"""The shared-prefix forward pass: the logits of every context of length 1..L in one walk of the prefix tree.

With causal attention and absolute positions, the activations at position t
depend only on tokens x_0..x_t, so every context shares the work of its
prefixes. The walk stores, per tree node, only the keys/values of its OWN
last position ([layers, H, dh] per node) and never copies a cache:

  * a *block* is P = N^e consecutive nodes of one level k (big-endian order,
    aligned on multiples of P). The ancestor j levels above the block's nodes
    (j = 0: the nodes themselves) is node i // N^j of level k - j, so the
    block's distinct ancestors at that level are P / N^j consecutive nodes:
    ``dk[j]`` [P / N^j, layers, H, dh]. Ancestors more than e - 1 levels up
    are common to the whole block: ``shared_k`` [L, layers, H, dh], the first
    ``n_shared`` rows valid.
  * ``tree_step`` computes position k for the N children of every node of a
    block (C = P N contexts of length k + 1). Child c attends to row
    c // N^(j+1) of ``dk[j]``: a reshape-and-broadcast, not a gather.
  * ``descend`` turns the block and its children's keys/values into the r-th
    block of the next level: every ancestor array moves one level up and the
    top one (a single node for that block) joins the shared rows.
  * ``prefill_kv`` starts the walk: one ordinary forward pass over the N^e
    contexts of length e gives the logits of levels 1..e (at every position)
    and the keys/values of every position.

Shapes are fixed by (config, e), so one compilation of each function serves
every level; a context of length k costs one position of the network instead
of k. The logits equal the full forward pass up to float32 round-off.
The walk itself (``walk``) goes depth-first, one block at a time; with a mesh of
D devices (``walk_on_mesh``) it walks D subtrees at a time in lock step.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from .config import TransformerConfig
from .functional import block_tail, dense, final_logits, layer_norm
from .network import F32, Transformer

__all__ = ["tree_step", "descend", "prefill_kv", "walk", "walk_on_mesh"]


def tree_step(config: TransformerConfig, params: Any, shared_k: jax.Array, shared_v: jax.Array,
              n_shared: jax.Array, dk: tuple, dv: tuple, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Logits and own keys/values of the N children of each node of a block, at position t.

    Args:
      shared_k, shared_v: float32[L, layers, H, dh], keys/values of the ancestors
        common to the whole block (rows < n_shared valid, in any order).
      n_shared: int scalar, number of valid shared rows.
      dk, dv: e-tuples; dk[j] float32[P / N^j, layers, H, dh] holds the
        ancestors j levels above the children's parents (dk[0]: the P parents).
      t: int scalar, the children's position (the parents' length).

    Returns:
      logits float32[P N, N_tokens] (child c = parent c // N extended by token
      c % N) and k, v float32[P N, layers, H, dh], the children's own keys/values.
    """
    cfg = config
    N, d, H, dh, L = cfg.n_tokens, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.context_length
    P = dk[0].shape[0]
    C = P * N
    eps = cfg.layer_norm_eps
    scale = F32(1.0 / math.sqrt(dh))
    h = params["tok_embed"][None, :, :] + params["pos_embed"][t][None, None, :]  # [1, N, d]
    h = jnp.broadcast_to(h, (P, N, d)).reshape(C, d)  # [C, d]
    shared_ok = jnp.arange(L) < n_shared  # [L]
    new_k, new_v = [], []
    for i in range(cfg.n_layers):
        blk = params[f"block_{i}"]
        qkv = dense(layer_norm(h, blk["ln_1"], eps), blk["attn"]["qkv"])  # [C, 3d]
        q, kk, v = (a.reshape(C, H, dh) for a in jnp.split(qkv, 3, axis=-1))  # 3 x [C, H, dh]
        s_shared = jnp.einsum("chd,lhd->chl", q, shared_k[:, i]) * scale  # [C, H, L]
        s_shared = jnp.where(shared_ok[None, None, :], s_shared, F32(-1e30))  # [C, H, L]
        s_anc = [(q.reshape(a.shape[0], -1, H, dh) * a[:, None, i]).sum(-1).reshape(C, H) * scale
                 for a in dk]  # e x [C, H]; children c share row c // (C / A) of an A-row ancestor array
        s_own = (q * kk).sum(-1) * scale  # [C, H]
        w = jax.nn.softmax(jnp.concatenate([s_shared, jnp.stack(s_anc + [s_own], axis=-1)], axis=-1),
                           axis=-1)  # [C, H, L + e + 1]
        y = jnp.einsum("chl,lhd->chd", w[..., :L], shared_v[:, i])  # [C, H, dh]
        for j, a in enumerate(dv):
            wj = w[..., L + j].reshape(a.shape[0], -1, H, 1)  # [A, C / A, H, 1]
            y = y + (wj * a[:, None, i]).reshape(C, H, dh)  # [C, H, dh]
        y = y + w[..., -1:] * v  # [C, H, dh]
        h = block_tail(cfg, h, y.reshape(C, d), blk)  # [C, d]
        new_k.append(kk)
        new_v.append(v)
    logits = final_logits(cfg, params, h)  # [C, N_tokens]
    return logits, jnp.stack(new_k, axis=1), jnp.stack(new_v, axis=1)  # [C, N], 2 x [C, layers, H, dh]


def descend(n_tokens: int, shared_k: jax.Array, shared_v: jax.Array, n_shared: jax.Array, dk: tuple, dv: tuple,
            ck: jax.Array, cv: jax.Array, r: jax.Array) -> tuple:
    """The r-th block (of N) of a block's children, as ``tree_step``'s inputs (see the section comment).

    ck, cv: float32[P N, layers, H, dh], the children's own keys/values.
    Returns (shared_k, shared_v, n_shared, dk, dv) of the children r P .. (r + 1) P - 1.
    """
    P = dk[0].shape[0]

    def move(shared, d, c):
        top = jax.lax.dynamic_index_in_dim(d[-1], r, axis=0, keepdims=False)  # [layers, H, dh]: one node now
        shared = jax.lax.dynamic_update_index_in_dim(shared, top, n_shared, axis=0)  # [L, layers, H, dh]
        new = [jax.lax.dynamic_slice_in_dim(c, r * P, P, axis=0)]  # the new block itself
        for j in range(1, len(d)):
            size = d[j - 1].shape[0] // n_tokens
            new.append(jax.lax.dynamic_slice_in_dim(d[j - 1], r * size, size, axis=0))
        return shared, tuple(new)

    sk, nk = move(shared_k, dk, ck)
    sv, nv = move(shared_v, dv, cv)
    return sk, sv, n_shared + 1, nk, nv


def prefill_kv(module: Transformer, params: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One forward pass of ``module`` over contexts int[B, e], keeping its keys and values.

    Returns logits float32[B, e, N_tokens] (every position, exactly as
    ``module.apply``) and k, v float32[B, e, layers, H, dh], read from each
    block's ``qkv`` projection.
    """
    cfg = module.config
    B, e = tokens.shape
    logits, state = module.apply({"params": params}, tokens,
                                 capture_intermediates=lambda mdl, _: mdl.name == "qkv")
    ks, vs = [], []
    for i in range(cfg.n_layers):
        qkv = state["intermediates"][f"block_{i}"]["attn"]["qkv"]["__call__"][0]  # [B, e, 3d]
        _, kk, v = jnp.split(qkv, 3, axis=-1)  # 2 x [B, e, d]
        ks.append(kk.reshape(B, e, cfg.n_heads, cfg.d_head))
        vs.append(v.reshape(B, e, cfg.n_heads, cfg.d_head))
    return logits, jnp.stack(ks, axis=2), jnp.stack(vs, axis=2)  # [B, e, N], 2 x [B, e, layers, H, dh]


def walk(config: TransformerConfig, params: Any, fns: tuple[Callable, Callable, Callable], length: int,
         emit: Callable, chunk: int = 4096, *, skip: Callable | None = None, done: Callable | None = None,
         mesh: Any = None, mesh_fns: Callable[[], tuple[Callable, Callable]] | None = None) -> None:
    """Logits of every context of length 1..``length`` by a walk of the prefix tree.

    ``fns`` = (prefill, step, down): ``prefill_kv``, ``tree_step`` and ``descend``
    with their static first argument bound (jitted by the caller, once per model).
    Calls ``emit(k, start, logits)`` with float32 logits [n, N] of the contexts
    of length k whose big-endian group-local indices are start..start+n-1. The
    walk starts with one forward pass over the N^e contexts of length e, the
    largest e <= ``length`` with N^(e+1) <= max(``chunk``, N^2) (levels 1..e
    are emitted from it), then goes depth-first in blocks of N^e nodes, each
    step emitting the N^(e+1) children of one block. Memory stays bounded: per
    level, one block's own keys/values. Each context of length > e costs one
    position of the network instead of its length.

    Resuming (optional): a *subtree* ``(k, start)`` (k > e) is the block of
    level k emitted from the parents with level-(k-1) indices start..
    together with everything below it. ``done(k, start)`` is called once
    all its blocks have been emitted; the walk skips a subtree when
    ``skip(k, start)`` is true. The forward pass over levels 1..e is always
    recomputed. Every block is computed exactly as in an uninterrupted walk
    (same shapes, same inputs), so a resumed walk gives bitwise the same logits.

    Several devices (optional): with ``mesh`` (a ``jax.sharding.Mesh`` of D > 1
    devices) the walk goes on in ``walk_on_mesh``, with the vmapped functions
    that ``mesh_fns()`` returns; the resume hooks are not supported there.
    """
    cfg = config
    if not 1 <= length <= cfg.context_length:
        raise ValueError(f"length must be in 1..L={cfg.context_length}, got {length}")
    N = cfg.n_tokens
    e = 1
    while e < length and N ** (e + 2) <= chunk:
        e += 1
    P = N ** e  # nodes per block
    prefill, step, down = fns
    tokens = np.stack(np.unravel_index(np.arange(P), (N,) * e), axis=1).astype(np.int32)  # [P, e]
    logits, keys, values = prefill(params, jnp.asarray(tokens))  # [P, e, N], 2 x [P, e, layers, H, dh]
    logits = np.asarray(logits)  # [P, e, N]
    for k in range(1, e + 1):  # level k, node i: the prefix of context i N^(e-k)
        emit(k, 0, logits[:: N ** (e - k), k - 1])
    if e == length:
        return
    # the block of all level-e nodes; the ancestor j levels up of node i is node i // N^j of level e - j
    dk = tuple(keys[:: N**j, e - 1 - j] for j in range(e))  # [P / N^j, layers, H, dh]
    dv = tuple(values[:: N**j, e - 1 - j] for j in range(e))
    none = jnp.zeros((cfg.context_length, cfg.n_layers, cfg.n_heads, cfg.d_head), dtype=F32)  # [L, layers, H, dh]
    if mesh is not None and int(mesh.devices.size) > 1:
        if skip is not None or done is not None:
            raise ValueError("the resume hooks (skip/done) are not supported by the walk over a mesh")
        walk_on_mesh(cfg, params, (step, down), mesh_fns(), length, emit, mesh, e,
                     (none, none, jnp.int32(0), dk, dv))
        return

    def visit(k: int, block: tuple, start: int) -> None:
        # block: tree_step's inputs for the level-k nodes start..start+P-1; emits their children
        if skip is not None and skip(k + 1, start):
            return
        out, ck, cv = step(params, *block, jnp.int32(k))
        emit(k + 1, start * N, np.asarray(out))
        if k + 1 < length:
            for r in range(N):
                visit(k + 1, down(*block, ck, cv, jnp.int32(r)), start * N + r * P)
        if done is not None:
            done(k + 1, start)

    visit(e, (none, none, jnp.int32(0), dk, dv), 0)


def walk_on_mesh(config: TransformerConfig, params: Any, fns: tuple[Callable, Callable],
                 fns_d: tuple[Callable, Callable], length: int, emit: Callable, mesh: Any, e: int,
                 root: tuple) -> None:
    """The depth-first walk below level e, D subtrees at a time over the D devices of ``mesh``.

    The walk descends on one device until it has at least D subtrees, then
    walks D of them at a time in lock step: their blocks are stacked on a
    leading axis split over the mesh and ``fns_d`` (``tree_step`` and
    ``descend`` vmapped over that axis) run each device on its own subtree,
    with no communication. ``fns`` are the single-device step and descend,
    ``root`` the level-e block. Blocks are emitted in another order than
    ``walk``'s; every context is emitted once.
    """
    N, P, D = config.n_tokens, config.n_tokens ** e, int(mesh.devices.size)
    step, down = fns
    # 1. single-device descent until there are >= D subtrees (blocks still to visit), or no deeper level
    frontier = [(e, root, 0)]  # (level k of the block's nodes, tree_step inputs, group-local start)
    while len(frontier) < D and frontier[0][0] + 1 < length:
        deeper = []
        for k, block, start in frontier:
            out, ck, cv = step(params, *block, jnp.int32(k))
            emit(k + 1, start * N, np.asarray(out))
            deeper += [(k + 1, down(*block, ck, cv, jnp.int32(r)), start * N + r * P) for r in range(N)]
        frontier = deeper
    # 2. D subtrees at a time, stacked on a leading axis split over the mesh
    spread = NamedSharding(mesh, PartitionSpec(mesh.axis_names))
    params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    step_d, down_d = fns_d

    def visit(k: int, blocks: tuple, starts: list) -> None:
        out, ck, cv = step_d(params, *blocks, jnp.int32(k))  # out [D, P N, N]
        out = np.asarray(out)
        for i, start in enumerate(starts):
            if start is not None:  # None: padding (a copy of a real subtree, not emitted twice)
                emit(k + 1, start * N, out[i])
        if k + 1 < length:
            for r in range(N):
                visit(k + 1, down_d(*blocks, ck, cv, jnp.int32(r)),
                      [None if s is None else s * N + r * P for s in starts])

    level = frontier[0][0]
    for lo in range(0, len(frontier), D):
        group = frontier[lo: lo + D]
        starts = [start for _, _, start in group] + [None] * (D - len(group))
        group = group + [group[-1]] * (D - len(group))
        blocks = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[block for _, block, _ in group])
        visit(level, jax.device_put(blocks, spread), starts)

"""A tiny causal transformer language model over the alphabet T = {0, ..., N-1}.

The whole model lives in this file, in Flax linen.

Conventions
-----------
* A *context* is a sequence of k tokens x_0 .. x_{k-1} (oldest first) with
  1 <= k <= L, where L = ``context_length``. Token x_i sits at absolute
  position i: position embeddings are learned, one per position 0 .. L-1, and
  a context shorter than L always starts at position 0.
* ``Transformer`` maps int tokens [B, k] to logits [B, k, N]: the logits at
  position i are the model's next-token scores after reading x_0 .. x_i, and
  depend on no later token (causal attention).
* ``TransformerModel`` is the engine-facing wrapper. It is a plain callable
  ``contexts int[B, k] -> float32 logits [B, N]`` that returns the logits at
  the LAST position, i.e. the scores of the token that follows the context.
* Everything is float32 (parameters, activations, logits), also when
  ``jax_enable_x64`` is on: each layer is given ``dtype=param_dtype=float32``
  and the embeddings are cast explicitly.
* Token ids outside {0 .. N-1} are caught with ``UnknownTokenError`` when the
  contexts are host data (lists / numpy arrays). Inside ``jax.jit`` nothing
  can be checked on values, so an out-of-range id there makes the logits of
  its position and of every later position NaN (earlier positions are
  unaffected), which the engine reports as non-finite logits.

Architecture (pre-LayerNorm, as in GPT-2)
-----------------------------------------
    h_0     = E_tok[x] + E_pos[0:k]                      # [B, k, d]
    for each block:
        h  <- h + Attn(LN_1(h))                          # causal multi-head
        h  <- h + W_2 gelu(W_1 LN_2(h) + b_1) + b_2       # MLP, width d_ff
    logits  = W_u LN_f(h) + b_u                          # [B, k, N]

with Attn(z) = concat_heads(softmax(q k^T / sqrt(d_head) + M) v) W_o, where
q, k, v are linear maps of z split into ``n_heads`` heads of width
d_head = d_model / n_heads, and M[i, j] = 0 for j <= i and -inf otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from semio_jax.errors import UnknownTokenError

__all__ = ["TransformerConfig", "Transformer", "TransformerModel"]

F32 = jnp.float32


# -----------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TransformerConfig:
    n_tokens: int  # N, alphabet size: tokens are 0 .. N-1
    context_length: int  # L, longest context the model reads (= number of positions)
    n_layers: int = 2  # number of transformer blocks
    d_model: int = 32  # width of the residual stream
    n_heads: int = 2  # attention heads per block; must divide d_model
    d_ff: int = 0  # hidden width of the MLP; 0 means 4 * d_model
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm

    def __post_init__(self) -> None:
        for name in ("n_tokens", "context_length", "n_layers", "d_model", "n_heads", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"TransformerConfig.{name} must be an int, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.n_tokens < 2:
            raise ValueError(f"TransformerConfig.n_tokens must be >= 2, got {self.n_tokens}")
        for name in ("context_length", "n_layers", "d_model", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"TransformerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_ff < 0:
            raise ValueError(f"TransformerConfig.d_ff must be >= 1 (or 0 for 4*d_model), got {self.d_ff}")
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"TransformerConfig.n_heads={self.n_heads} must divide d_model={self.d_model}"
            )
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
            raise ValueError(f"TransformerConfig.layer_norm_eps must be a float in (0, 1), got {eps!r}")
        object.__setattr__(self, "layer_norm_eps", float(eps))

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; ``from_dict`` reverses it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        """Build a config from a dict, rejecting unknown or missing keys."""
        if not isinstance(d, dict):
            raise ValueError(f"a TransformerConfig dict is expected, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown TransformerConfig key(s) {unknown}; known keys are {sorted(known)}"
            )
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"TransformerConfig dict lacks required key(s) {missing}")
        return cls(**d)


# -----------------------------------------------------------------------------
# The network


class CausalSelfAttention(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        B, k, d = z.shape
        H, dh = cfg.n_heads, cfg.d_head
        qkv = nn.Dense(3 * d, dtype=F32, param_dtype=F32, name="qkv")(z)  # [B, k, 3d]
        q, kk, v = jnp.split(qkv, 3, axis=-1)  # 3 x [B, k, d]
        q = q.reshape(B, k, H, dh).transpose(0, 2, 1, 3)  # [B, H, k, dh]
        kk = kk.reshape(B, k, H, dh).transpose(0, 2, 1, 3)  # [B, H, k, dh]
        v = v.reshape(B, k, H, dh).transpose(0, 2, 1, 3)  # [B, H, k, dh]
        scores = (q @ kk.transpose(0, 1, 3, 2)) * F32(1.0 / math.sqrt(dh))  # [B, H, k, k]
        causal = jnp.tril(jnp.ones((k, k), dtype=bool))  # [k, k], True where j <= i
        scores = jnp.where(causal, scores, F32(-1e30))  # [B, H, k, k]
        att = jax.nn.softmax(scores, axis=-1)  # [B, H, k, k]
        y = att @ v  # [B, H, k, dh]
        y = y.transpose(0, 2, 1, 3).reshape(B, k, d)  # [B, k, d]
        return nn.Dense(d, dtype=F32, param_dtype=F32, name="out")(y)  # [B, k, d]


class MLP(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        u = nn.Dense(cfg.d_ff, dtype=F32, param_dtype=F32, name="fc")(z)  # [B, k, d_ff]
        u = jax.nn.gelu(u, approximate=True)  # [B, k, d_ff]
        return nn.Dense(cfg.d_model, dtype=F32, param_dtype=F32, name="proj")(u)  # [B, k, d]


class Block(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        eps = self.config.layer_norm_eps
        ln1 = nn.LayerNorm(epsilon=eps, dtype=F32, param_dtype=F32, name="ln_1")
        ln2 = nn.LayerNorm(epsilon=eps, dtype=F32, param_dtype=F32, name="ln_2")
        h = h + CausalSelfAttention(self.config, name="attn")(ln1(h))  # [B, k, d]
        h = h + MLP(self.config, name="mlp")(ln2(h))  # [B, k, d]
        return h


class Transformer(nn.Module):
    """tokens int[B, k] (1 <= k <= L) -> float32 logits [B, k, N] at every position."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        cfg = self.config
        B, k = tokens.shape
        init = nn.initializers.normal(stddev=0.02)
        wte = self.param("tok_embed", init, (cfg.n_tokens, cfg.d_model), F32)  # [N, d]
        wpe = self.param("pos_embed", init, (cfg.context_length, cfg.d_model), F32)  # [L, d]
        # An out-of-range id (negative ones included) must never alias a valid
        # one: it is embedded as token 0 and the logits at its position and at
        # every later position are replaced by NaN (earlier ones stay exact).
        bad = (tokens < 0) | (tokens >= cfg.n_tokens)  # [B, k]
        tainted = jnp.cumsum(bad.astype(jnp.int32), axis=1) > 0  # [B, k]
        ids = jnp.where(bad, 0, tokens)  # [B, k]
        tok = jnp.take(wte, ids, axis=0)  # [B, k, d]
        h = tok.astype(F32) + wpe[:k].astype(F32)[None]  # [B, k, d]
        for i in range(cfg.n_layers):
            h = Block(cfg, name=f"block_{i}")(h)  # [B, k, d]
        h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=F32, param_dtype=F32, name="ln_f")(h)
        logits = nn.Dense(cfg.n_tokens, dtype=F32, param_dtype=F32, name="unembed")(h)  # [B, k, N]
        return jnp.where(tainted[..., None], F32(jnp.nan), logits.astype(F32))  # [B, k, N]


# -----------------------------------------------------------------------------
# Incremental evaluation over the prefix tree (shared-prefix operator build)
#
# With causal attention and absolute positions, the activations at position t
# depend only on tokens x_0..x_t, so every context shares the work of its
# prefixes. The walk stores, per tree node, only the keys/values of its OWN
# last position ([layers, H, dh] per node) and never copies a cache:
#
#   * a *block* is P = N^e consecutive nodes of one level k (big-endian order,
#     aligned on multiples of P). The ancestor j levels above the block's nodes
#     (j = 0: the nodes themselves) is node i // N^j of level k - j, so the
#     block's distinct ancestors at that level are P / N^j consecutive nodes:
#     ``dk[j]`` [P / N^j, layers, H, dh]. Ancestors more than e - 1 levels up
#     are common to the whole block: ``shared_k`` [L, layers, H, dh], the first
#     ``n_shared`` rows valid.
#   * ``tree_step`` computes position k for the N children of every node of a
#     block (C = P N contexts of length k + 1). Child c attends to row
#     c // N^(j+1) of ``dk[j]``: a reshape-and-broadcast, not a gather.
#   * ``descend`` turns the block and its children's keys/values into the r-th
#     block of the next level: every ancestor array moves one level up and the
#     top one (a single node for that block) joins the shared rows.
#   * ``prefill_kv`` starts the walk: one ordinary forward pass over the N^e
#     contexts of length e gives the logits of levels 1..e (at every position)
#     and the keys/values of every position.
#
# Shapes are fixed by (config, e), so one compilation of each function serves
# every level; a context of length k costs one position of the network instead
# of k. The logits equal the full forward pass up to float32 round-off.


def _layer_norm(x: jax.Array, p: dict, eps: float) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.maximum(jnp.mean(x * x, axis=-1, keepdims=True) - mean * mean, 0.0)  # as flax's fast variance
    return (x - mean) * jax.lax.rsqrt(var + F32(eps)) * p["scale"] + p["bias"]


def _dense(x: jax.Array, p: dict) -> jax.Array:
    return x @ p["kernel"] + p["bias"]


def _attention_out_and_mlp(h: jax.Array, y: jax.Array, blk: dict, eps: float) -> jax.Array:
    """The rest of a block after attention: h + out(y), then h + mlp(ln_2(h)). Shapes [..., d]."""
    h = h + _dense(y, blk["attn"]["out"])
    u = jax.nn.gelu(_dense(_layer_norm(h, blk["ln_2"], eps), blk["mlp"]["fc"]), approximate=True)
    return h + _dense(u, blk["mlp"]["proj"])


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
        qkv = _dense(_layer_norm(h, blk["ln_1"], eps), blk["attn"]["qkv"])  # [C, 3d]
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
        h = _attention_out_and_mlp(h, y.reshape(C, d), blk, eps)  # [C, d]
        new_k.append(kk)
        new_v.append(v)
    logits = _dense(_layer_norm(h, params["ln_f"], eps), params["unembed"])  # [C, N_tokens]
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


def prefill_kv(module: "Transformer", params: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
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


# -----------------------------------------------------------------------------
# One-position steps with a key/value cache (Monte Carlo sampling)
#
# A sampled chain grows one token at a time. While its context is shorter than
# L, the new token sits at the next absolute position and every earlier
# position keeps its keys/values, so one step costs one position of the
# network. Unlike ``tree_step`` (all N children of every node of a block),
# ``decode_step`` extends each sequence by ONE given token, and its cache is an
# ordinary per-sequence [layers, H, L, dh] array. Once a window is full and
# slides, every token moves to a new position and, with absolute position
# embeddings, its cached keys/values are stale: such a step needs the whole
# window again (``prefill_cache`` of its first L-1 tokens + ``decode_step``).


def decode_step(config: TransformerConfig, params: Any, k_cache: jax.Array, v_cache: jax.Array,
                tokens: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Logits after x_0..x_t of B sequences, given the keys/values of positions < t and the token x_t.

    Args:
      k_cache, v_cache: float32[B, layers, H, L, dh], the sequences' keys/values
        (positions < t used, the rest ignored).
      tokens: int[B], x_t, the token at position t of each sequence.
      t: int scalar or int[B], the position of ``tokens`` (0 <= t < L).

    Returns:
      logits float32[B, N_tokens] (the scores of the token after x_0..x_t) and
      k_cache, v_cache float32[B, layers, H, L, dh] with position t written.

    Equals ``Transformer`` at the last position of x_0..x_t up to float32
    round-off. An out-of-range token gives NaN logits at its position and, via
    its keys/values, at every later one (as in ``Transformer``).
    """
    cfg = config
    N, d, H, dh, L = cfg.n_tokens, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.context_length
    B = tokens.shape[0]
    eps = cfg.layer_norm_eps
    t = jnp.broadcast_to(jnp.asarray(t, dtype=jnp.int32), (B,))  # [B]
    bad = (tokens < 0) | (tokens >= N)  # [B]
    ids = jnp.where(bad, 0, tokens)  # [B]
    h = jnp.take(params["tok_embed"], ids, axis=0) + jnp.take(params["pos_embed"], t, axis=0)  # [B, d]
    h = jnp.where(bad[:, None], F32(jnp.nan), h.astype(F32))  # [B, d]
    pos = jnp.arange(L)  # [L]
    at_t = (pos[None, :] == t[:, None])[:, None, :, None]  # [B, 1, L, 1]
    valid = (pos[None, :] <= t[:, None])[:, None, :]  # [B, 1, L]
    scale = F32(1.0 / math.sqrt(dh))
    new_k, new_v = [], []
    for i in range(cfg.n_layers):
        blk = params[f"block_{i}"]
        z = _layer_norm(h, blk["ln_1"], eps)  # [B, d]
        qkv = _dense(z, blk["attn"]["qkv"])  # [B, 3d]
        q, kk, v = jnp.split(qkv, 3, axis=-1)  # 3 x [B, d]
        q, kk, v = (a.reshape(B, H, dh) for a in (q, kk, v))  # [B, H, dh]
        kc = jnp.where(at_t, kk[:, :, None, :], k_cache[:, i])  # [B, H, L, dh]
        vc = jnp.where(at_t, v[:, :, None, :], v_cache[:, i])  # [B, H, L, dh]
        s = jnp.einsum("bhd,bhld->bhl", q, kc) * scale  # [B, H, L]
        w = jax.nn.softmax(jnp.where(valid, s, F32(-1e30)), axis=-1)  # [B, H, L]
        y = jnp.einsum("bhl,bhld->bhd", w, jnp.where(valid[..., None], vc, F32(0)))  # [B, H, dh]
        h = _attention_out_and_mlp(h, y.reshape(B, d), blk, eps)  # [B, d]
        new_k.append(kc)
        new_v.append(vc)
    logits = _dense(_layer_norm(h, params["ln_f"], eps), params["unembed"])  # [B, N_tokens]
    return logits.astype(F32), jnp.stack(new_k, axis=1), jnp.stack(new_v, axis=1)


def prefill_cache(config: TransformerConfig, params: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The keys/values of positions 0..k-1 of B contexts tokens int[B, k] (1 <= k <= L), all at once.

    Returns k_cache, v_cache float32[B, layers, H, L, dh] (positions >= k zero),
    ready for ``decode_step`` at t = k. Only what the cache needs is computed:
    the last block stops after its keys/values (no attention output, MLP or
    unembedding), so ``prefill_cache(x[:, :-1])`` followed by ``decode_step`` of
    x[:, -1] gives the next-token logits of the context x at about the cost of
    the whole window minus the last block's per-position tail. Tokens must be
    in range (no NaN tainting here; the sampler's tokens always are).
    """
    cfg = config
    d, H, dh, L = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.context_length
    B, k = tokens.shape
    eps = cfg.layer_norm_eps
    h = jnp.take(params["tok_embed"], tokens, axis=0) + params["pos_embed"][:k][None]  # [B, k, d]
    h = h.astype(F32)
    causal = jnp.tril(jnp.ones((k, k), dtype=bool))  # [k, k], True where j <= i
    scale = F32(1.0 / math.sqrt(dh))
    ks, vs = [], []
    for i in range(cfg.n_layers):
        blk = params[f"block_{i}"]
        z = _layer_norm(h, blk["ln_1"], eps)  # [B, k, d]
        w, b = blk["attn"]["qkv"]["kernel"], blk["attn"]["qkv"]["bias"]  # [d, 3d], [3d]
        kv = z @ w[:, d:] + b[d:]  # [B, k, 2d]
        kk, v = (a.reshape(B, k, H, dh).transpose(0, 2, 1, 3) for a in jnp.split(kv, 2, axis=-1))  # [B, H, k, dh]
        ks.append(kk)
        vs.append(v)
        if i == cfg.n_layers - 1:
            break  # the last block's keys/values are all the cache needs
        q = (z @ w[:, :d] + b[:d]).reshape(B, k, H, dh).transpose(0, 2, 1, 3)  # [B, H, k, dh]
        s = jnp.where(causal, (q @ kk.transpose(0, 1, 3, 2)) * scale, F32(-1e30))  # [B, H, k, k]
        y = (jax.nn.softmax(s, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(B, k, d)  # [B, k, d]
        h = _attention_out_and_mlp(h, y, blk, eps)  # [B, k, d]
    pad = ((0, 0), (0, 0), (0, 0), (0, L - k), (0, 0))
    return jnp.pad(jnp.stack(ks, axis=1), pad), jnp.pad(jnp.stack(vs, axis=1), pad)  # [B, layers, H, L, dh]


# -----------------------------------------------------------------------------
# Engine-facing wrapper


def _as_float32_tree(params: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=F32), params)


class TransformerModel:
    """A trained (or random) transformer as the engine's model: contexts [B, k] -> logits [B, N].

    ``model(contexts)`` returns float32 logits of the token that follows each
    context (the last position); ``model.logits_all(contexts)`` returns the
    logits at every position, [B, k, N]. Both accept host arrays or jax
    arrays, also traced ones inside ``jax.jit`` / ``lax.scan``; only static
    properties (rank, length, dtype) are checked there.
    """

    def __init__(self, config: TransformerConfig, params: Any, *, card: dict | None = None):
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        self.params = _as_float32_tree(params)
        self.card = card  # the model card when loaded from a checkpoint, else None
        self.module = Transformer(config)
        module = self.module

        def forward(params, tokens):
            return module.apply({"params": params}, tokens)

        self._forward = jax.jit(forward)  # one compiled function per instance (and shape)

    # -- engine interface -----------------------------------------------------

    @property
    def n_tokens(self) -> int:
        return self.config.n_tokens

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def __call__(self, contexts: Any) -> jax.Array:
        """int[B, k] -> float32 logits [B, N] of the next token after each context."""
        return self.logits_all(contexts)[:, -1, :]  # [B, N]

    def logits_all(self, contexts: Any) -> jax.Array:
        """int[B, k] -> float32 logits [B, k, N]; row i scores the token after x_0..x_i."""
        tokens = self._check_contexts(contexts)
        return self._forward(self.params, tokens)

    def _check_contexts(self, contexts: Any) -> Any:
        host = not isinstance(contexts, jax.Array)
        if host:
            contexts = np.asarray(contexts)
        shape, dtype = contexts.shape, contexts.dtype
        if len(shape) != 2:
            raise ValueError(f"contexts must have shape [B, k], got shape {tuple(shape)}")
        if not (jnp.issubdtype(dtype, jnp.integer) and dtype != jnp.bool_):
            raise ValueError(f"contexts must be an integer array, got dtype {dtype}")
        k, L = shape[1], self.config.context_length
        if not 1 <= k <= L:
            raise ValueError(
                f"context length k={k} is outside 1..L={L} (contexts of shape {tuple(shape)})"
            )
        if host:
            if contexts.size and (contexts.min() < 0 or contexts.max() >= self.n_tokens):
                bad = contexts[(contexts < 0) | (contexts >= self.n_tokens)].ravel()[0]
                raise UnknownTokenError(
                    f"token id {int(bad)} is outside the alphabet 0..{self.n_tokens - 1}"
                )
            contexts = contexts.astype(np.int32)
        return contexts

    def prefix_tree_logits(self, length: int, emit, chunk: int = 4096, *, skip=None, done=None,
                           mesh=None) -> None:
        """Logits of every context of length 1..``length`` by a walk of the prefix tree.

        Calls ``emit(k, start, logits)`` with float32 logits [n, N] of the
        contexts of length k whose big-endian group-local indices are
        start..start+n-1. The walk (see the section comment above
        ``tree_step``) starts with one forward pass over the N^e contexts of
        length e, the largest e <= ``length`` with N^(e+1) <= max(``chunk``, N^2)
        (levels 1..e are emitted from it), then goes depth-first in blocks of
        N^e nodes, each step emitting the N^(e+1) children of one block. Memory
        stays bounded: per level, one block's own keys/values. Each context of
        length > e costs one position of the network instead of its length.

        Resuming (optional): a *subtree* ``(k, start)`` (k > e) is the block of
        level k emitted from the parents with level-(k-1) indices start..
        together with everything below it. ``done(k, start)`` is called once
        all its blocks have been emitted; the walk skips a subtree when
        ``skip(k, start)`` is true. The forward pass over levels 1..e is always
        recomputed. Every block is computed exactly as in an uninterrupted walk
        (same shapes, same inputs), so a resumed walk gives bitwise the same logits.

        Several devices (optional): with ``mesh`` (a ``jax.sharding.Mesh`` of D > 1
        devices) the walk descends until it has at least D subtrees, then walks D
        of them at a time in lock step: their blocks are stacked on a leading axis
        split over the mesh and ``tree_step``/``descend`` run vmapped, each device
        on its own subtree, with no communication. Blocks are emitted in another
        order than the single-device walk; the resume hooks are not supported here.
        """
        cfg = self.config
        if not 1 <= length <= cfg.context_length:
            raise ValueError(f"length must be in 1..L={cfg.context_length}, got {length}")
        N = cfg.n_tokens
        e = 1
        while e < length and N ** (e + 2) <= chunk:
            e += 1
        P = N ** e  # nodes per block
        tokens = np.stack(np.unravel_index(np.arange(P), (N,) * e), axis=1).astype(np.int32)  # [P, e]
        logits, keys, values = self._prefill(self.params, jnp.asarray(tokens))  # [P, e, N], 2 x [P, e, ...]
        logits = np.asarray(logits)
        for k in range(1, e + 1):  # level k, node i: the prefix of context i N^(e-k)
            emit(k, 0, logits[:: N ** (e - k), k - 1])
        if e == length:
            return
        # the block of all level-e nodes; the ancestor j levels up of node i is node i // N^j of level e - j
        dk = tuple(keys[:: N**j, e - 1 - j] for j in range(e))  # [P / N^j, layers, H, dh]
        dv = tuple(values[:: N**j, e - 1 - j] for j in range(e))
        none = jnp.zeros((cfg.context_length, cfg.n_layers, cfg.n_heads, cfg.d_head), dtype=F32)
        step, down = self._tree_step, self._descend
        if mesh is not None and int(mesh.devices.size) > 1:
            if skip is not None or done is not None:
                raise ValueError("the resume hooks (skip/done) are not supported by the walk over a mesh")
            self._walk_on_mesh(length, emit, mesh, e, (none, none, jnp.int32(0), dk, dv))
            return

        def visit(k: int, block: tuple, start: int) -> None:
            # block: tree_step's inputs for the level-k nodes start..start+P-1; emits their children
            if skip is not None and skip(k + 1, start):
                return
            out, ck, cv = step(self.params, *block, jnp.int32(k))
            emit(k + 1, start * N, np.asarray(out))
            if k + 1 < length:
                for r in range(N):
                    visit(k + 1, down(*block, ck, cv, jnp.int32(r)), start * N + r * P)
            if done is not None:
                done(k + 1, start)

        visit(e, (none, none, jnp.int32(0), dk, dv), 0)

    def _walk_on_mesh(self, length: int, emit, mesh, e: int, root: tuple) -> None:
        """The depth-first walk below level e, D subtrees at a time over the devices of ``mesh``."""
        from jax.sharding import NamedSharding, PartitionSpec

        N, P, D = self.config.n_tokens, self.config.n_tokens ** e, int(mesh.devices.size)
        step, down = self._tree_step, self._descend
        # 1. single-device descent until there are >= D subtrees (blocks still to visit), or no deeper level
        frontier = [(e, root, 0)]  # (level k of the block's nodes, tree_step inputs, group-local start)
        while len(frontier) < D and frontier[0][0] + 1 < length:
            deeper = []
            for k, block, start in frontier:
                out, ck, cv = step(self.params, *block, jnp.int32(k))
                emit(k + 1, start * N, np.asarray(out))
                deeper += [(k + 1, down(*block, ck, cv, jnp.int32(r)), start * N + r * P) for r in range(N)]
            frontier = deeper
        # 2. D subtrees at a time, stacked on a leading axis split over the mesh
        spread = NamedSharding(mesh, PartitionSpec(mesh.axis_names))
        params = jax.device_put(self.params, NamedSharding(mesh, PartitionSpec()))
        step_d, down_d = self._mesh_fns

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

    @functools.cached_property
    def _mesh_fns(self):
        """tree_step and descend vmapped over a leading axis of independent subtrees."""
        step = jax.jit(jax.vmap(functools.partial(tree_step, self.config), in_axes=(None, 0, 0, 0, 0, 0, None)))
        down = jax.jit(jax.vmap(functools.partial(descend, self.config.n_tokens),
                                in_axes=(0, 0, 0, 0, 0, 0, 0, None)))
        return step, down

    @functools.cached_property
    def _prefill(self):
        return jax.jit(functools.partial(prefill_kv, self.module))

    @functools.cached_property
    def _tree_step(self):
        return jax.jit(functools.partial(tree_step, self.config))

    @functools.cached_property
    def _descend(self):
        return jax.jit(functools.partial(descend, self.config.n_tokens))

    # -- cached one-position steps (used by the Monte Carlo sampler) ------------

    def init_cache(self, batch: int) -> tuple[jax.Array, jax.Array]:
        """An empty key/value cache for ``batch`` sequences: two float32[batch, layers, H, L, dh] zeros."""
        c = self.config
        zeros = jnp.zeros((int(batch), c.n_layers, c.n_heads, c.context_length, c.d_head), dtype=F32)
        return zeros, zeros

    def cached_step(self, cache: tuple[jax.Array, jax.Array], tokens: Any, t: Any) -> tuple[jax.Array, tuple]:
        """Feed x_t (int[B]) at position t (int, or int[B]); return (logits [B, N] after x_0..x_t, new cache).

        ``cache`` holds the keys/values of positions < t (from ``init_cache`` and
        earlier steps). Valid only while a context GROWS: with absolute positions a
        sliding window moves every token, which invalidates the cache (see
        ``decode_step``). Traceable (jit / lax.scan); t must be < L.
        """
        k_cache, v_cache = cache
        logits, k_cache, v_cache = self._sampling_decode(self.params, k_cache, v_cache, tokens, t)
        return logits, (k_cache, v_cache)

    @functools.cached_property
    def _sampling_decode(self):
        return jax.jit(functools.partial(decode_step, self.config))

    def prefill(self, contexts: Any) -> tuple[jax.Array, jax.Array]:
        """The cache of int[B, k] contexts (positions 0..k-1), computed in one pass; see ``prefill_cache``."""
        tokens = self._check_contexts(contexts)
        return self._sampling_prefill(self.params, tokens)

    @functools.cached_property
    def _sampling_prefill(self):
        return jax.jit(functools.partial(prefill_cache, self.config))

    # -- construction / description ---------------------------------------------

    @classmethod
    def random(cls, config: TransformerConfig, seed: int = 0) -> "TransformerModel":
        """Fresh weights from ``jax.random.PRNGKey(seed)`` (deterministic)."""
        return cls(config, init_params(config, seed))

    @property
    def param_count(self) -> int:
        return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(self.params)))

    @property
    def name(self) -> str | None:
        return None if self.card is None else self.card.get("name")

    def __repr__(self) -> str:
        c = self.config
        name = f"name={self.name!r}, " if self.name else ""
        return (
            f"TransformerModel({name}n_tokens={c.n_tokens}, context_length={c.context_length}, "
            f"n_layers={c.n_layers}, d_model={c.d_model}, n_heads={c.n_heads}, d_ff={c.d_ff}, "
            f"params={self.param_count:,})"
        )


def init_params(config: TransformerConfig, seed: int) -> Any:
    """Initial parameters of ``Transformer(config)`` from ``jax.random.PRNGKey(seed)``."""
    dummy = jnp.zeros((1, config.context_length), dtype=jnp.int32)
    return _jitted_init(config)(jax.random.PRNGKey(int(seed)), dummy)["params"]


@functools.lru_cache(maxsize=16)
def _jitted_init(config: TransformerConfig):
    # one compilation per config (and x64 mode) instead of many eager ops per call
    return jax.jit(Transformer(config).init)


def param_shapes(config: TransformerConfig) -> Any:
    """The parameter tree of ``Transformer(config)`` as ``jax.ShapeDtypeStruct`` leaves (no FLOPs)."""
    dummy = jax.ShapeDtypeStruct((1, config.context_length), jnp.int32)
    out = jax.eval_shape(lambda t: Transformer(config).init(jax.random.PRNGKey(0), t), dummy)
    return out["params"]

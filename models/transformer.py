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
# depend only on tokens x_0..x_t. So the N children (x_0..x_{t-1}, y) of a
# prefix share everything at positions < t: their keys and values there are the
# parent's. One step below computes position t for all N children of P parents
# at once, attending to the parent's cached keys/values plus the child's own.
# The caches have a fixed length L (positions >= t are masked), so one
# compilation serves every level of the tree.


def _layer_norm(x: jax.Array, p: dict, eps: float) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.maximum(jnp.mean(x * x, axis=-1, keepdims=True) - mean * mean, 0.0)  # as flax's fast variance
    return (x - mean) * jax.lax.rsqrt(var + F32(eps)) * p["scale"] + p["bias"]


def _dense(x: jax.Array, p: dict) -> jax.Array:
    return x @ p["kernel"] + p["bias"]


def extend_step(config: TransformerConfig, params: Any, k_cache: jax.Array, v_cache: jax.Array,
                t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Logits and caches of the N children of each of P parents, at position t.

    Args:
      k_cache, v_cache: float32[P, layers, H, L, dh], the parents' keys/values
        (positions < t valid, the rest ignored).
      t: int scalar, the children's last position (= the parents' length).

    Returns:
      logits float32[P, N, N_tokens] (child (p, y) is parent p extended by y),
      k_cache, v_cache float32[P * N, layers, H, L, dh] for the children.
    """
    cfg = config
    N, d, H, dh, L = cfg.n_tokens, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.context_length
    P = k_cache.shape[0]
    eps = cfg.layer_norm_eps
    h = params["tok_embed"][None, :, :] + params["pos_embed"][t][None, None, :]  # [1, N, d]
    h = jnp.broadcast_to(h, (P, N, d))  # [P, N, d]
    valid = (jnp.arange(L) < t)  # [L] parent positions
    scale = F32(1.0 / math.sqrt(dh))
    new_k, new_v = [], []
    for i in range(cfg.n_layers):
        blk = params[f"block_{i}"]
        z = _layer_norm(h, blk["ln_1"], eps)  # [P, N, d]
        qkv = _dense(z, blk["attn"]["qkv"])  # [P, N, 3d]
        q, kk, v = jnp.split(qkv, 3, axis=-1)  # 3 x [P, N, d]
        q, kk, v = (a.reshape(P, N, H, dh) for a in (q, kk, v))  # [P, N, H, dh]
        s_par = jnp.einsum("pnhd,phld->pnhl", q, k_cache[:, i]) * scale  # [P, N, H, L]
        s_par = jnp.where(valid[None, None, None, :], s_par, F32(-1e30))
        s_own = jnp.einsum("pnhd,pnhd->pnh", q, kk)[..., None] * scale  # [P, N, H, 1]
        w = jax.nn.softmax(jnp.concatenate([s_par, s_own], axis=-1), axis=-1)  # [P, N, H, L+1]
        y = jnp.einsum("pnhl,phld->pnhd", w[..., :L], v_cache[:, i]) + w[..., L:] * v  # [P, N, H, dh]
        h = h + _dense(y.reshape(P, N, d), blk["attn"]["out"])  # [P, N, d]
        u = jax.nn.gelu(_dense(_layer_norm(h, blk["ln_2"], eps), blk["mlp"]["fc"]), approximate=True)
        h = h + _dense(u, blk["mlp"]["proj"])  # [P, N, d]
        new_k.append(kk)
        new_v.append(v)
    logits = _dense(_layer_norm(h, params["ln_f"], eps), params["unembed"])  # [P, N, N_tokens]
    at_t = (jnp.arange(L) == t)[None, None, None, None, :, None]  # [1,1,1,1,L,1]
    k_new = jnp.stack(new_k, axis=2)  # [P, N, layers, H, dh]
    v_new = jnp.stack(new_v, axis=2)  # [P, N, layers, H, dh]
    kc = jnp.where(at_t, k_new[:, :, :, :, None, :], k_cache[:, None])  # [P, N, layers, H, L, dh]
    vc = jnp.where(at_t, v_new[:, :, :, :, None, :], v_cache[:, None])  # [P, N, layers, H, L, dh]
    shape = (P * N,) + k_cache.shape[1:]
    return logits, kc.reshape(shape), vc.reshape(shape)


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

    def prefix_tree_logits(self, length: int, emit, chunk: int = 4096, *, skip=None, done=None) -> None:
        """Logits of every context of length 1..``length`` by a walk of the prefix tree.

        Calls ``emit(k, start, logits)`` with float32 logits [n, N] of the
        contexts of length k whose big-endian group-local indices are
        start..start+n-1. Depth-first in blocks of at most ``chunk`` contexts,
        so memory stays bounded (about ``length`` blocks of caches at a time).
        Each context costs one position of the network instead of k.

        Resuming (optional): a *subtree* ``(k, start)`` is the block of level k
        emitted from the parents with level-(k-1) indices start.. together with
        everything below it. ``done(k, start)`` is called once all its blocks
        have been emitted; the walk skips a subtree when ``skip(k, start)`` is
        true. The blocks that are computed are computed exactly as in an
        uninterrupted walk (same shapes, same caches), so a resumed walk gives
        bitwise the same logits.
        """
        cfg = self.config
        if not 1 <= length <= cfg.context_length:
            raise ValueError(f"length must be in 1..L={cfg.context_length}, got {length}")
        N = cfg.n_tokens
        per_call = max(1, chunk // N)  # parents per call
        shape = (per_call, cfg.n_layers, cfg.n_heads, cfg.context_length, cfg.d_head)
        step = self._extend_step

        def visit(k: int, kc, vc, start: int, count: int) -> None:
            # kc, vc: caches of `count` parents (length k-1, group-local indices start..), padded to per_call
            if skip is not None and skip(k, start):
                return
            logits, kc2, vc2 = step(self.params, kc, vc, jnp.int32(k - 1))
            emit(k, start * N, np.asarray(logits).reshape(per_call * N, N)[: count * N])
            if k < length:
                for s in range(0, count * N, per_call):
                    n = min(per_call, count * N - s)
                    kcs, vcs = kc2[s: s + n], vc2[s: s + n]
                    if n < per_call:  # pad to the compiled shape
                        pad = ((0, per_call - n),) + ((0, 0),) * 4
                        kcs, vcs = jnp.pad(kcs, pad), jnp.pad(vcs, pad)
                    visit(k + 1, kcs, vcs, start * N + s, n)
            if done is not None:
                done(k, start)

        zeros = jnp.zeros(shape, dtype=F32)
        visit(1, zeros, zeros, 0, 1)

    @functools.cached_property
    def _extend_step(self):
        return jax.jit(functools.partial(extend_step, self.config))

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

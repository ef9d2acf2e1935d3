"""The key/value-cache decoder: one new position per step, for the Monte Carlo sampler.


A sampled chain grows one token at a time. While its context is shorter than
L, the new token sits at the next absolute position and every earlier
position keeps its keys/values, so one step costs one position of the
network. Unlike ``tree_step`` (all N children of every node of a block),
``decode_step`` extends each sequence by ONE given token, and its cache is an
ordinary per-sequence [layers, H, L, dh] array. Once a window is full and
slides, every token moves to a new position and, with absolute position
embeddings, its cached keys/values are stale: such a step needs the whole
window again (``prefill_cache`` of its first L-1 tokens + ``decode_step``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from .config import TransformerConfig
from .functional import block_tail, dense, final_logits, layer_norm
from .network import F32

__all__ = ["decode_step", "prefill_cache"]


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
        z = layer_norm(h, blk["ln_1"], eps)  # [B, d]
        qkv = dense(z, blk["attn"]["qkv"])  # [B, 3d]
        q, kk, v = jnp.split(qkv, 3, axis=-1)  # 3 x [B, d]
        q, kk, v = (a.reshape(B, H, dh) for a in (q, kk, v))  # [B, H, dh]
        kc = jnp.where(at_t, kk[:, :, None, :], k_cache[:, i])  # [B, H, L, dh]
        vc = jnp.where(at_t, v[:, :, None, :], v_cache[:, i])  # [B, H, L, dh]
        s = jnp.einsum("bhd,bhld->bhl", q, kc) * scale  # [B, H, L]
        w = jax.nn.softmax(jnp.where(valid, s, F32(-1e30)), axis=-1)  # [B, H, L]
        y = jnp.einsum("bhl,bhld->bhd", w, jnp.where(valid[..., None], vc, F32(0)))  # [B, H, dh]
        h = block_tail(cfg, h, y.reshape(B, d), blk)  # [B, d]
        new_k.append(kc)
        new_v.append(vc)
    logits = final_logits(cfg, params, h)  # [B, N_tokens]
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
        z = layer_norm(h, blk["ln_1"], eps)  # [B, k, d]
        kv = dense(z, jax.tree_util.tree_map(lambda a: a[..., d:], blk["attn"]["qkv"]))  # [B, k, 2d]
        kk, v = (a.reshape(B, k, H, dh).transpose(0, 2, 1, 3) for a in jnp.split(kv, 2, axis=-1))  # [B, H, k, dh]
        ks.append(kk)
        vs.append(v)
        if i == cfg.n_layers - 1:
            break  # the last block's keys/values are all the cache needs
        q = dense(z, jax.tree_util.tree_map(lambda a: a[..., :d], blk["attn"]["qkv"]))  # [B, k, d]
        q = q.reshape(B, k, H, dh).transpose(0, 2, 1, 3)  # [B, H, k, dh]
        s = jnp.where(causal, (q @ kk.transpose(0, 1, 3, 2)) * scale, F32(-1e30))  # [B, H, k, k]
        y = (jax.nn.softmax(s, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(B, k, d)  # [B, k, d]
        h = block_tail(cfg, h, y, blk)  # [B, k, d]
    pad = ((0, 0), (0, 0), (0, 0), (0, L - k), (0, 0))
    return jnp.pad(jnp.stack(ks, axis=1), pad), jnp.pad(jnp.stack(vs, axis=1), pad)  # [B, layers, H, L, dh]

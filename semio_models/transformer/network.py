"""The network: a causal pre-LayerNorm transformer (GPT-2's layout) in Flax linen, and nothing else.

    h_0     = E_tok[x] + E_pos[0:k]                      # [B, k, d]
    for each block:
        h  <- h + Attn(LN_1(h))                          # causal multi-head
        h  <- h + W_2 act(W_1 LN_2(h) + b_1) + b_2       # MLP, width d_ff
    logits  = W_u LN_f(h) + b_u                          # [B, k, N]; W_u = E_tok^T when tied

with Attn(z) = concat_heads(softmax(q k^T / sqrt(d_head) + M) v) W_o, where
q, k, v are linear maps of z split into ``n_heads`` heads of width
d_head = d_model / n_heads, and M[i, j] = 0 for j <= i and -inf otherwise.
The config chooses act (``activation``), whether the linear layers and
LayerNorms have biases (``bias``), whether W_u is tied to E_tok
(``tie_embeddings``) and whether b_u exists (``unembed_bias``).

Everything is float32: each layer gets ``dtype=param_dtype=float32`` and the
embeddings are cast explicitly, also under ``jax_enable_x64``. An out-of-range
token id is embedded as token 0 and the logits at its position and every later
one are NaN (inside ``jax.jit`` nothing can be checked on values; the wrapper
checks host data before calling).

The parameter tree (names the checkpoints store; every ``bias`` of the blocks
and LayerNorms only with ``config.bias``):
    tok_embed [N, d] · pos_embed [L, d]
    block_i/ln_1, ln_2: scale [d], bias [d]
    block_i/attn/qkv: kernel [d, 3d], bias [3d]   (q | k | v along the last axis, heads in order)
    block_i/attn/out: kernel [d, d], bias [d]
    block_i/mlp/fc: kernel [d, d_ff], bias [d_ff] · block_i/mlp/proj: kernel [d_ff, d], bias [d]
    ln_f: scale [d], bias [d]
    unembed: kernel [d, N], bias [N] (the bias with ``config.unembed_bias``); when tied, no kernel
        and the bias is the top-level unembed_bias [N]
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import TransformerConfig

__all__ = ["Transformer", "Block", "CausalSelfAttention", "MLP", "F32", "activation"]

F32 = jnp.float32


def activation(name: str, u: jax.Array) -> jax.Array:
    """The MLP nonlinearity ``name`` (one of config.ACTIVATIONS), elementwise."""
    if name == "gelu_tanh":
        return jax.nn.gelu(u, approximate=True)  # 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3)))
    if name == "gelu":
        return jax.nn.gelu(u, approximate=False)  # u Phi(u), with erf
    if name == "relu":
        return jax.nn.relu(u)
    raise ValueError(f"unknown activation {name!r}")


class CausalSelfAttention(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        B, k, d = z.shape
        H, dh = cfg.n_heads, cfg.d_head
        qkv = nn.Dense(3 * d, use_bias=cfg.bias, dtype=F32, param_dtype=F32, name="qkv")(z)  # [B, k, 3d]
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
        return nn.Dense(d, use_bias=cfg.bias, dtype=F32, param_dtype=F32, name="out")(y)  # [B, k, d]


class MLP(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        u = nn.Dense(cfg.d_ff, use_bias=cfg.bias, dtype=F32, param_dtype=F32, name="fc")(z)  # [B, k, d_ff]
        u = activation(cfg.activation, u)  # [B, k, d_ff]
        return nn.Dense(cfg.d_model, use_bias=cfg.bias, dtype=F32, param_dtype=F32, name="proj")(u)  # [B, k, d]


class Block(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        eps, bias = self.config.layer_norm_eps, self.config.bias
        ln1 = nn.LayerNorm(epsilon=eps, use_bias=bias, dtype=F32, param_dtype=F32, name="ln_1")
        ln2 = nn.LayerNorm(epsilon=eps, use_bias=bias, dtype=F32, param_dtype=F32, name="ln_2")
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
        h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, use_bias=cfg.bias, dtype=F32, param_dtype=F32,
                         name="ln_f")(h)  # [B, k, d]
        if not cfg.tie_embeddings:
            logits = nn.Dense(cfg.n_tokens, use_bias=cfg.unembed_bias, dtype=F32, param_dtype=F32,
                              name="unembed")(h)  # [B, k, N]
        else:
            logits = h @ wte.astype(F32).T  # [B, k, N]
            if cfg.unembed_bias:
                logits = logits + self.param("unembed_bias", nn.initializers.zeros, (cfg.n_tokens,), F32)  # [B, k, N]
        return jnp.where(tainted[..., None], F32(jnp.nan), logits.astype(F32))  # [B, k, N]

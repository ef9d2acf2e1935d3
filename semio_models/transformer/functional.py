"""The network's layers as pure functions of its parameter tree, for the incremental forward passes.

The prefix-tree walk (prefix_tree.py) and the key/value-cache decoder
(kv_cache.py) evaluate one position at a time, so they cannot call the Flax
module; they call these functions instead, on the same parameter tree
(network.py lists it). Each one computes what its Flax counterpart computes, in
the same order of float32 operations where that is possible (the LayerNorm
uses flax's one-pass variance), so the incremental logits equal the full
forward pass up to float32 round-off. Shapes are ``[..., width]``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .config import TransformerConfig
from .network import F32, activation

__all__ = ["layer_norm", "dense", "block_tail", "final_logits"]


def layer_norm(x: jax.Array, p: dict, eps: float) -> jax.Array:
    """LayerNorm over the last axis with parameters ``p`` (scale, and bias unless the config has none)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)  # [..., 1]
    var = jnp.maximum(jnp.mean(x * x, axis=-1, keepdims=True) - mean * mean, 0.0)  # as flax's fast variance
    y = (x - mean) * jax.lax.rsqrt(var + F32(eps)) * p["scale"]  # [..., d]
    return y + p["bias"] if "bias" in p else y  # [..., d]


def dense(x: jax.Array, p: dict) -> jax.Array:
    """x @ kernel + bias (no bias when the parameter dict has none)."""
    y = x @ p["kernel"]  # [..., out]
    return y + p["bias"] if "bias" in p else y  # [..., out]


def block_tail(config: TransformerConfig, h: jax.Array, y: jax.Array, blk: dict) -> jax.Array:
    """The rest of a block once attention has mixed the values: h + out(y), then h + mlp(ln_2(h)).

    h: the block's input [..., d]; y: the heads' outputs, concatenated [..., d].
    """
    h = h + dense(y, blk["attn"]["out"])  # [..., d]
    u = activation(config.activation,
                   dense(layer_norm(h, blk["ln_2"], config.layer_norm_eps), blk["mlp"]["fc"]))  # [..., d_ff]
    return h + dense(u, blk["mlp"]["proj"])  # [..., d]


def final_logits(config: TransformerConfig, params: Any, h: jax.Array) -> jax.Array:
    """The logits of the last block's output h [..., d]: unembed(ln_f(h)), [..., N]."""
    z = layer_norm(h, params["ln_f"], config.layer_norm_eps)  # [..., d]
    if not config.tie_embeddings:
        return dense(z, params["unembed"])  # [..., N]
    logits = z @ params["tok_embed"].T  # [..., N]
    return logits + params["unembed_bias"] if config.unembed_bias else logits  # [..., N]

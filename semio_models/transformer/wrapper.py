"""The engine-facing wrapper: a ``TransformerModel`` is the engine's model, contexts [B, k] -> logits [B, N].

It holds a config and a float32 parameter tree, checks host contexts
(``UnknownTokenError`` for ids outside the alphabet), compiles the network once
per instance, and offers the two incremental forward passes the engine uses:
``prefix_tree_logits`` (the shared-prefix operator build, prefix_tree.py) and
``init_cache`` / ``prefill`` / ``cached_step`` (the Monte Carlo sampler,
kv_cache.py).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from semio_jax.errors import UnknownTokenError

from .config import TransformerConfig
from .kv_cache import decode_step, prefill_cache
from .network import F32, Transformer
from .prefix_tree import descend, prefill_kv, tree_step, walk

__all__ = ["TransformerModel", "init_params", "param_shapes"]


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
        start..start+n-1; each context of length > e costs one position of the
        network instead of its length. ``prefix_tree.walk`` describes the walk,
        its resume hooks (``skip``/``done``: a resumed walk gives bitwise the
        same logits) and the walk over the devices of a ``jax.sharding.Mesh``.
        """
        walk(self.config, self.params, (self._prefill, self._tree_step, self._descend), length, emit, chunk,
             skip=skip, done=done, mesh=mesh, mesh_fns=lambda: self._mesh_fns)

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

    def _options(self) -> str:
        """The architecture switches that differ from the defaults, as 'name=value, ' text."""
        base = TransformerConfig(n_tokens=2, context_length=1)
        names = ("layer_norm_eps", "activation", "bias", "tie_embeddings", "unembed_bias")
        return "".join(f"{n}={getattr(self.config, n)!r}, " for n in names
                       if getattr(self.config, n) != getattr(base, n))

    def __repr__(self) -> str:
        c = self.config
        name = f"name={self.name!r}, " if self.name else ""
        return (
            f"TransformerModel({name}n_tokens={c.n_tokens}, context_length={c.context_length}, "
            f"n_layers={c.n_layers}, d_model={c.d_model}, n_heads={c.n_heads}, d_ff={c.d_ff}, "
            f"{self._options()}params={self.param_count:,})"
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


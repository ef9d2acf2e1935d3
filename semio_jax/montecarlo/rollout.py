"""Rollouts from the model itself: many chains in parallel, the model called on
each chain's actual context at every step.

This is the sampled counterpart of the exact operator and deliberately shares
nothing with it except the sampling procedure (:meth:`Procedure.probabilities`):
no precomputed table is consulted, so a bug in the operator build (a wrong
window, wrong positions, a wrong procedure) shows up as a disagreement.

Conventions:
  * a chain's context grows from its prompt (k tokens) to L tokens, then slides:
    the model always sees the last min(t, L) tokens at positions 0..;
  * randomness is explicit: ``seed`` (an int) determines every draw; chunks
    advance one key carried through ``lax.scan``;
  * tokens are drawn with ``jax.random.categorical`` on the float64
    log-probabilities of the procedure.

Key/value cache (optional model capability). A model may expose

    init_cache(batch) -> cache                        # empty cache (any pytree)
    prefill(contexts int32[B, k]) -> cache            # keys/values of positions 0..k-1
    cached_step(cache, tokens int32[B], t) -> (logits [B, N], cache)

where ``cached_step`` feeds token x_t at position t and returns the logits after
x_0..x_t, given the cache of positions < t (``TransformerModel`` has all three).
With it (``kv_cache``, on by default when available):

  * while a chain GROWS (prompt of k < L tokens) the prompt's cache is built
    once and each step feeds only the newest token at its own position: one
    position of the network per step instead of the whole context;
  * once the window is full it SLIDES: every token moves to a new position, and
    with absolute (learned) position embeddings, which the zoo transformers
    have, the cached keys/values of the moved tokens are no longer those the
    model computes. So a full-window step recomputes the whole window
    (``prefill`` of its first L-1 tokens, then ``cached_step`` of the last);
    nothing is carried from one step to the next. It only skips what the next
    token's logits do not need (the last block's attention output and MLP at
    the earlier positions, the unembedding of all but the last). With relative
    or no position encoding the cache could be reused after a slide; our
    models do not qualify.

Models without the capability (``FunctionModel``, ``NGramModel``, any bare
``contexts -> logits`` callable, every non-jittable model) call the model on
the whole context at every step. Both paths split the key the same way and
draw each token from the same distribution; the logits differ only by float32
round-off (~1e-6), so for a fixed seed the tokens are the same except where a
uniform lands within that round-off of a cumulative-probability boundary.
Prompts are rectangular (int[C, k]): all chains of one call share k, so a
batch is either growing or full, never mixed.

Independence: the cached path evaluates the network with hand-written ops
(``decode_step`` / ``prefill_cache`` in the model file), written separately
from the operator's shared-prefix walk but sharing its layer-norm and dense
helpers. ``kv_cache=False`` keeps the model's own forward pass (the flax
module) as the only network code, as before. The tests check that both paths
draw the same tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import PromptError, UnknownTokenError
from ..core.procedure import Procedure, parse

__all__ = ["Sampler", "supports_kv_cache"]


class Sampler:
    """Draws continuations from ``model`` under ``procedure``.

    Args:
      model: any model ``contexts int32[B, k] -> logits[B, N]``.
      procedure: the sampling procedure (Procedure or spec).
      context_length: L, the window the model sees.
      n_tokens: alphabet size (default: ``model.n_tokens``).
      kv_cache: evaluate the model through its key/value-cache interface
        (``init_cache`` / ``prefill`` / ``cached_step``; see the module
        docstring): one position per step while chains grow, the last block's
        tail skipped on full windows. None (default): whenever the model
        supports it; False: never (``model(contexts)`` at every step); True:
        required (ValueError if unsupported).
    """

    def __init__(self, model, procedure: Procedure | str, context_length: int, n_tokens: int | None = None,
                 *, kv_cache: bool | None = None):
        self.model = model
        self.procedure = parse(procedure)
        self.context_length = int(context_length)
        self.n_tokens = int(n_tokens if n_tokens is not None else model.n_tokens)
        self.procedure.validate_for(self.n_tokens)
        self.jittable = getattr(model, "jittable", True)
        capable = supports_kv_cache(model, self.context_length)
        if kv_cache and not capable:
            raise ValueError(f"kv_cache=True needs a jittable model with init_cache, prefill and cached_step and "
                             f"a context length >= {self.context_length}; {type(model).__name__} has not")
        self.kv_cache = capable if kv_cache is None else bool(kv_cache)
        self._grow = jax.jit(self._grow_impl) if self.jittable else self._grow_impl
        self._grows_cached: dict[int, object] = {}
        self._chunks: dict[int, object] = {}

    @classmethod
    def shared(cls, model, procedure: Procedure | str, context_length: int, n_tokens: int | None = None,
               *, kv_cache: bool | None = None) -> "Sampler":
        """A Sampler from a small process-wide cache, so repeated checks reuse its compiled kernels.

        Draws are a function of the seed only, so a shared sampler gives exactly
        the same tokens as a fresh one. At most ``_SHARED_SIZE`` samplers (and
        the models they hold) are kept, least recently used first out.
        """
        proc = parse(procedure)
        n = int(n_tokens if n_tokens is not None else model.n_tokens)
        key = (id(model), proc, int(context_length), n, kv_cache)  # the cached sampler holds the model: id() is stable
        hit = _SHARED.get(key)
        if hit is not None and hit.model is model:
            _SHARED.move_to_end(key)
            return hit
        sampler = cls(model, proc, context_length, n, kv_cache=kv_cache)
        _SHARED[key] = sampler
        while len(_SHARED) > _SHARED_SIZE:
            _SHARED.popitem(last=False)
        return sampler

    # ------------------------------------------------------------ kernels
    def _draw(self, ctx, key):
        return self._draw_from(self.model(ctx), key)  # logits [C, N]

    def _draw_from(self, logits, key):
        logp = self.procedure.log_probabilities(logits)  # [C, N] float64
        return jax.random.categorical(key, logp, axis=-1).astype(jnp.int32)  # [C]

    def _draw_cached(self, win, key):
        """Same draw as ``_draw`` for full windows int32[C, L]: the whole window is recomputed
        (``prefill`` of its first L-1 tokens, then one ``cached_step`` for the last one)."""
        model, length = self.model, win.shape[1]
        cache = model.prefill(win[:, :-1]) if length > 1 else model.init_cache(win.shape[0])
        logits, _ = model.cached_step(cache, win[:, -1], length - 1)
        return self._draw_from(logits, key)

    def _grow_impl(self, ctx, key):
        key, sub = jax.random.split(key)
        y = self._draw(ctx, sub)  # [C]
        return jnp.concatenate([ctx, y[:, None]], axis=1), y, key  # [C, k+1]

    def _grow_cached_impl(self, prompts, key, length: int):
        """``length`` (<= L - k) growing steps from int32[C, k] prompts, one cached position per step.

        The cache of the prompt's first k-1 tokens is built in one pass
        (``prefill``); each step then feeds the newest token at its own position,
        gets the logits after it and draws the next token with the same key split
        as ``_grow_impl``. The last drawn token is not fed (the next phase sees
        it in the window). Returns (int32[C, k + length] contexts, int32[C, length], key).
        """
        c, k = prompts.shape
        model = self.model
        cache = model.prefill(prompts[:, :-1]) if k > 1 else model.init_cache(c)

        def step(carry, t):
            cache, x, key = carry
            logits, cache = model.cached_step(cache, x, t)  # logits after x_0..x_t
            key, sub = jax.random.split(key)
            y = self._draw_from(logits, sub)  # [C]
            return (cache, y, key), y

        ts = jnp.arange(k - 1, k - 1 + length, dtype=jnp.int32)
        (_, _, key), ys = jax.lax.scan(step, (cache, prompts[:, -1], key), ts)
        return jnp.concatenate([prompts, ys.T], axis=1), ys.T, key

    def _grow_cached(self, length: int):
        if length not in self._grows_cached:
            self._grows_cached[length] = jax.jit(partial(self._grow_cached_impl, length=length))
        return self._grows_cached[length]

    def _chunk_impl(self, window, key, length: int):
        draw = self._draw_cached if self.kv_cache else self._draw

        def step(carry, _):
            win, k = carry
            k, sub = jax.random.split(k)
            y = draw(win, sub)  # [C]
            win = jnp.concatenate([win[:, 1:], y[:, None]], axis=1)  # [C, L] slide
            return (win, k), y

        if not self.jittable:
            # lax.scan traces its body even outside jit, which a numpy model cannot
            # survive: run the same steps (same key splits, same draws) in Python.
            carry, ys = (window, key), []
            for _ in range(length):
                carry, y = step(carry, None)
                ys.append(y)
            window, key = carry
            return window, jnp.stack(ys, axis=1), key  # [C, length]
        (window, key), ys = jax.lax.scan(step, (window, key), None, length=length)
        return window, ys.T, key  # ys.T: [C, length]

    def _chunk(self, length: int):
        if length not in self._chunks:
            fn = partial(self._chunk_impl, length=length)
            self._chunks[length] = jax.jit(fn) if self.jittable else fn
        return self._chunks[length]

    # ---------------------------------------------------------------- API
    def check_prompts(self, prompts: np.ndarray) -> np.ndarray:
        p = np.asarray(prompts)
        if p.ndim != 2 or p.shape[1] < 1:
            raise PromptError(f"prompts must have shape [chains, k] with k >= 1, got {p.shape}")
        if p.shape[1] > self.context_length:
            raise PromptError(f"prompts of {p.shape[1]} tokens exceed the context length L={self.context_length}")
        if p.size and (p.min() < 0 or p.max() >= self.n_tokens):
            raise UnknownTokenError(f"prompt tokens must lie in 0..{self.n_tokens - 1}, got {int(p.min())}..{int(p.max())}")
        return p.astype(np.int32)

    def generate(self, prompts: np.ndarray, n_steps: int, seed: int, chunk: int = 1024) -> Iterator[np.ndarray]:
        """Yield the generated tokens in chunks int32[C, <=chunk], n_steps in total.

        ``prompts``: int[C, k], one prompt per chain (1 <= k <= L).
        """
        ctx = jnp.asarray(self.check_prompts(prompts))
        key = jax.random.PRNGKey(int(seed))
        done = 0
        grown = []
        if self.kv_cache and ctx.shape[1] < self.context_length and n_steps > 0 and ctx.shape[0] > 0:
            done = min(n_steps, self.context_length - ctx.shape[1])  # prefix phase, cached: one scan
            ctx, ys, key = self._grow_cached(done)(ctx, key)
            yield np.asarray(ys)
        while ctx.shape[1] < self.context_length and done < n_steps:  # prefix phase, plain
            ctx, y, key = self._grow(ctx, key)
            grown.append(np.asarray(y))
            done += 1
        if grown:
            yield np.stack(grown, axis=1)
        while done < n_steps:
            length = min(chunk, n_steps - done)
            ctx, ys, key = self._chunk(length)(ctx, key)
            yield np.asarray(ys)
            done += length

    def sample(self, prompts: np.ndarray, n_steps: int, seed: int, chunk: int = 1024) -> np.ndarray:
        """All generated tokens at once: int32[C, n_steps]."""
        parts = list(self.generate(prompts, n_steps, seed, chunk))
        if not parts:
            return np.zeros((np.asarray(prompts).shape[0], 0), np.int32)
        return np.concatenate(parts, axis=1)


def supports_kv_cache(model, context_length: int) -> bool:
    """Whether ``model`` offers the cached one-position step for windows of ``context_length`` tokens."""
    if not getattr(model, "jittable", True):
        return False
    if not all(callable(getattr(model, name, None)) for name in ("init_cache", "prefill", "cached_step")):
        return False
    model_length = getattr(model, "context_length", None)
    return model_length is None or int(model_length) >= int(context_length)


_SHARED_SIZE = 8
_SHARED: "OrderedDict[tuple, Sampler]" = OrderedDict()

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
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import PromptError, UnknownTokenError
from ..sampling import Procedure, parse

__all__ = ["Sampler"]


class Sampler:
    """Draws continuations from ``model`` under ``procedure``.

    Args:
      model: any model ``contexts int32[B, k] -> logits[B, N]``.
      procedure: the sampling procedure (Procedure or spec).
      context_length: L, the window the model sees.
      n_tokens: alphabet size (default: ``model.n_tokens``).
    """

    def __init__(self, model, procedure: Procedure | str, context_length: int, n_tokens: int | None = None):
        self.model = model
        self.procedure = parse(procedure)
        self.context_length = int(context_length)
        self.n_tokens = int(n_tokens if n_tokens is not None else model.n_tokens)
        self.procedure.validate_for(self.n_tokens)
        self.jittable = getattr(model, "jittable", True)
        self._grow = jax.jit(self._grow_impl) if self.jittable else self._grow_impl
        self._chunks: dict[int, object] = {}

    @classmethod
    def shared(cls, model, procedure: Procedure | str, context_length: int, n_tokens: int | None = None) -> "Sampler":
        """A Sampler from a small process-wide cache, so repeated checks reuse its compiled kernels.

        Draws are a function of the seed only, so a shared sampler gives exactly
        the same tokens as a fresh one. At most ``_SHARED_SIZE`` samplers (and
        the models they hold) are kept, least recently used first out.
        """
        proc = parse(procedure)
        n = int(n_tokens if n_tokens is not None else model.n_tokens)
        key = (id(model), proc, int(context_length), n)  # the cached sampler holds the model, so id() is stable
        hit = _SHARED.get(key)
        if hit is not None and hit.model is model:
            _SHARED.move_to_end(key)
            return hit
        sampler = cls(model, proc, context_length, n)
        _SHARED[key] = sampler
        while len(_SHARED) > _SHARED_SIZE:
            _SHARED.popitem(last=False)
        return sampler

    # ------------------------------------------------------------ kernels
    def _draw(self, ctx, key):
        logits = self.model(ctx)  # [C, N]
        logp = self.procedure.log_probabilities(logits)  # [C, N] float64
        return jax.random.categorical(key, logp, axis=-1).astype(jnp.int32)  # [C]

    def _grow_impl(self, ctx, key):
        key, sub = jax.random.split(key)
        y = self._draw(ctx, sub)  # [C]
        return jnp.concatenate([ctx, y[:, None]], axis=1), y, key  # [C, k+1]

    def _chunk_impl(self, window, key, length: int):
        def step(carry, _):
            win, k = carry
            k, sub = jax.random.split(k)
            y = self._draw(win, sub)  # [C]
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
        while ctx.shape[1] < self.context_length and done < n_steps:  # prefix phase
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


_SHARED_SIZE = 8
_SHARED: "OrderedDict[tuple, Sampler]" = OrderedDict()

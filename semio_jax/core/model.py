"""The model interface: anything that maps contexts to next-token logits.

A **model** is any callable ``f(contexts) -> logits`` with

  contexts: int32[B, k], 1 <= k <= L, tokens oldest first, the model sees them
            at positions 0..k-1;
  logits:   float[B, N], the logits of the next token after each context.

Flax checkpoints (``semio_models.checkpoint.load``), hand-written n-gram tables
(:class:`NGramModel`) and random-weight transformers all pass through this
door. Optional attributes a model may carry, read by the engine when present:

  n_tokens:        alphabet size N (otherwise taken from the StateSpace);
  context_length:  the largest k the model accepts;
  jittable:        False if the callable cannot be traced by ``jax.jit``
                   (a numpy or external model), True if it can; absent or
                   None: **detected** by tracing the call once abstractly
                   (``jax.eval_shape``, no computation); a JAX tracing error
                   (e.g. TracerArrayConversionError from ``np.asarray``) marks
                   the model as plain Python/numpy, and it is then called
                   outside jit, batch by batch, on numpy int32 arrays;
  prefix_tree_logits(length, emit, chunk, *, skip=None, done=None, mesh=None):
                   the shared-prefix walk (the zoo's TransformerModel): calls
                   ``emit(k, start, logits[n, N])`` for the contexts of length k
                   with group-local indices start..start+n-1, covering every
                   context once; ``skip``/``done`` let a build resume, ``mesh``
                   spreads the walk over devices (semio_jax.sharding). All
                   keywords are optional for a model to support.

``as_model`` wraps a bare function so these attributes are always present.
Logits are float32 or float64; -inf means "impossible token" and is allowed,
NaN and +inf are not (the operator build raises NonFiniteLogitsError).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import LogitsShapeError, NonFiniteLogitsError, SpaceMismatchError

__all__ = ["NextTokenModel", "FunctionModel", "NGramModel", "as_model", "describe_model", "evaluate",
           "jitted_model", "check_model_fits", "probe_jittable", "TRACING_ERRORS"]

#: what tracing a plain Python/numpy function under jax.jit raises (np.asarray of a tracer, bool/int of one, ...)
TRACING_ERRORS = (jax.errors.JAXTypeError, jax.errors.JAXIndexError, jax.errors.UnexpectedTracerError)


@runtime_checkable
class NextTokenModel(Protocol):
    """Structural type of a model: ``contexts int32[B, k] -> logits[B, N]``."""

    def __call__(self, contexts: Any) -> Any: ...


class FunctionModel:
    """A plain function made into a model with explicit metadata.

    Args:
      fn: ``contexts int32[B, k] -> logits[B, N]``.
      n_tokens: alphabet size N.
      context_length: the largest context the function accepts (None: any).
      jittable: whether ``fn`` can be traced by ``jax.jit`` (False for numpy code);
        None (default): detected on first use (:func:`probe_jittable`).
      name: shown in reports.
    """

    def __init__(self, fn: Callable, n_tokens: int, context_length: int | None = None,
                 jittable: bool | None = None, name: str | None = None):
        self.fn = fn
        self.n_tokens = int(n_tokens)
        self.context_length = context_length
        self._jittable = None if jittable is None else bool(jittable)
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    @property
    def jittable(self) -> bool:
        if self._jittable is None:
            self._jittable = probe_jittable(self.fn, self.context_length)
        return self._jittable

    def __call__(self, contexts):
        return self.fn(contexts)

    def __repr__(self) -> str:
        return (f"FunctionModel({self.name}, n_tokens={self.n_tokens}, "
                f"context_length={self.context_length}, jittable={self.jittable})")


class NGramModel:
    """A hand-written n-gram model: the next token depends on the last ``order`` tokens.

    Args:
      logits: float array of shape [N]*order + [N]; ``logits[a_1, ..., a_n, y]``
        is the logit of y after the tokens a_1..a_n (oldest first). -inf marks
        an impossible token.
      context_length: optional L, stored for the engine's checks.

    Contexts shorter than ``order`` use the log of the *average* next-token
    distribution over all completions of the missing oldest tokens (uniform
    weights), so every prefix state has a well-defined rule.
    """

    def __init__(self, logits, context_length: int | None = None, name: str = "ngram"):
        table = np.asarray(logits, dtype=np.float64)
        if table.ndim < 1:
            raise LogitsShapeError("n-gram logits need at least one axis (the next token)")
        n = table.shape[-1]
        if any(d != n for d in table.shape):
            raise LogitsShapeError(f"n-gram logits must have shape [N]*order + [N], got {table.shape}")
        if np.isnan(table).any() or np.isposinf(table).any():
            raise NonFiniteLogitsError("n-gram logits contain NaN or +inf; use -inf for impossible tokens")
        self.order = table.ndim - 1
        self.n_tokens = n
        self.context_length = context_length
        self.jittable = True
        self.name = name
        self.table = table
        # Flattened tables, one per available context length m = min(k, order).
        self._tables = {}
        for m in range(0, self.order + 1):
            t = table
            if m < self.order:
                probs = np.exp(t - np.max(t, axis=-1, keepdims=True))
                probs = probs / probs.sum(axis=-1, keepdims=True)
                probs = probs.reshape((n ** (self.order - m), n**m, n)).mean(axis=0)  # [N^m, N]
                with np.errstate(divide="ignore"):
                    t = np.log(probs)
            self._tables[m] = jnp.asarray(t.reshape(n**m, n), dtype=jnp.float32)  # [N^m, N]

    def __call__(self, contexts):
        ctx = jnp.asarray(contexts)
        k = ctx.shape[1]
        m = min(k, self.order)
        weights = jnp.asarray(self.n_tokens ** np.arange(m - 1, -1, -1), dtype=jnp.int32)  # [m]
        idx = (ctx[:, k - m:] * weights[None, :]).sum(axis=1) if m else jnp.zeros(ctx.shape[0], jnp.int32)
        return self._tables[m][idx]  # [B, N]

    def __repr__(self) -> str:
        return f"NGramModel(order={self.order}, n_tokens={self.n_tokens}, context_length={self.context_length})"


def as_model(obj, n_tokens: int | None = None) -> Any:
    """Return ``obj`` if it already carries ``n_tokens``; otherwise wrap it in FunctionModel."""
    if not callable(obj):
        raise TypeError(f"a model must be callable contexts -> logits, got {type(obj).__name__}")
    if getattr(obj, "n_tokens", None) is not None:
        return obj
    if n_tokens is None:
        raise TypeError("this callable has no n_tokens attribute; pass n_tokens= (or wrap it with FunctionModel)")
    return FunctionModel(obj, n_tokens=n_tokens)


def describe_model(model) -> dict:
    """JSON-able description of a model for reports (name, class, sizes, hash if known)."""
    out = {"class": type(model).__name__, "repr": repr(model)[:500]}
    for attr in ("name", "n_tokens", "context_length", "weights_sha256", "source_path"):
        v = getattr(model, attr, None)
        if v is not None and isinstance(v, (str, int, float)):
            out[attr] = v
    return out


def evaluate(model, contexts: np.ndarray, jitted: Callable | None = None) -> np.ndarray:
    """Call ``model`` on int32[B, k] contexts and return its logits as a numpy array."""
    fn = jitted if jitted is not None else model
    out = fn(jnp.asarray(contexts, dtype=jnp.int32))
    return np.asarray(jax.device_get(out))


_JITTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def probe_jittable(fn: Callable, context_length: int | None = None) -> bool:
    """Whether ``fn`` traces under jax: one abstract call (``jax.eval_shape``, nothing computed) on
    int32[1, context_length or 1]. False iff tracing raises a JAX tracing error (numpy code); any other
    error leaves the answer True, and the real call reports that error in full."""
    try:
        jax.eval_shape(fn, jax.ShapeDtypeStruct((1, int(context_length or 1)), jnp.int32))
    except TRACING_ERRORS:
        return False
    except Exception:  # noqa: BLE001 - not a tracing problem; the evaluation will raise it with context
        return True
    return True


def _eager(model) -> Callable:
    """A plain Python/numpy model called outside jit on numpy int32 contexts."""
    return lambda c: model(np.asarray(c, dtype=np.int32))


def jitted_model(model):
    """``jax.jit`` of the model's call, made once per model object (compiled once per shape).

    Models marked ``jittable = False``, and models without the mark whose call does not
    trace (:func:`probe_jittable`), are called outside jit on numpy contexts instead.
    """
    flag = getattr(model, "jittable", None)
    if flag is None:
        flag = probe_jittable(model, getattr(model, "context_length", None))
    if not flag:
        return _eager(model)
    try:
        fn = _JITTED.get(model)
    except TypeError:  # not weak-referenceable / hashable: jit afresh
        return jax.jit(lambda c: model(c))
    if fn is None:
        ref = weakref.ref(model)  # the cached function must not keep its model alive
        fn = jax.jit(lambda c: ref()(c))
        _JITTED[model] = fn
    return fn


def check_model_fits(model, space) -> None:
    """Raise SpaceMismatchError if ``space`` has another alphabet or a longer context than ``model``."""
    model_n = getattr(model, "n_tokens", None)
    if model_n is not None and model_n != space.n_tokens:
        raise SpaceMismatchError(f"the model's alphabet has N={model_n} tokens but the state space has "
                                 f"N={space.n_tokens}; build the space with n_tokens={model_n}")
    ctx_len = getattr(model, "context_length", None)
    if ctx_len is not None and space.length > ctx_len:
        raise SpaceMismatchError(f"the space's context length L={space.length} exceeds the model's "
                                 f"context_length={ctx_len}; choose L <= {ctx_len}")

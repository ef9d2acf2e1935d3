"""The model's logits for every state of a space: plain batched evaluation and the shared-prefix walk.

Two ways to evaluate a model on all of S (see :func:`evaluate_logits`):

* **plain**: each group of states of length k is evaluated in chunks of
  ``batch_size`` contexts, the last chunk padded so each k compiles once; a
  state of length k costs k positions of the model. :func:`plain_chunks`
  yields the chunks one by one so that a resumable build
  (:mod:`semio_jax.build.checkpointed`) runs the very same loop.
* **prefix**: a model that implements ``prefix_tree_logits(length, emit,
  chunk)`` (the zoo's transformer) walks the prefix tree once and hands over
  blocks of logits (:func:`tree_block` checks each); a state costs about one
  position.

Every chunk is checked as it arrives (:func:`check_logits`): shape [B, N], no
NaN or +inf, not all -inf; the error names the offending context.
"""

from __future__ import annotations

from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from .._util.progress import progress_bar
from ..core.model import check_model_fits, jitted_model
from ..core.space import StateSpace
from ..errors import LogitsError, LogitsShapeError, NonFiniteLogitsError, PrefixContextError, SemioError

__all__ = ["DEFAULT_BATCH", "evaluate_logits", "plain_chunks", "collect", "check_logits", "tree_block",
           "evaluate_prefix_tree", "resolve_method"]

DEFAULT_BATCH = 8192


def check_logits(logits: np.ndarray, contexts: np.ndarray | None, n_tokens: int, k: int,
                  contexts_fn=None) -> None:
    """Shape and finiteness checks of one chunk of logits (names the offending context).

    ``contexts_fn`` produces the contexts lazily (only when an error must name one).
    """
    if logits.dtype == np.bool_ or not (np.issubdtype(logits.dtype, np.floating)
                                        or np.issubdtype(logits.dtype, np.integer)):
        raise LogitsError(f"the model returned logits of dtype {logits.dtype} (shape {logits.shape}); expected real "
                          f"numbers, float32 or float64, shape [B, N={n_tokens}]")
    if contexts is None:
        bad_any = np.isnan(logits).any() or np.isposinf(logits).any() or np.all(np.isneginf(logits), axis=1).any()
        if not bad_any:
            return
        contexts = contexts_fn()
    if logits.ndim != 2 or logits.shape != (contexts.shape[0], n_tokens):
        raise LogitsShapeError(
            f"the model returned logits of shape {logits.shape} for contexts of shape {contexts.shape}; "
            f"expected [B, N] = {(contexts.shape[0], n_tokens)} (last-position logits over an alphabet of N={n_tokens})"
        )
    bad = np.isnan(logits) | np.isposinf(logits)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise NonFiniteLogitsError(
            f"the model returned NaN or +inf logits for context {contexts[row].tolist()} (length {k}): "
            f"{logits[row].tolist()}; only -inf (probability 0) is allowed"
        )
    dead = np.all(np.isneginf(logits), axis=1)
    if dead.any():
        row = int(np.argmax(dead))
        raise NonFiniteLogitsError(
            f"every logit is -inf for context {contexts[row].tolist()}: the model gives no next token there"
        )


def resolve_method(model, method: str) -> str:
    """"plain" or "prefix": the evaluation ``method`` ("auto", "plain", "prefix") resolved for ``model``."""
    if method not in ("auto", "plain", "prefix"):
        raise ValueError(f"unknown evaluation method {method!r}; use auto, plain or prefix")
    has_tree = callable(getattr(model, "prefix_tree_logits", None))
    if method == "prefix" and not has_tree:
        raise ValueError(f"{type(model).__name__} has no prefix_tree_logits(); use method='plain'")
    return "prefix" if method != "plain" and has_tree else "plain"


def plain_chunks(model, space: StateSpace, batch_size: int = DEFAULT_BATCH,
                 load: Callable[[int, int, int], np.ndarray | None] | None = None,
                 ) -> Iterator[tuple[int, int, int, np.ndarray, bool]]:
    """The plain evaluation, one chunk at a time: yields ``(k, start, row_offset, logits[real, N], fresh)``.

    Chunk ``(k, start)`` holds the states of length k with group-local indices
    start..start+real-1, at rows row_offset.. of the operator. Each chunk is the
    same padded batch of ``min(batch_size, N^k)`` contexts through the same
    compiled function, so results do not depend on how a build was split.
    ``load(k, start, real)`` may return stored logits for a chunk (then the
    model is not called and ``fresh`` is False); None means compute it.
    """
    n = space.n_tokens
    check_model_fits(model, space)
    fn = jitted_model(model)
    for k, offset in space.iter_groups():
        size = n**k
        b = min(batch_size, size)
        for start in range(0, size, b):
            real = min(b, size - start)
            logits = load(k, start, real) if load is not None else None
            fresh = logits is None
            if fresh:
                ctx = space.contexts(k, start, start + b)  # [B, k]
                if real < b:
                    ctx = np.concatenate([ctx, np.zeros((b - real, k), np.int32)], axis=0)  # pad
                raw = np.asarray(jax.device_get(_call(fn, ctx, space, k)))  # [B, N]
                if raw.ndim != 2 or raw.shape[0] != ctx.shape[0]:  # before slicing off the padding
                    check_logits(raw, ctx, n, k)
                logits = raw[:real]
                check_logits(logits, ctx[:real], n, k)
            yield k, start, offset + start, logits, fresh


def _call(fn, ctx: np.ndarray, space: StateSpace, k: int):
    """fn(contexts int32[B, k]); a failure on a prefix context (k < L) becomes a PrefixContextError that says
    how to leave the prefix states out (a model that only accepts full-length contexts)."""
    try:
        return fn(jnp.asarray(ctx))
    except SemioError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's own code failed; name the way out if it is the prefixes
        if k >= space.length:
            raise
        raise PrefixContextError(
            f"the model failed on contexts of length {k} < L={space.length} ({type(e).__name__}: {e}). "
            f"A model that only accepts full-length contexts needs a space without prefix states: "
            f"StateSpace({space.n_tokens}, {space.length}, prefixes=False) (CLI: semio analyze ... --no-prefixes)"
        ) from e


def collect(chunks, space: StateSpace, progress: bool = False) -> np.ndarray:
    """Assemble ``plain_chunks`` output into float32[num_states, N] (float64 if the model's logits are)."""
    out = None
    bar = progress_bar(space.num_states, progress)
    for _k, _start, row, logits, _fresh in chunks:
        if out is None:
            dtype = np.float64 if logits.dtype == np.float64 else np.float32
            out = np.empty((space.num_states, space.n_tokens), dtype=dtype)
        out[row: row + logits.shape[0]] = logits
        bar.update(logits.shape[0])
    bar.close()
    return out


def evaluate_logits(model, space: StateSpace, *, batch_size: int = DEFAULT_BATCH,
                    progress: bool = False, method: str = "auto") -> np.ndarray:
    """The model's logits for every state of ``space``: float32[num_states, N] (float64 if the model's are).

    ``method``:
      "plain": :func:`plain_chunks`, each group of states of length k in padded
        chunks of ``batch_size`` contexts; a state of length k costs k positions.
      "prefix": shared-prefix build for models that implement
        ``prefix_tree_logits(length, emit, chunk)`` (see semio_jax.core.model): the
        prefix tree is walked once and each state costs about one position.
      "auto": "prefix" when the model supports it, else "plain".
    """
    if resolve_method(model, method) == "prefix":
        return evaluate_prefix_tree(model, space, batch_size, progress)
    return collect(plain_chunks(model, space, batch_size), space, progress)


def tree_block(space: StateSpace, k: int, start: int, logits) -> tuple[int, np.ndarray] | None:
    """A block emitted by ``prefix_tree_logits``, checked: (row offset in the operator, logits [n, N]).

    None when the space has no rows for it (a prefix level of a space without
    prefix states). Raises LogitsShapeError / NonFiniteLogitsError naming the context.
    """
    logits = np.asarray(logits)
    if k < space.length and not space.prefixes:
        return None
    n = space.n_tokens
    if logits.ndim != 2 or logits.shape[1] != n:
        raise LogitsShapeError(f"prefix_tree_logits emitted logits of shape {logits.shape}; expected [B, {n}]")
    count = logits.shape[0]
    check_logits(logits, None, n, k, lambda: space.contexts(k, start, start + count))
    return space.group_offsets[k] + start, logits


def evaluate_prefix_tree(model, space: StateSpace, chunk: int, progress: bool, mesh=None) -> np.ndarray:
    """Shared-prefix evaluation: the model walks its prefix tree and hands over each block.

    With ``mesh`` the model's walk spreads its subtrees over the mesh's devices (its
    ``prefix_tree_logits`` must accept ``mesh=``; see semio_jax.core.model).
    """
    check_model_fits(model, space)
    n = space.n_tokens
    out = np.empty((space.num_states, n), dtype=np.float32)
    bar = progress_bar(space.num_states, progress)

    def emit(k: int, start: int, logits) -> None:
        block = tree_block(space, k, start, logits)
        if block is not None:
            off, logits = block
            out[off: off + logits.shape[0]] = logits
            bar.update(logits.shape[0])

    if mesh is None:
        model.prefix_tree_logits(space.length, emit, chunk=chunk)
    else:
        model.prefix_tree_logits(space.length, emit, chunk=chunk, mesh=mesh)
    bar.close()
    return out

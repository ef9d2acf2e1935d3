"""The exact transition operator of a model under a sampling procedure.

For a :class:`~semio_jax.space.StateSpace` S and a model f, the operator is the
row-stochastic table

    probs[s, y] = q(y | s) = procedure(f(tokens(s)))_y,      float64[|S|, N],

together with the successor table ``succ[s, y]`` of the space. As a Markov
chain on S it moves from s to succ[s, y] with probability probs[s, y]. It is
never stored as a dense |S| x |S| matrix: the successor structure is implicit
(a de Bruijn graph on T^L plus the prefix tree), and products with
distributions are gathers/reshapes (:meth:`Operator.push`, :meth:`Operator.pull`).

This module is the single hand-off point between models and dynamics: every
analysis takes an :class:`Operator`; nothing downstream calls the model except
the Monte Carlo sampler, which must call it on its actual contexts.

Precision: logits come from the model (usually float32) and are promoted to
float64 before the procedure is applied, so the operator is exact with respect
to the model's own logits up to float64 rounding. Validation: rows sum to 1
within 1e-12, no NaN, no negative entries.
"""

from __future__ import annotations

import functools
import hashlib
import os
import weakref
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .errors import (
    LogitsError,
    LogitsShapeError,
    NonFiniteLogitsError,
    NotStochasticError,
    SpaceMismatchError,
    StateSpaceTooLargeError,
)
from .model import describe_model
from .sampling import Procedure, parse
from .space import StateSpace

__all__ = ["Operator", "build_operator", "estimate_memory", "available_memory", "ROW_SUM_TOL"]

ROW_SUM_TOL = 1e-12
_DEFAULT_BATCH = 8192


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable, else total physical)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def estimate_memory(space: StateSpace, keep_logits: bool = True) -> dict:
    """Bytes the operator of ``space`` needs, itemised.

    The float64 probability table dominates; the successor table (int64) is the
    same size; the float32 logits are half of it; analyses need a few float64
    vectors of length |S| on top (counted as 8 of them).
    """
    s, n = space.num_states, space.n_tokens
    items = {
        "probs (float64)": 8 * s * n,
        "successors (int64)": 8 * s * n,
        "logits (float32)": 4 * s * n if keep_logits else 0,
        "work vectors": 8 * 8 * s,
    }
    items["total"] = sum(items.values())
    return items


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} PiB"


def refuse_if_over(need: int, what: str, hint: str, memory_limit: int | None = None) -> None:
    """Raise StateSpaceTooLargeError if ``need`` bytes (for ``what``) exceed half the available memory.

    For the dense views of analysis results: they are derived from compact storage, so the
    message says what to use instead (``hint``).
    """
    limit = int(memory_limit) if memory_limit is not None else int(0.5 * available_memory())
    if need > limit:
        raise StateSpaceTooLargeError(
            f"{what} needs {_fmt_bytes(need)}, over the budget of {_fmt_bytes(limit)} (half the available "
            f"memory); {hint}")


def check_fits(space: StateSpace, memory_limit: int | None = None, keep_logits: bool = True) -> None:
    """Raise StateSpaceTooLargeError if the operator of ``space`` would not fit."""
    need = estimate_memory(space, keep_logits)
    limit = int(memory_limit) if memory_limit is not None else int(0.8 * available_memory())
    if need["total"] > limit:
        per_state = need["total"] / space.num_states
        fits = int(limit // per_state)
        n = space.n_tokens
        max_len = 1
        while StateSpace(n, max_len + 1, space.prefixes).num_states <= fits and max_len < 64:
            max_len += 1
        raise StateSpaceTooLargeError(
            f"the operator on {space!r} needs about {_fmt_bytes(need['total'])} "
            f"({', '.join(f'{k}: {_fmt_bytes(v)}' for k, v in need.items() if k != 'total' and v)}), "
            f"but the memory budget is {_fmt_bytes(limit)}. About {fits:,} states fit "
            f"(with N={n}: context length L <= {max_len}); reduce L or N, or raise memory_limit"
        )


class Operator:
    """A validated, row-stochastic transition table on a state space.

    Attributes:
      space: the StateSpace.
      probs: float64[num_states, N], read-only; ``probs[s, y] = q(y | s)``.
      procedure: the sampling procedure that produced it (None if given directly).
      logits: the model's logits float32[num_states, N] when kept (lets
        :meth:`with_procedure` re-derive the operator without the model).
      model_info: JSON-able description of the model.
    """

    def __init__(self, space: StateSpace, probs, procedure: Procedure | None = None,
                 logits=None, model_info: dict | None = None, validate: bool = True):
        self.space = space
        if np.iscomplexobj(probs):
            raise NotStochasticError("the probability table is complex; transition probabilities are real numbers")
        probs = np.array(probs, dtype=np.float64, copy=True)
        if probs.shape != (space.num_states, space.n_tokens):
            raise LogitsShapeError(
                f"probability table has shape {probs.shape}, expected "
                f"[num_states, N] = {(space.num_states, space.n_tokens)} for {space!r}"
            )
        probs.setflags(write=False)
        self.probs = probs
        self.procedure = procedure
        if logits is not None:
            # a read-only view: the caller's own array keeps its flags (it is not copied: logits can be large)
            logits = np.asarray(logits).view()
            logits.setflags(write=False)
        self.logits = logits
        self.model_info = model_info or {}
        if validate:
            self.validate()

    # -------------------------------------------------------------- checks
    def validate(self, tol: float = ROW_SUM_TOL) -> "Operator":
        """Check rows are probability vectors; raise NotStochasticError naming the worst row."""
        p = self.probs
        bad = ~np.isfinite(p)
        if bad.any():
            s = int(np.argwhere(bad)[0, 0])
            raise NotStochasticError(f"row {s} (state {self.space.label(s)}) contains NaN/inf: {p[s]}")
        if (p < 0).any():
            s = int(np.argwhere(p < 0)[0, 0])
            raise NotStochasticError(f"row {s} (state {self.space.label(s)}) has a negative entry: {p[s]}")
        dev = np.abs(p.sum(axis=1) - 1.0)
        worst = int(np.argmax(dev)) if dev.size else 0
        if dev.size and dev[worst] > tol:
            raise NotStochasticError(
                f"row {worst} (state {self.space.label(worst)}) sums to {p[worst].sum()!r}, "
                f"off by {dev[worst]:.3e} > {tol:g}; normalise the table or check the model's logits"
            )
        return self

    @property
    def max_row_error(self) -> float:
        """max_s |sum_y probs[s, y] - 1|."""
        return float(np.max(np.abs(self.probs.sum(axis=1) - 1.0)))

    # ----------------------------------------------------------- structure
    @property
    def num_states(self) -> int:
        return self.space.num_states

    @property
    def n_tokens(self) -> int:
        return self.space.n_tokens

    @property
    def successors(self) -> np.ndarray:
        """int64[num_states, N]: the state reached from s by token y."""
        return self.space.successor_table()

    @cached_property
    def is_deterministic(self) -> bool:
        """True when every row puts all mass on one token (a map, e.g. greedy decoding).

        Decided on the support (exactly one non-zero entry per row), not on
        ``max == 1.0``: a row like [1.0, 1e-22] rounds its maximum to 1.0 but
        still has a second edge, which the class decomposition must see.
        """
        return bool(np.all(np.count_nonzero(self.probs, axis=1) == 1))

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of the probability table and the space."""
        h = hashlib.sha256()
        h.update(repr((self.space.n_tokens, self.space.length, self.space.prefixes)).encode())
        h.update(np.ascontiguousarray(self.probs).tobytes())
        return h.hexdigest()[:16]

    @cached_property
    def csr(self) -> sp.csr_matrix:
        """The operator as a CSR matrix, built once and shared: treat it as read-only (to_scipy gives a copy)."""
        s, n = self.num_states, self.n_tokens
        mat = sp.csr_matrix(
            (self.probs.ravel().copy(), self.successors.ravel().copy(), np.arange(0, s * n + 1, n, dtype=np.int64)),
            shape=(s, s),
        )
        mat.eliminate_zeros()
        return mat

    def to_scipy(self, fmt: str = "csr") -> sp.spmatrix:
        """The operator as a new scipy.sparse matrix [num_states, num_states] (zero entries dropped)."""
        return self.csr.copy().asformat(fmt)

    def adjacency(self) -> sp.csr_matrix:
        """Boolean support graph of the chain: s -> succ[s, y] wherever probs[s, y] > 0."""
        mat = self.csr.copy()
        mat.data = np.ones_like(mat.data)
        return mat

    # ----------------------------------------------------------- products
    def push(self, dist: np.ndarray) -> np.ndarray:
        """One step forward for a row vector: (dist @ P)[t] = sum_{s, y: succ[s,y]=t} dist[s] probs[s, y].

        Accepts float64[num_states] or a batch float64[num_states, m].
        """
        dist = np.asarray(dist, dtype=np.float64)
        batch = dist.ndim == 2
        d = dist if batch else dist[:, None]  # [S, m]
        sp_ = self.space
        n, nf = sp_.n_tokens, sp_.num_full
        out = np.zeros_like(d)
        # Full states: succ(x, y) = (x mod N^(L-1)) * N + y, so the image is a reshape-and-sum.
        flow = d[:nf, None, :] * self.probs[:nf, :, None]  # [N^L, N, m]
        out[:nf] = flow.reshape(n, nf // n, n, -1).sum(axis=0).reshape(nf, -1)
        # Prefix states of length k feed the group k+1 with the same pattern, no summing.
        for k in range(1, sp_.length) if sp_.prefixes else ():
            src = sp_.group(k)
            dst = sp_.group(k + 1)
            out[dst.start:dst.stop] += (d[src.start:src.stop, None, :] * self.probs[src.start:src.stop, :, None]).reshape(-1, d.shape[1])
        return out if batch else out[:, 0]

    def push_full(self, dist: np.ndarray) -> np.ndarray:
        """One step forward for a row vector on the N^L full states only: float64[N^L] -> float64[N^L].

        Full states map to full states (a closed class lives there), and the image is a
        reshape-and-contract over the (N,)*L index: one einsum, no prefix groups.
        """
        n, nf = self.n_tokens, self.space.num_full
        table = self.probs[:nf].reshape(n, nf // n, n)  # [a, m, y]: state a*M + m moves to m*N + y
        return np.einsum("am,amy->my", np.asarray(dist, dtype=np.float64).reshape(n, nf // n), table).ravel()

    def pull(self, f: np.ndarray) -> np.ndarray:
        """One step backward for a column vector: (P f)[s] = sum_y probs[s, y] f[succ[s, y]].

        Accepts float64[num_states] or a batch float64[num_states, m].
        """
        f = np.asarray(f, dtype=np.float64)
        if f.ndim == 1:
            return np.einsum("sy,sy->s", self.probs, f[self.successors])
        return np.einsum("sy,sym->sm", self.probs, f[self.successors])

    # ------------------------------------------------------------- variants
    def with_procedure(self, procedure: Procedure | str) -> "Operator":
        """The operator of the same model under another procedure (needs stored logits)."""
        if self.logits is None:
            raise ValueError("this operator was built without keep_logits=True; rebuild it from the model")
        procedure = parse(procedure).validate_for(self.n_tokens)
        probs = _apply_procedure(procedure, self.logits)
        return Operator(self.space, probs, procedure, self.logits, self.model_info)

    def summary(self) -> dict:
        return {
            "space": {"n_tokens": self.space.n_tokens, "length": self.space.length,
                      "prefixes": self.space.prefixes, "num_states": self.num_states},
            "procedure": None if self.procedure is None else self.procedure.spec,
            "max_row_error": self.max_row_error,
            "deterministic": self.is_deterministic,
            "fingerprint": self.fingerprint,
            "model": self.model_info,
        }

    def __repr__(self) -> str:
        proc = self.procedure.spec if self.procedure is not None else "given table"
        return f"Operator({self.space!r}, procedure={proc}, max_row_error={self.max_row_error:.1e})"


@functools.lru_cache(maxsize=256)
def _jitted_procedure(procedure: Procedure):
    """One compiled probabilities() per procedure (procedures are hashable and immutable)."""
    return jax.jit(procedure.probabilities)


def _apply_procedure(procedure: Procedure, logits: np.ndarray, batch: int = _DEFAULT_BATCH * 8) -> np.ndarray:
    """Apply ``procedure`` to a logit table in chunks, float64 out."""
    fn = _jitted_procedure(procedure)
    out = np.empty(logits.shape, dtype=np.float64)
    for start in range(0, logits.shape[0], batch):
        chunk = logits[start:start + batch]
        out[start:start + chunk.shape[0]] = np.asarray(fn(jnp.asarray(chunk)))
    return out


def _check_logits(logits: np.ndarray, contexts: np.ndarray | None, n_tokens: int, k: int,
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


def evaluate_logits(model, space: StateSpace, *, batch_size: int = _DEFAULT_BATCH,
                    progress: bool = False, method: str = "auto") -> np.ndarray:
    """The model's logits for every state of ``space``: float32[num_states, N] (float64 if the model's are).

    ``method``:
      "plain": each group of states of length k is evaluated in chunks of
        ``batch_size`` contexts (the last chunk padded, so each k compiles once);
        a state of length k costs k positions of the model.
      "prefix": shared-prefix build for models that implement
        ``prefix_tree_logits(length, emit, chunk)`` (see semio_jax.model): the
        prefix tree is walked once and each state costs about one position.
      "auto": "prefix" when the model supports it, else "plain".
    """
    if method not in ("auto", "plain", "prefix"):
        raise ValueError(f"unknown evaluation method {method!r}; use auto, plain or prefix")
    has_tree = callable(getattr(model, "prefix_tree_logits", None))
    if method == "prefix" and not has_tree:
        raise ValueError(f"{type(model).__name__} has no prefix_tree_logits(); use method='plain'")
    if method != "plain" and has_tree:
        return _evaluate_prefix_tree(model, space, batch_size, progress)
    n = space.n_tokens
    _check_model_fits(model, space)
    fn = jitted_model(model)
    out = None
    bar = _progress_bar(space.num_states, progress)
    for k, offset in space.iter_groups():
        size = n**k
        b = min(batch_size, size)
        for start in range(0, size, b):
            ctx = space.contexts(k, start, start + b)  # [B, k]
            real = ctx.shape[0]
            if real < b:
                ctx = np.concatenate([ctx, np.zeros((b - real, k), np.int32)], axis=0)  # pad
            raw = np.asarray(jax.device_get(fn(jnp.asarray(ctx))))  # [B, N]
            if raw.ndim != 2 or raw.shape[0] != ctx.shape[0]:  # before slicing off the padding
                _check_logits(raw, ctx, n, k)
            logits = raw[:real]
            _check_logits(logits, ctx[:real], n, k)
            if out is None:
                dtype = np.float64 if logits.dtype == np.float64 else np.float32
                out = np.empty((space.num_states, n), dtype=dtype)
            out[offset + start: offset + start + real] = logits
            bar.update(real)
    bar.close()
    return out


_JITTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def jitted_model(model):
    """``jax.jit`` of the model's call, made once per model object (compiled once per shape).

    Models marked ``jittable = False`` are returned unchanged.
    """
    if not getattr(model, "jittable", True):
        return model
    try:
        fn = _JITTED.get(model)
    except TypeError:  # not weak-referenceable / hashable: jit afresh
        return jax.jit(lambda c: model(c))
    if fn is None:
        ref = weakref.ref(model)  # the cached function must not keep its model alive
        fn = jax.jit(lambda c: ref()(c))
        _JITTED[model] = fn
    return fn


def _check_model_fits(model, space: StateSpace) -> None:
    model_n = getattr(model, "n_tokens", None)
    if model_n is not None and model_n != space.n_tokens:
        raise SpaceMismatchError(f"the model's alphabet has N={model_n} tokens but the state space has "
                                 f"N={space.n_tokens}; build the space with n_tokens={model_n}")
    ctx_len = getattr(model, "context_length", None)
    if ctx_len is not None and space.length > ctx_len:
        raise SpaceMismatchError(f"the space's context length L={space.length} exceeds the model's "
                                 f"context_length={ctx_len}; choose L <= {ctx_len}")


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
    _check_logits(logits, None, n, k, lambda: space.contexts(k, start, start + count))
    return space.group_offsets[k] + start, logits


def _evaluate_prefix_tree(model, space: StateSpace, chunk: int, progress: bool, mesh=None) -> np.ndarray:
    """Shared-prefix evaluation: the model walks its prefix tree and hands over each block.

    With ``mesh`` the model's walk spreads its subtrees over the mesh's devices (its
    ``prefix_tree_logits`` must accept ``mesh=``; see semio_jax.model).
    """
    _check_model_fits(model, space)
    n = space.n_tokens
    out = np.empty((space.num_states, n), dtype=np.float32)
    bar = _progress_bar(space.num_states, progress)

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


def build_operator(model, space: StateSpace, procedure: Procedure | str | None = None, *,
                   batch_size: int = _DEFAULT_BATCH, memory_limit: int | None = None,
                   keep_logits: bool = True, progress: bool = False, method: str = "auto",
                   checkpoint_dir: str | os.PathLike | None = None, mesh=None) -> Operator:
    """Evaluate ``model`` on every state of ``space`` and apply ``procedure``.

    Args:
      model: any callable ``contexts int32[B, k] -> logits[B, N]`` (see semio_jax.model).
      space: the StateSpace (its N must match the model's alphabet).
      procedure: a Procedure or spec string (default: temperature 1).
      batch_size: contexts per model call (bounds memory).
      memory_limit: bytes the operator may use (default: 80% of available memory).
      keep_logits: keep the float32 logits so ``with_procedure`` needs no model.
      progress: show a progress bar.
      method: how the model is evaluated: "auto", "plain" or "prefix" (see evaluate_logits).
      checkpoint_dir: write the logits chunk by chunk under this folder and resume
        from what an interrupted build left there (bitwise the same result; see
        semio_jax.resume). Default: the folder set by ``resume.using_checkpoint_dir``, else none.
      mesh: a ``jax.sharding.Mesh`` (see ``semio_jax.sharding.device_mesh``): spread the
        model calls over its devices (``semio_jax.sharding.build_operator_sharded``: the
        shared-prefix walk over the mesh when the model's walk accepts ``mesh=``, else plain;
        no checkpoints). ``batch_size`` is then per device.

    Raises before any model call: StateSpaceTooLargeError if the operator would
    not fit, InvalidProcedureError for bad parameters. During evaluation:
    NonFiniteLogitsError / LogitsShapeError naming the offending context.
    """
    procedure = parse(procedure if procedure is not None else "temperature=1").validate_for(space.n_tokens)
    if mesh is not None:
        if checkpoint_dir is not None:
            raise ValueError("a sharded build (mesh=...) does not write checkpoints; drop checkpoint_dir")
        from .sharding import build_operator_sharded

        return build_operator_sharded(model, space, procedure, mesh=mesh, batch_size=batch_size,
                                      memory_limit=memory_limit, keep_logits=keep_logits, progress=progress,
                                      method=method)
    check_fits(space, memory_limit, keep_logits)
    from .resume import default_checkpoint_dir, evaluate_logits_resumable

    checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else default_checkpoint_dir()
    if checkpoint_dir is not None:
        logits = evaluate_logits_resumable(model, space, checkpoint_dir, batch_size=batch_size, progress=progress,
                                           method=method)
    else:
        logits = evaluate_logits(model, space, batch_size=batch_size, progress=progress, method=method)
    probs = _apply_procedure(procedure, logits)
    return Operator(space, probs, procedure, logits if keep_logits else None, describe_model(model))


def _progress_bar(total: int, enabled: bool):
    if enabled:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc="evaluating states", unit="state")

    class _Null:
        def update(self, n):
            pass

        def close(self):
            pass

    return _Null()

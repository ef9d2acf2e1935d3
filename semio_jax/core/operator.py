"""The exact transition operator of a model under a sampling procedure: the type alone.

For a :class:`~semio_jax.core.space.StateSpace` S and a model f, the operator is the
row-stochastic table

    probs[s, y] = q(y | s) = procedure(f(tokens(s)))_y,      float64[|S|, N],

together with the successor rule of the space. As a Markov chain on S it moves
from s to succ[s, y] with probability probs[s, y]. It is never stored as a
dense |S| x |S| matrix: the successor structure is implicit (a de Bruijn graph
on T^L plus the prefix tree), and products with distributions are
gathers/reshapes (:meth:`Operator.push`, :meth:`Operator.pull`).

This type is the single hand-off point between models and dynamics: every
analysis takes an :class:`Operator`; nothing downstream calls the model except
the Monte Carlo sampler, which must call it on its actual contexts. Building
one from a model is :func:`semio_jax.build.build_operator`'s job.

Precision and support: logits come from the model (usually float32) and are
promoted to float64 before the procedure is applied. The operator keeps

    log_probs[s, y] = log q(y | s),   float64[|S|, N], -inf exactly off the support,
    probs[s, y]     = exp(log_probs), float64[|S|, N] (may underflow to 0 on the support),
    support[s, y]   = log_probs > -inf, bool: the transition s -> succ[s, y] can happen,

with the support decided exactly from the logits and the procedure (see
:mod:`semio_jax.core.procedure`): a probability of 1e-435 is positive for the
model, its float64 ``probs`` entry is 0, and ``support`` still says the edge is
there, so classes, attractors, periods and basins see it. ``table_rounding`` is
a bound on the relative error of every ``probs`` entry with respect to the
exact probability defined by the float32 logits (0 for a table given
directly: then the table itself is the chain). ``underflow`` says whether some
possible transition is below the float64 range.

Validation: rows of ``probs`` sum to 1 within 1e-12, no NaN, no negative entries,
log-probabilities <= 0 and never +inf or NaN.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from ..errors import LogitsShapeError, NotStochasticError
from .procedure import Procedure, exact_log_probabilities, parse
from .space import StateSpace

__all__ = ["Operator", "apply_procedure", "logit_rounding", "ROW_SUM_TOL", "TINY"]

ROW_SUM_TOL = 1e-12
EPS = float(np.finfo(np.float64).eps)
#: below this a positive float64 is near the subnormal range, where relative rounding bounds fail
TINY = 1e-290
APPLY_BATCH = 65536  # logit rows per compiled procedure call (at most)
#: bytes of one float64 [rows, N] array per procedure call: each call's temporaries (JAX's buffers and
#: numpy's) stay near this size whatever N is; at N = 27 and 65536 rows they were 14 MB each and kept
#: the build's peak about 110 MiB above its output (8192 rows: 10-20 MiB, at the same speed)
APPLY_BYTES = 1 << 21


class Operator:
    """A validated, row-stochastic transition table on a state space.

    Attributes:
      space: the StateSpace.
      probs: float64[num_states, N], read-only; ``probs[s, y] = q(y | s)``.
      log_probs: float64[num_states, N], read-only; log q(y | s), -inf exactly off the support.
      procedure: the sampling procedure that produced it (None if given directly).
      table_rounding: bound on the relative error of each ``probs`` entry (and of exp(log_probs))
        with respect to the exact probabilities of the model's logits (0 for a given table).
      logits: the model's logits float32[num_states, N] when kept (lets
        :meth:`with_procedure` re-derive the operator without the model).
      model_info: JSON-able description of the model.

    The table (``probs`` or ``log_probs``) is copied unless ``copy=False``: then a float64 array is
    taken over as it is and made read-only (the caller must not write to it again); any other
    array or sequence is converted (a copy, as with ``copy=True``).
    """

    def __init__(self, space: StateSpace, probs=None, procedure: Procedure | None = None,
                 logits=None, model_info: dict | None = None, validate: bool = True, *,
                 log_probs=None, table_rounding: float = 0.0, copy: bool = True):
        self.space = space
        table = log_probs if log_probs is not None else probs
        if table is None:
            raise ValueError("give the transition table as probs or as log_probs")
        if np.iscomplexobj(table):
            raise NotStochasticError("the probability table is complex; transition probabilities are real numbers")
        # copy=False: the operator takes over a float64 table nobody else writes to (and makes it
        # read-only), as from_logits does with the table it has just computed: a table less at the peak
        table = np.array(table, dtype=np.float64, copy=True) if copy else np.asarray(table, dtype=np.float64)
        if table.shape != (space.num_states, space.n_tokens):
            raise LogitsShapeError(
                f"probability table has shape {table.shape}, expected "
                f"[num_states, N] = {(space.num_states, space.n_tokens)} for {space!r}"
            )
        if log_probs is not None:
            log_probs, probs = table, np.exp(table)
        else:
            probs = table
            with np.errstate(divide="ignore", invalid="ignore"):
                log_probs = np.log(probs)  # a given table: its zeros are the chain's zeros
        probs.setflags(write=False)
        log_probs.setflags(write=False)
        self.probs = probs
        self.log_probs = log_probs
        self.table_rounding = float(table_rounding)
        self.procedure = procedure
        if logits is not None:
            # a read-only view: the caller's own array keeps its flags (it is not copied: logits can be large)
            logits = np.asarray(logits).view()
            logits.setflags(write=False)
        self.logits = logits
        self.model_info = model_info or {}
        if validate:
            self.validate()

    @classmethod
    def from_logits(cls, space: StateSpace, procedure: Procedure, logits, *, keep_logits: bool = True,
                    model_info: dict | None = None) -> "Operator":
        """The operator of ``procedure`` on a logit table float32[num_states, N]: exact support,
        float64 log-probabilities, and the rounding bound of :func:`logit_rounding`."""
        log_probs = apply_procedure(procedure, np.asarray(logits))
        return cls(space, procedure=procedure, logits=logits if keep_logits else None, model_info=model_info,
                   log_probs=log_probs, table_rounding=logit_rounding(log_probs), copy=False)

    # -------------------------------------------------------------- checks
    def validate(self, tol: float = ROW_SUM_TOL) -> "Operator":
        """Check rows are probability vectors; raise NotStochasticError naming the worst row.

        Done in blocks of APPLY_BATCH rows, so its temporaries stay a block's size, not the table's."""
        p, lp = self.probs, self.log_probs
        worst, worst_dev = 0, -1.0
        for lo in range(0, p.shape[0], APPLY_BATCH):
            pb, lb = p[lo:lo + APPLY_BATCH], lp[lo:lo + APPLY_BATCH]
            if (pb < 0).any():
                s = lo + int(np.argwhere(pb < 0)[0, 0])
                raise NotStochasticError(f"row {s} (state {self.space.label(s)}) has a negative entry: {p[s]}")
            bad = ~np.isfinite(pb) | np.isnan(lb) | np.isposinf(lb)
            if bad.any():
                s = lo + int(np.argwhere(bad)[0, 0])
                raise NotStochasticError(f"row {s} (state {self.space.label(s)}) contains NaN/inf: {p[s]}")
            dev = np.abs(pb.sum(axis=1) - 1.0)
            k = int(np.argmax(dev)) if dev.size else 0
            if dev.size and dev[k] > worst_dev:
                worst, worst_dev = lo + k, float(dev[k])
        if worst_dev > tol:
            raise NotStochasticError(
                f"row {worst} (state {self.space.label(worst)}) sums to {p[worst].sum()!r}, "
                f"off by {worst_dev:.3e} > {tol:g}; normalise the table or check the model's logits"
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
        """int64[num_states, N]: the state reached from s by token y.

        Computed on each access and not kept (it is as large as the probability table):
        successors are arithmetic (``space.successors_of``), and push/pull never need it.
        """
        return self.space.successor_table()

    @cached_property
    def support(self) -> np.ndarray:
        """bool[num_states, N], read-only: whether s -> succ[s, y] can happen (decided from the logits)."""
        out = self.log_probs > -np.inf
        out.setflags(write=False)
        return out

    @cached_property
    def underflow(self) -> bool:
        """True when some possible transition has a probability below the float64 range (``probs`` 0)."""
        return bool(np.any(self.support & (self.probs == 0.0)))

    def tiny_moves(self, states) -> bool:
        """True when some possible move out of ``states`` has a float64 probability below :data:`TINY`
        (underflowed to 0, or too small for relative rounding bounds): float64 solvers cannot see it."""
        return bool(np.any(self._tiny_rows[np.asarray(states, dtype=np.int64)]))

    @cached_property
    def _tiny_rows(self) -> np.ndarray:
        # bool[num_states]: rows with such a move (one pass over the table, kept)
        return np.any(self.support & (self.probs < TINY), axis=1)

    @cached_property
    def is_deterministic(self) -> bool:
        """True when every row puts all mass on one token (a map, e.g. greedy decoding).

        Decided on the support (exactly one possible token per row), not on
        ``max == 1.0``: a row like [1.0, 1e-22] (or [1.0, 1e-435], whose second entry
        underflows to 0.0) still has a second edge, which the class decomposition must see.
        """
        return bool(np.all(np.count_nonzero(self.support, axis=1) == 1))

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
            (self.probs.ravel().copy(), self.successors.ravel(), np.arange(0, s * n + 1, n, dtype=np.int64)),
            shape=(s, s),
        )
        mat.eliminate_zeros()
        return mat

    def block(self, states) -> sp.csr_matrix:
        """P restricted to ``states`` (distinct indices, any order): CSR [m, m], row and column i are
        ``states[i]``, moves leaving the set dropped; the same matrix as ``csr[states][:, states]``.

        Built from the arithmetic successors of the m rows alone (O(m N) memory): unlike slicing
        :attr:`csr` it never builds the whole operator's matrix, which costs about three probability
        tables and stays cached (on a trained 27-token model, a 4856-state class in a 551,880-state
        space: 460 MiB at the peak).
        """
        st, probs, succ = self._moves(states)
        m = st.size
        order = np.argsort(st, kind="stable")
        srt = st[order]
        if m > 1 and not np.all(srt[1:] > srt[:-1]):
            raise ValueError("states must be distinct")
        pos = np.minimum(np.searchsorted(srt, succ), max(m - 1, 0))  # [m, N]: where succ would sit among st
        inside = srt[pos] == succ if m else np.zeros(succ.shape, dtype=bool)
        return _csr_from_moves(probs, np.where(inside, order[pos], -1), m)

    def rows(self, states) -> sp.csr_matrix:
        """The rows of P at ``states``: CSR [m, num_states], row i is ``states[i]``'s law over all
        states (zeros dropped); the same matrix as ``csr[states]``, built from those rows alone
        (O(m N) memory, no whole-operator matrix)."""
        _, probs, succ = self._moves(states)
        return _csr_from_moves(probs, succ, self.num_states)

    def _moves(self, states) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(states int64[m], their rows probs[m, N], successors int64[m, N]), the states range-checked."""
        st = np.asarray(states, dtype=np.int64).ravel()
        if st.size and (st.min() < 0 or st.max() >= self.num_states):
            raise IndexError(f"states must lie in [0, {self.num_states}); got {st.min()}..{st.max()}")
        succ = self.space.successors_of(st[:, None], np.arange(self.n_tokens, dtype=np.int64)[None, :])
        return st, self.probs[st], succ

    def to_scipy(self, fmt: str = "csr") -> sp.spmatrix:
        """The operator as a new scipy.sparse matrix [num_states, num_states] (zero entries dropped)."""
        return self.csr.copy().asformat(fmt)

    def adjacency(self) -> sp.csr_matrix:
        """The support graph of the chain (CSR, entries 1.0): s -> succ[s, y] wherever ``support[s, y]``.

        Unlike :attr:`csr` it keeps the edges whose probability underflows float64.
        """
        s = self.num_states
        src, tok = np.nonzero(self.support)  # row-major: grouped by source state, as CSR wants
        indptr = np.zeros(s + 1, dtype=np.int64)
        np.cumsum(np.count_nonzero(self.support, axis=1), out=indptr[1:])
        # only the possible moves, their successors computed arithmetically (no [S, N] successor table:
        # at N = 32 and 2^20 windows that table alone is 270 MB)
        return sp.csr_matrix((np.ones(src.size), self.space.successors_of(src, tok), indptr), shape=(s, s))

    # ----------------------------------------------------------- products
    def push(self, dist: np.ndarray) -> np.ndarray:
        """One step forward for a row vector: (dist @ P)[t] = sum_{s, y: succ[s,y]=t} dist[s] probs[s, y].

        Accepts float64[num_states] or a batch float64[num_states, m].
        """
        d = np.asarray(dist, dtype=np.float64)
        sp_ = self.space
        n, nf = sp_.n_tokens, sp_.num_full
        tail = d.shape[1:]  # () or (m,)
        sub = "" if d.ndim == 1 else "k"
        out = np.zeros_like(d)
        # Full states: succ(a*M + m, y) = m*N + y, so the image is one contraction over a (no temporaries).
        table = self.probs[:nf].reshape(n, nf // n, n)  # [a, m, y]
        out[:nf] = np.einsum(f"am{sub},amy->my{sub}", d[:nf].reshape(n, nf // n, *tail), table).reshape(nf, *tail)
        # Prefix states of length k feed the group k+1 with the same pattern, no summing.
        for k in range(1, sp_.length) if sp_.prefixes else ():
            src = sp_.group(k)
            dst = sp_.group(k + 1) if k + 1 < sp_.length else range(0, nf)
            flow = np.einsum(f"s{sub},sy->sy{sub}", d[src.start:src.stop], self.probs[src.start:src.stop])
            out[dst.start:dst.stop] += flow.reshape(-1, *tail)
        return out

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

        Accepts float64[num_states] or a batch float64[num_states, m]. Structured like
        :meth:`push`: full state a*M + m reads f at m*N + y (M = N^(L-1)); a prefix state with
        local index l in group k reads group k+1 at l*N + y. No successor table.
        """
        x = np.asarray(f, dtype=np.float64)
        sp_ = self.space
        n, nf = sp_.n_tokens, sp_.num_full
        tail = x.shape[1:]  # () or (m,)
        sub = "" if x.ndim == 1 else "k"
        out = np.empty_like(x)
        table = self.probs[:nf].reshape(n, nf // n, n)  # [a, m, y]
        out[:nf] = np.einsum(f"amy,my{sub}->am{sub}", table, x[:nf].reshape(nf // n, n, *tail)).reshape(nf, *tail)
        for k in range(1, sp_.length) if sp_.prefixes else ():
            src = sp_.group(k)
            dst = sp_.group(k + 1) if k + 1 < sp_.length else range(0, nf)
            out[src.start:src.stop] = np.einsum(
                f"sy,sy{sub}->s{sub}", self.probs[src.start:src.stop], x[dst.start:dst.stop].reshape(-1, n, *tail))
        return out

    # ------------------------------------------------------------- variants
    def with_procedure(self, procedure: Procedure | str) -> "Operator":
        """The operator of the same model under another procedure (needs stored logits)."""
        if self.logits is None:
            raise ValueError("this operator was built without keep_logits=True; rebuild it from the model")
        procedure = parse(procedure).validate_for(self.n_tokens)
        return Operator.from_logits(self.space, procedure, self.logits, model_info=self.model_info)

    def summary(self) -> dict:
        return {
            "space": {"n_tokens": self.space.n_tokens, "length": self.space.length,
                      "prefixes": self.space.prefixes, "num_states": self.num_states},
            "procedure": None if self.procedure is None else self.procedure.spec,
            "max_row_error": self.max_row_error,
            "table_rounding": self.table_rounding,
            "underflow": self.underflow,
            "deterministic": self.is_deterministic,
            "fingerprint": self.fingerprint,
            "model": self.model_info,
        }

    def __repr__(self) -> str:
        proc = self.procedure.spec if self.procedure is not None else "given table"
        return f"Operator({self.space!r}, procedure={proc}, max_row_error={self.max_row_error:.1e})"


def _csr_from_moves(probs: np.ndarray, cols: np.ndarray, width: int) -> sp.csr_matrix:
    """CSR [m, width]: row i holds probs[i, y] at column cols[i, y], for the non-zero entries with a
    column (cols < 0: a move the matrix leaves out); indices sorted, no explicit zeros."""
    keep = (probs != 0.0) & (cols >= 0)  # [m, N]
    rows = np.broadcast_to(np.arange(probs.shape[0])[:, None], probs.shape)[keep]
    out = sp.csr_matrix((probs[keep], (rows, cols[keep])), shape=(probs.shape[0], width))
    out.sort_indices()
    return out


def apply_procedure(procedure: Procedure, logits: np.ndarray, batch: int | None = None) -> np.ndarray:
    """float64 log-probabilities of ``procedure`` on a logit table, in chunks, with the exact support
    (:func:`semio_jax.core.procedure.exact_log_probabilities`). ``batch``: rows per chunk (default:
    APPLY_BYTES of float64 per chunk, at most APPLY_BATCH rows)."""
    if batch is None:
        n = max(int(np.shape(logits)[-1]), 1) if np.ndim(logits) else 1
        batch = int(min(APPLY_BATCH, max(1024, APPLY_BYTES // (8 * n))))
    return exact_log_probabilities(procedure, logits, batch=batch)


def logit_rounding(log_probs: np.ndarray) -> float:
    """Bound on the relative error of exp(log_probs) against the exact probabilities of the logits.

    log q = u - log sum exp(u) with u = (z - max z) / t: the shift and the division round u by
    at most 2 eps |u|, the log-sum-exp by at most (2 max|u| + N + 4) eps, so every entry of
    log q is within delta = (4 max|log q| + 4 log N + 2N + 8) eps of the exact value (|u| <=
    |log q| + log N), and exp(log q) carries a relative error of at most expm1(delta) + eps.
    """
    lp = np.asarray(log_probs)
    finite = np.isfinite(lp)  # (a bool mask: no copy of the table's finite entries)
    n = lp.shape[-1]
    big = max(-float(np.min(lp, where=finite, initial=0.0)), float(np.max(lp, where=finite, initial=0.0)))
    delta = (4.0 * big + 4.0 * np.log(max(n, 1)) + 2 * n + 8) * EPS
    return float(np.expm1(delta) + EPS)

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

Precision: logits come from the model (usually float32) and are promoted to
float64 before the procedure is applied, so the operator is exact with respect
to the model's own logits up to float64 rounding. Validation: rows sum to 1
within 1e-12, no NaN, no negative entries.
"""

from __future__ import annotations

import functools
import hashlib
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from ..errors import LogitsShapeError, NotStochasticError
from .procedure import Procedure, parse
from .space import StateSpace

__all__ = ["Operator", "apply_procedure", "ROW_SUM_TOL"]

ROW_SUM_TOL = 1e-12
APPLY_BATCH = 65536  # logit rows per compiled procedure call


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
        """int64[num_states, N]: the state reached from s by token y.

        Computed on each access and not kept (it is as large as the probability table):
        successors are arithmetic (``space.successors_of``), and push/pull never need it.
        """
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
            (self.probs.ravel().copy(), self.successors.ravel(), np.arange(0, s * n + 1, n, dtype=np.int64)),
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
        probs = apply_procedure(procedure, self.logits)
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


def apply_procedure(procedure: Procedure, logits: np.ndarray, batch: int = APPLY_BATCH) -> np.ndarray:
    """Apply ``procedure`` to a logit table in chunks, float64 out."""
    fn = _jitted_procedure(procedure)
    out = np.empty(logits.shape, dtype=np.float64)
    for start in range(0, logits.shape[0], batch):
        chunk = logits[start:start + batch]
        out[start:start + chunk.shape[0]] = np.asarray(fn(jnp.asarray(chunk)))
    return out

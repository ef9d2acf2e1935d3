"""Transient evolution: the exact law of the chain and of the generated tokens after t steps.

Start from a state distribution d_0 (a state index, a prompt given as a token
list, or a probability vector over the S states). Then

    d_t = d_{t-1} P,   d_t(s') = sum_{s, y: succ(s, y) = s'} d_{t-1}(s) q(y | s),

computed with the structured :meth:`Operator.push` (no matrix is formed).

Generated tokens. Y_t is the t-th token generated after the start (t = 1..n):

* **token marginals**: P(Y_t = y) = sum_s d_{t-1}(s) q(y | s), float64[n, N];
* **n-gram marginals** of order r: the law of the block (Y_{i+1}, ..., Y_{i+r}),
  i = 0..n-r, indexed big-endian (Y_{i+1} is the most significant digit).
  For r <= L the block is exactly the last r tokens of the state after i + r
  steps (a state holds min(prompt length + steps, L) >= r tokens), so it is a
  marginal of d_{i+r}. For r > L the joint law of (state, block so far) is
  pushed token by token (one sparse matrix P_y per token);
* **string distribution**: the law of the whole string (Y_1..Y_n) over the
  N^n strings, big-endian. From a single start state s_0 every string
  determines its state path, so the law is built by expanding one level of
  N children per step: p(w y) = p(w) q(y | state(w)). Refused (with
  :class:`~semio_jax.errors.StateSpaceTooLargeError`) when N^n > 2**20.

Starts (``start`` everywhere in this module, and in the entropy, hitting and
trajectory analyses): an ``int`` is a state index; a 1-d integer sequence is a
prompt (oldest token first; at most L tokens; shorter prompts are prefix
states); a 1-d float array of length S is a distribution (non-negative,
summing to 1 within 1e-9). A distribution start gives the mixture of the laws
from each state.

Everything is float64; the only error is rounding (mass is conserved by
``push`` up to rounding; ``evolve`` reports nothing iterative). Reference
implementations (dense matrix powers and loops over all strings) are kept
beside the kernels as test oracles: :func:`evolve_reference`,
:func:`strings_reference`.
"""

from __future__ import annotations


import numpy as np
import scipy.sparse as sp

from ..errors import NotStochasticError, PromptError, StateSpaceTooLargeError

__all__ = [
    "MAX_STRINGS", "resolve_start", "initial_distribution", "evolve", "token_marginals",
    "ngram_marginals", "string_distribution", "string_label",
]

#: Largest number of strings (N**n) that :func:`string_distribution` enumerates.
MAX_STRINGS = 2**20

_DIST_TOL = 1e-9


# ------------------------------------------------------------------ starts
def resolve_start(op, start) -> tuple[int | None, np.ndarray]:
    """Interpret ``start``: returns (state index or None for a distribution, float64[S] distribution)."""
    s = op.num_states
    if isinstance(start, (bool, np.bool_)):
        raise PromptError(f"start must be a state index, a token list or a distribution, got {start!r}")
    if isinstance(start, (int, np.integer)):
        idx = int(start)
        if not 0 <= idx < s:
            raise IndexError(f"start state {idx} outside [0, {s})")
        d = np.zeros(s)
        d[idx] = 1.0
        return idx, d
    arr = np.asarray(start)
    if arr.ndim == 0 and arr.dtype.kind in "iu":
        return resolve_start(op, int(arr))
    if arr.ndim != 1:
        raise PromptError(f"start must be a state index, a 1-d token list or a 1-d distribution, got shape {arr.shape}")
    if arr.size == 0:
        raise PromptError("a start needs at least one token (the empty context is not a state)")
    if arr.dtype.kind == "f":
        if arr.shape != (s,):
            raise PromptError(
                f"a float start is a distribution over the {s} states, got length {arr.size}; "
                f"pass a prompt as a list of ints"
            )
        d = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(d)) or (d < 0).any():
            raise NotStochasticError("the start distribution has negative or non-finite entries")
        if abs(d.sum() - 1.0) > _DIST_TOL:
            raise NotStochasticError(f"the start distribution sums to {d.sum()!r}, not 1")
        nz = np.flatnonzero(d)
        return (int(nz[0]) if nz.size == 1 and d[nz[0]] == 1.0 else None), d.copy()
    if arr.dtype.kind in "iu":
        idx = op.space.index(arr.astype(np.int64))
        return resolve_start(op, idx)
    raise PromptError(f"cannot interpret a start of dtype {arr.dtype}")


def initial_distribution(op, start) -> np.ndarray:
    """float64[S]: the distribution of the state at time 0 (see module docstring for ``start``)."""
    return resolve_start(op, start)[1]


def _check_steps(n: int, minimum: int = 0) -> int:
    if int(n) != n or n < minimum:
        raise ValueError(f"the number of steps must be an integer >= {minimum}, got {n!r}")
    return int(n)


# ---------------------------------------------------------------- kernels
def evolve(op, start, n: int) -> np.ndarray:
    """float64[n + 1, S]: the state distribution after 0, 1, ..., n steps from ``start``."""
    n = _check_steps(n)
    d = initial_distribution(op, start)
    out = np.empty((n + 1, op.num_states))
    out[0] = d
    for t in range(n):
        d = op.push(d)
        out[t + 1] = d
    return out


def token_marginals(op, start, n: int) -> np.ndarray:
    """float64[n, N]: row t-1 is the distribution of the t-th generated token Y_t."""
    n = _check_steps(n)
    d = initial_distribution(op, start)
    out = np.empty((n, op.n_tokens))
    for t in range(n):
        out[t] = d @ op.probs
        if t + 1 < n:
            d = op.push(d)
    return out


def _last_tokens_code(space, r: int) -> np.ndarray:
    """int64[S]: big-endian code of the last r tokens of each state (-1 for states shorter than r)."""
    code = np.full(space.num_states, -1, dtype=np.int64)
    for k, offset in space.iter_groups():
        if k >= r:
            code[offset: offset + space.n_tokens**k] = np.arange(space.n_tokens**k) % space.n_tokens**r
    return code


def _token_matrices(op) -> list[sp.csr_matrix]:
    """P_y[s, succ(s, y)] = q(y | s), one sparse matrix per token."""
    s = op.num_states
    rows = np.arange(s)
    return [sp.csr_matrix((op.probs[:, y], (rows, op.space.successors_of(rows, y))), shape=(s, s))
            for y in range(op.n_tokens)]


def ngram_marginals(op, start, n: int, order: int) -> np.ndarray:
    """float64[n - order + 1, N**order]: row i is the law of the block (Y_{i+1}, ..., Y_{i+order}).

    Block index big-endian (Y_{i+1} most significant). Needs 1 <= order <= n.
    """
    n = _check_steps(n, 1)
    r = _check_steps(order, 1)
    if r > n:
        raise ValueError(f"order {r} exceeds the number of generated tokens n={n}")
    space = op.space
    big = space.n_tokens**r
    if r <= space.length:
        code = _last_tokens_code(space, r)
        dists = evolve(op, start, n)  # [n+1, S]
        out = np.empty((n - r + 1, big))
        for i in range(n - r + 1):
            d = dists[i + r]
            assert d[code < 0].sum() <= 1e-12, "a state shorter than the block carries mass"
            out[i] = np.bincount(code[code >= 0], weights=d[code >= 0], minlength=big)
        return out
    if op.num_states * big > MAX_STRINGS * 16:
        raise StateSpaceTooLargeError(
            f"n-gram marginals of order {r} > L on {op.num_states} states need {op.num_states * big:.2e} cells; "
            f"use an order <= L={space.length}"
        )
    mats = [m.T.tocsr() for m in _token_matrices(op)]  # push by token: D_new[:, c*N + y] = P_y^T D[:, c]
    dists = evolve(op, start, n - r)
    out = np.empty((n - r + 1, big))
    nt = op.n_tokens
    for i in range(n - r + 1):
        joint = dists[i][:, None]  # [S, 1]
        for _ in range(r):
            new = np.empty((op.num_states, joint.shape[1] * nt))
            for y in range(nt):
                new[:, y::nt] = mats[y] @ joint
            joint = new
        out[i] = joint.sum(axis=0)
    return out


def string_distribution(op, start, n: int) -> np.ndarray:
    """float64[N**n]: exact probability of every generated string Y_1..Y_n (big-endian index).

    Raises StateSpaceTooLargeError if N**n > 2**20 (see :data:`MAX_STRINGS`).
    """
    n = _check_steps(n)
    nt = op.n_tokens
    if nt**n > MAX_STRINGS:
        raise StateSpaceTooLargeError(
            f"the distribution over all N^n = {nt}^{n} = {nt**n:.3e} strings exceeds the limit of "
            f"{MAX_STRINGS} (2**20) strings; use token_marginals / ngram_marginals, or fewer steps"
        )
    _, d = resolve_start(op, start)
    out = np.zeros(nt**n)
    for s0 in np.flatnonzero(d):
        p = np.array([d[s0]])
        states = np.array([s0], dtype=np.int64)
        for _ in range(n):
            p = (p[:, None] * op.probs[states]).ravel()  # child index = parent * N + y
            states = op.space.successors_of(states[:, None], np.arange(op.n_tokens)).ravel()
        out += p
    return out


def string_label(index: int, n_tokens: int, n: int, sep: str | None = None) -> str:
    """The string with big-endian index ``index`` among the N^n strings, as text."""
    digits = np.unravel_index(int(index), (n_tokens,) * n) if n else ()
    sep = ("" if n_tokens <= 10 else ",") if sep is None else sep
    return sep.join(str(int(t)) for t in digits)


# -------------------------------------------------------------- references



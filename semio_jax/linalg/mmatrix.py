"""Non-singular M-matrices I - Q of a chain killed outside a set: building them without cancellation, and
certifying bounds on their inverses.

For a sub-stochastic block Q (the chain restricted to a set it leaves with
positive probability) I - Q is a non-singular M-matrix: its inverse is
entrywise non-negative and (I - Q)^{-1} 1 is the vector of expected exit
(hitting) times. Two facts are used throughout semio_jax:

* **Cancellation-free diagonal.** I - Q is built as diag(exits) - offdiag(Q)
  with exits = the off-diagonal row sums (for a stochastic row, 1 - p_ii), so a
  state that stays put with probability 1 - 1e-20 keeps its true exit rate
  instead of a cancelled 0 (:func:`off_diagonal`).
* **Certified maxima.** If t >= 0 and (I - Q) t >= c 1 with c > 0, then
  (I - Q)^{-1} 1 <= t / c entrywise. Evaluating (I - Q) t in floating point
  with a rounding margin turns any approximate solve into a rigorous upper
  bound on the largest expected hitting time, or into None when the solve is
  too inaccurate to certify anything (:func:`certified_max_time`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["off_diagonal", "killed_generator", "certified_max_time", "EPS"]

EPS = float(np.finfo(np.float64).eps)


def off_diagonal(mat: sp.spmatrix, diag_cols: np.ndarray | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """(mat without its diagonal, its row sums): for a stochastic row the sum is 1 - p_ii.

    I - Q is built as diag(exits) - offdiag(Q) so that a state that stays put with
    probability 1 - 1e-20 (its diagonal rounds to 1.0) keeps its true exit rate
    instead of a cancelled 0 that makes the matrix singular. ``diag_cols``: for a block of
    rows [m, S] of a square matrix, row i's diagonal entry is in column ``diag_cols[i]``.
    """
    if diag_cols is None:
        off = (mat - sp.diags(mat.diagonal())).tocsr()  # x - x == 0 exactly: removes the diagonal
        off.eliminate_zeros()
    else:
        coo = mat.tocoo()
        keep = coo.col != np.asarray(diag_cols, dtype=np.int64)[coo.row]
        off = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=mat.shape)
    return off, np.asarray(off.sum(axis=1)).ravel()


def killed_generator(rows: sp.spmatrix, unknown: np.ndarray) -> sp.csc_matrix:
    """I - Q_UU (CSC [U, U]) from the rows of P at the states ``unknown`` (CSR [U, S], row i is
    state unknown[i]): the chain killed on leaving U, its diagonal without cancellation."""
    off, exits = off_diagonal(rows, unknown)
    return (sp.diags(exits) - off[:, unknown]).tocsc()


def certified_max_time(a_mat, t_hat: np.ndarray) -> float | None:
    """A certified upper bound on max((I - Q)^{-1} 1) from an approximate solve t_hat, or None.

    ``a_mat`` = I - Q is a non-singular M-matrix, so its inverse is entrywise
    non-negative: if t_hat >= 0 and (I - Q) t_hat >= c 1 with c > 0, then
    (I - Q)^{-1} 1 <= t_hat / c. The product is evaluated in floating point, so c
    is taken after a rounding margin. None when t_hat fails the test (a solve
    spoiled by cancellation on a stiff chain): then nothing is certified.
    """
    t = np.asarray(t_hat, dtype=np.float64)
    if t.size == 0:
        return 0.0
    if not np.all(np.isfinite(t)) or t.min() < 0:
        return None
    terms = int(np.diff(a_mat.tocsr().indptr).max()) if sp.issparse(a_mat) else a_mat.shape[1]
    low = a_mat @ t - 2 * (terms + 2) * EPS * (abs(a_mat) @ t)
    c = float(np.min(low))
    return float(np.max(t)) / c if c > 0 else None

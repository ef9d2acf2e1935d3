"""Hypothesis strategies for semio_jax objects (for property-based tests).

Everything here is small on purpose: a generated example must be analysable
by slow, loop-based reference implementations in milliseconds. The
strategies are public so that users can test their own models and extensions
against the engine's invariants::

    from hypothesis import given
    from semio_jax.testing import operators

    @given(operators(kind="multi"))
    def test_rows_sum_to_one(op):
        assert abs(op.probs.sum(axis=1) - 1).max() <= 1e-12

Strategies:
  * :func:`spaces` - :class:`~semio_jax.StateSpace` objects (N <= 3, L <= 4 by default);
  * :func:`procedures` - sampling procedures (temperature, top-k, top-p,
    min-p, greedy and their compositions);
  * :func:`logit_rows` - small float64 logit arrays [B, N] with ties and -inf;
  * :func:`logit_tables` - a float64 logit table [num_states, N] for a space,
    with some -inf but never a whole row of -inf;
  * :func:`ngram_models` - :class:`~semio_jax.NGramModel` with random logits;
  * :func:`operators` - an :class:`~semio_jax.Operator` built from a random
    table under a procedure (``kind`` selects ergodic, deterministic or
    several-attractor operators);
  * :func:`token_permutations` - permutations of the alphabet.

The operator strategy applies the procedure with the slow numpy oracle
:func:`semio_jax.testing.references.probabilities_reference` (fast for small tables and
independent of JAX); the logits are kept on the operator, so
``op.with_procedure`` exercises the engine's own JAX path.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..core.model import NGramModel
from ..core.operator import Operator
from ..core.procedure import Procedure, compose, greedy, min_p, temperature, top_k, top_p
from .references import probabilities_reference
from ..core.space import StateSpace

__all__ = [
    "spaces",
    "procedures",
    "logit_rows",
    "logit_tables",
    "ngram_models",
    "operators",
    "token_permutations",
    "OPERATOR_KINDS",
]

NEG_INF = -math.inf

#: Values of ``kind`` accepted by :func:`operators`.
OPERATOR_KINDS = ("any", "ergodic", "deterministic", "multi", "leaky")

# A few "round" logits that make exact ties likely.
_TIE_VALUES = (0.0, 1.0, -1.0, 2.5)


def _count_states(n: int, length: int, prefixes: bool) -> int:
    return n**length + (sum(n**k for k in range(1, length)) if prefixes else 0)


# ----------------------------------------------------------------- spaces
@st.composite
def spaces(draw, max_tokens: int = 3, max_length: int = 4, prefixes: bool | None = None,
           min_tokens: int = 1, min_length: int = 1, max_states: int = 200) -> StateSpace:
    """A StateSpace with ``min_tokens <= N <= max_tokens`` and ``min_length <= L <= max_length``.

    ``prefixes=None`` draws it; ``max_states`` caps the number of states (the
    context length is lowered for large alphabets, never below ``min_length``).
    """
    n = draw(st.integers(min_tokens, max_tokens))
    pre = draw(st.booleans()) if prefixes is None else bool(prefixes)
    top = min_length
    while top < max_length and _count_states(n, top + 1, pre) <= max_states:
        top += 1
    length = draw(st.integers(min_length, top))
    return StateSpace(n, length, pre)


# ------------------------------------------------------------- procedures
def _temperatures():
    return st.one_of(
        st.sampled_from([0.25, 0.5, 0.8, 1.0, 1.5, 3.0]),
        st.floats(0.05, 20.0, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    )


def _unit_interval():
    """Values in (0, 1]: round ones (1.0 included) and arbitrary floats."""
    return st.one_of(
        st.sampled_from([0.1, 0.5, 0.9, 1.0]),
        st.floats(0.001, 1.0, allow_nan=False, allow_subnormal=False),
    )


@st.composite
def procedures(draw, n_tokens: int | None = None, allow_greedy: bool = True, max_top_k: int = 8) -> Procedure:
    """A sampling procedure: greedy, or any composition of temperature / top_k / top_p / min_p.

    With ``n_tokens`` the top-k parameter is valid for that alphabet (1 <= k <= N).
    """
    if allow_greedy and draw(st.integers(0, 7)) == 0:
        return greedy()
    parts = []
    if draw(st.booleans()):
        parts.append(temperature(draw(_temperatures())))
    if draw(st.booleans()):
        parts.append(top_k(draw(st.integers(1, n_tokens if n_tokens is not None else max_top_k))))
    if draw(st.booleans()):
        parts.append(top_p(draw(_unit_interval())))
    if draw(st.booleans()):
        parts.append(min_p(draw(_unit_interval())))
    return compose(*parts)


# ----------------------------------------------------------------- logits
def _logit_elements(allow_neg_inf: bool, scale: float):
    finite = st.floats(-scale, scale, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    ties = st.sampled_from(_TIE_VALUES)
    options = [finite, finite, finite, ties]
    if allow_neg_inf:
        options.append(st.just(NEG_INF))
    return st.one_of(*options)


def _revive_dead_rows(table: np.ndarray) -> np.ndarray:
    """Give every all--inf row one finite logit (at a column that depends on the row)."""
    dead = np.flatnonzero(np.all(np.isneginf(table), axis=-1))
    for r in dead:
        table[r, r % table.shape[-1]] = 0.0
    return table


@st.composite
def logit_rows(draw, n_tokens: int | None = None, max_tokens: int = 6, max_batch: int = 4,
               min_batch: int = 1, allow_neg_inf: bool = True, scale: float = 30.0) -> np.ndarray:
    """float64 logits [B, N] (min_batch <= B <= max_batch) with ties and -inf, never a row of only -inf.

    (Fix ``min_batch == max_batch`` to limit the number of distinct shapes, each of
    which costs JAX a compilation.)
    """
    n = n_tokens if n_tokens is not None else draw(st.integers(1, max_tokens))
    b = draw(st.integers(min_batch, max_batch))
    table = draw(hnp.arrays(np.float64, (b, n), elements=_logit_elements(allow_neg_inf, scale), fill=st.nothing()))
    return _revive_dead_rows(np.array(table, dtype=np.float64))


@st.composite
def logit_tables(draw, space: StateSpace, allow_neg_inf: bool = True, scale: float = 10.0) -> np.ndarray:
    """float64 logits [num_states, N] for ``space``: some -inf, never a whole row of -inf."""
    shape = (space.num_states, space.n_tokens)
    table = draw(hnp.arrays(np.float64, shape, elements=_logit_elements(allow_neg_inf, scale), fill=st.nothing()))
    return _revive_dead_rows(np.array(table, dtype=np.float64))


# ----------------------------------------------------------------- models
@st.composite
def ngram_models(draw, n_tokens: int | None = None, max_tokens: int = 3, order: int | None = None,
                 max_order: int = 2, allow_neg_inf: bool = True, scale: float = 5.0,
                 context_length: int | None = None) -> NGramModel:
    """An NGramModel with random logits of shape [N]*order + [N] (no row entirely -inf)."""
    n = n_tokens if n_tokens is not None else draw(st.integers(1, max_tokens))
    k = order if order is not None else draw(st.integers(0, max_order))
    shape = (n,) * (k + 1)
    flat = draw(hnp.arrays(np.float64, (n**k, n), elements=_logit_elements(allow_neg_inf, scale), fill=st.nothing()))
    table = _revive_dead_rows(np.array(flat, dtype=np.float64)).reshape(shape)
    return NGramModel(table, context_length=context_length)


# -------------------------------------------------------------- operators
def _split_mask(space: StateSpace, groups: np.ndarray) -> np.ndarray:
    """bool[num_states, N]: token y is allowed after state s iff group[y] == group[last token of s]."""
    allowed = np.ones((space.num_states, space.n_tokens), dtype=bool)
    for k, offset in space.iter_groups():
        last = np.arange(space.n_tokens**k) % space.n_tokens  # the newest token is the last digit
        allowed[offset: offset + space.n_tokens**k] = groups[last][:, None] == groups[None, :]
    return allowed


@st.composite
def operators(draw, kind: str = "any", spaces_strategy=None, procedure_strategy=None,
              allow_neg_inf: bool = True, scale: float = 10.0) -> Operator:
    """An Operator built from a random logit table under a procedure.

    Args:
      kind: ``"any"`` (anything), ``"ergodic"`` (finite logits, temperature
        only: a single attractor made of every full state), ``"deterministic"``
        (greedy or top_k=1 decoding: a map, attractors are its cycles) or
        ``"multi"`` (N >= 2; the alphabet is split into >= 2 groups and every
        token outside the group of the newest token gets logit -inf, so each
        group's windows form at least one attractor of their own; prefix
        states may keep every token, which makes their basins non-trivial) or
        ``"leaky"`` (nearly deterministic, as at a low temperature: in each
        row one token's logit exceeds the others by a gap of 20..60, so the
        other tokens keep probabilities from 2e-9 down to 1e-26 and the top
        one often rounds to exactly 1.0 although the row has several edges).
      spaces_strategy: strategy for the StateSpace (default: ``spaces()``).
      procedure_strategy: a function ``n_tokens -> strategy`` of procedures
        (default: :func:`procedures`, restricted as ``kind`` requires).
      allow_neg_inf: allow -inf entries in the random table.
      scale: logits lie in [-scale, scale] (large scales give slowly mixing,
        nearly decomposable chains).

    The operator keeps its logits, so ``op.with_procedure`` works on it.
    """
    if kind not in OPERATOR_KINDS:
        raise ValueError(f"kind must be one of {OPERATOR_KINDS}, got {kind!r}")
    if spaces_strategy is None:
        spaces_strategy = spaces(min_tokens=2) if kind == "multi" else spaces()
    space = draw(spaces_strategy)
    n = space.n_tokens
    if kind == "multi" and n < 2:
        raise ValueError("kind='multi' needs spaces with at least 2 tokens")
    table = draw(logit_tables(space, allow_neg_inf=allow_neg_inf and kind != "ergodic", scale=scale))
    if kind == "leaky":
        top = np.array(draw(st.lists(st.integers(0, n - 1), min_size=space.num_states,
                                     max_size=space.num_states)), dtype=np.int64)
        gaps = np.array(draw(st.lists(st.sampled_from([20.0, 30.0, 37.0, 40.0, 45.0, 60.0]),
                                      min_size=space.num_states, max_size=space.num_states)))
        table = np.clip(table, -1.0, 1.0)  # jitter (and -inf where allowed)
        table[np.arange(space.num_states), top] = gaps + draw(st.floats(-1.0, 1.0))
    if kind == "multi":
        n_groups = draw(st.integers(2, n))
        groups = np.array(draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n)))
        groups[:n_groups] = np.arange(n_groups)  # every group non-empty
        groups = groups[np.array(draw(st.permutations(range(n))))]
        allowed = _split_mask(space, groups)
        if space.prefixes and draw(st.booleans()):
            allowed[space.num_full:] = True  # prefix states may choose any group
        # Inside the allowed set keep the table's values but make sure one entry is finite.
        finite_fallback = np.where(allowed, 0.0, NEG_INF)
        table = np.where(allowed, table, NEG_INF)
        dead = np.all(np.isneginf(table), axis=1)
        table[dead] = finite_fallback[dead]
    if procedure_strategy is not None:
        proc = draw(procedure_strategy(n))
    elif kind == "ergodic":
        proc = temperature(draw(_temperatures()))
    elif kind == "leaky":
        proc = temperature(1.0)
    elif kind == "deterministic":
        proc = draw(st.sampled_from([greedy(), top_k(1)]))
        if not proc.greedy and draw(st.booleans()):
            proc = compose(proc, temperature(draw(_temperatures())))
    else:
        proc = draw(procedures(n))
    probs = probabilities_reference(proc, table)
    return Operator(space, probs, proc, logits=table)


# ---------------------------------------------------------- permutations
def token_permutations(n: int):
    """Permutations of the alphabet {0..n-1} as int64 arrays (perm[y] = new id of token y)."""
    return st.permutations(list(range(n))).map(lambda p: np.asarray(p, dtype=np.int64))

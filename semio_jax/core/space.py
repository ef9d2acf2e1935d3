"""State spaces: token sequences over the alphabet T = {0..N-1} and their indices.

Conventions (every array in semio_jax follows them):

* A **full state** is a window x = (x_1, ..., x_L) of exactly L tokens, oldest
  token first. Its index is ``sum_i x_i * N**(L-i)`` (big-endian: the oldest
  token is the most significant digit). Full states occupy indices
  ``[0, N**L)``.
* A **prefix state** is a sequence of k tokens with 1 <= k <= L-1 (a partially
  specified state: the first k tokens of a generation). With ``prefixes=True``
  they follow the full states, grouped by length k = 1, 2, ..., L-1; inside a
  group the order is the same big-endian order. Group k starts at
  ``N**L + (N + N**2 + ... + N**(k-1))``.
* The **successor** of a full state x under token y is (x_2, ..., x_L, y)
  (sliding window); of a prefix state of length k it is the length-k+1 state
  (x_1, ..., x_k, y), which is a full state when k+1 == L.

So for a full state with index i, ``succ(i, y) = (i mod N**(L-1)) * N + y``:
the successor structure of T^L is a de Bruijn graph, and it is never stored as
a matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Sequence

import numpy as np

from ..errors import PromptError, StateSpaceTooLargeError, UnknownTokenError

__all__ = ["StateSpace", "MAX_STATES"]

# Hard ceiling on the number of states any StateSpace may describe; memory
# budgets for operators are checked separately (operator.estimate_memory).
MAX_STATES = 2**40


@dataclass(frozen=True)
class StateSpace:
    """The states T^L (and optionally the prefix states of lengths 1..L-1).

    Args:
      n_tokens: alphabet size N >= 1.
      length: context length L >= 1.
      prefixes: include the prefix states after the full states.
    """

    n_tokens: int
    length: int
    prefixes: bool = True

    def __post_init__(self):
        if int(self.n_tokens) != self.n_tokens or self.n_tokens < 1:
            raise ValueError(f"n_tokens must be a positive integer, got {self.n_tokens!r}")
        if int(self.length) != self.length or self.length < 1:
            raise ValueError(f"length (context length L) must be a positive integer, got {self.length!r}")
        n = _count_states(self.n_tokens, self.length, self.prefixes)
        if n > MAX_STATES:
            raise StateSpaceTooLargeError(
                f"StateSpace(n_tokens={self.n_tokens}, length={self.length}) has {n:.3e} states, "
                f"more than semio_jax can index (2**40); choose a smaller alphabet or context length"
            )

    # ----------------------------------------------------------------- sizes
    @property
    def num_full(self) -> int:
        """Number of full states, N**L."""
        return self.n_tokens**self.length

    @property
    def num_states(self) -> int:
        """Total number of states (full states first, then prefix groups)."""
        return _count_states(self.n_tokens, self.length, self.prefixes)

    @property
    def num_prefix(self) -> int:
        return self.num_states - self.num_full

    def __len__(self) -> int:
        return self.num_states

    @cached_property
    def group_offsets(self) -> dict[int, int]:
        """Map state length k -> index of its first state (k == L for the full states)."""
        offsets = {self.length: 0}
        if self.prefixes:
            start = self.num_full
            for k in range(1, self.length):
                offsets[k] = start
                start += self.n_tokens**k
        return offsets

    def group(self, k: int) -> range:
        """Indices of the states of length k."""
        if k not in self.group_offsets:
            raise PromptError(f"no states of length {k} in {self} (lengths: {sorted(self.group_offsets)})")
        start = self.group_offsets[k]
        return range(start, start + self.n_tokens**k)

    @property
    def lengths(self) -> list[int]:
        """Lengths of the state groups in index order: L first, then 1..L-1."""
        return [self.length] + (list(range(1, self.length)) if self.prefixes else [])

    # -------------------------------------------------------------- encoding
    def _check_tokens(self, tokens: np.ndarray) -> None:
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.n_tokens):
            bad = tokens[(tokens < 0) | (tokens >= self.n_tokens)].ravel()[0]
            raise UnknownTokenError(
                f"token {int(bad)} is outside the alphabet {{0..{self.n_tokens - 1}}} of this space"
            )

    def index(self, tokens: Sequence[int] | np.ndarray) -> int:
        """Index of the state whose tokens (oldest first) are ``tokens``."""
        arr = np.asarray(tokens, dtype=np.int64).ravel()
        k = arr.size
        if k == 0:
            raise PromptError("a state needs at least one token (the empty context is not a state)")
        if k > self.length:
            raise PromptError(
                f"a prompt of {k} tokens is longer than the context length L={self.length}; "
                f"pass its last {self.length} tokens (the window the model sees)"
            )
        if k < self.length and not self.prefixes:
            raise PromptError(f"a prompt of {k} < L={self.length} tokens is a prefix state, but this space has prefixes=False")
        self._check_tokens(arr)
        value = 0
        for t in arr:
            value = value * self.n_tokens + int(t)
        return self.group_offsets[k] + value

    def indices(self, tokens: np.ndarray) -> np.ndarray:
        """Vectorised ``index`` for a batch of equal-length sequences int[B, k]."""
        arr = np.asarray(tokens, dtype=np.int64)
        if arr.ndim != 2:
            raise ValueError(f"expected tokens of shape [B, k], got {arr.shape}")
        k = arr.shape[1]
        if not 1 <= k <= self.length or (k < self.length and not self.prefixes):
            raise PromptError(f"sequences of length {k} are not states of {self}")
        self._check_tokens(arr)
        weights = self.n_tokens ** np.arange(k - 1, -1, -1, dtype=np.int64)  # [k]
        return self.group_offsets[k] + arr @ weights  # [B]

    def length_of(self, index: int) -> int:
        """Number of tokens of the state with this index."""
        self._check_index(index)
        if index < self.num_full:
            return self.length
        for k in range(1, self.length):
            start = self.group_offsets[k]
            if index < start + self.n_tokens**k:
                return k
        raise AssertionError("unreachable")

    def tokens(self, index: int) -> np.ndarray:
        """Tokens (oldest first) of the state with this index, int64[k]."""
        k = self.length_of(int(index))
        value = int(index) - self.group_offsets[k]
        return _digits(np.array([value]), self.n_tokens, k)[0]

    def contexts(self, k: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tokens of the states of length k with group-local indices [start, stop): int32[B, k]."""
        size = self.n_tokens**k
        stop = size if stop is None else min(stop, size)
        values = np.arange(start, stop, dtype=np.int64)  # [B]
        return _digits(values, self.n_tokens, k).astype(np.int32)  # [B, k]

    def iter_groups(self) -> Iterator[tuple[int, int]]:
        """(k, offset) for each group of states, in index order."""
        for k in self.lengths:
            yield k, self.group_offsets[k]

    def label(self, index: int, alphabet: Sequence[str] | None = None) -> str:
        """A readable name for a state: its tokens joined (``alphabet`` maps ids to strings)."""
        toks = self.tokens(index)
        if alphabet is not None:
            return "".join(str(alphabet[t]) for t in toks)
        sep = "" if self.n_tokens <= 10 else ","
        return sep.join(str(t) for t in toks)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_states:
            raise IndexError(f"state index {index} outside [0, {self.num_states})")

    # ------------------------------------------------------------- successor
    def successor(self, index: int, token: int) -> int:
        """Index of the state reached from ``index`` by appending ``token``."""
        self._check_index(int(index))
        if not 0 <= token < self.n_tokens:
            raise UnknownTokenError(f"token {token} is outside the alphabet {{0..{self.n_tokens - 1}}}")
        return int(self.successors_of(int(index), int(token)))

    def successors_of(self, states, tokens) -> np.ndarray:
        """int64 array (states and tokens broadcast): the successor of each state under each token.

        Arithmetic, nothing stored: a full state i moves to (i mod N^(L-1)) N + y; a prefix
        state with local index l in group k moves to offset(k+1) + l N + y. Indices are not
        range-checked (vectorised callers pass valid ones; :meth:`successor` checks).
        """
        s = np.asarray(states, dtype=np.int64)
        y = np.asarray(tokens, dtype=np.int64)
        n, nf = self.n_tokens, self.num_full
        out = np.asarray((s % n ** (self.length - 1)) * n + y)  # the full-state rule
        if not self.prefixes or self.length == 1:
            return out
        pre = np.broadcast_to(s >= nf, out.shape)
        if not pre.any():
            return out
        # the prefix states' rule, on them alone (a few per cent of the states: no temporaries the
        # size of the whole broadcast)
        sp_, yp = np.broadcast_to(s, out.shape)[pre], np.broadcast_to(y, out.shape)[pre]
        starts = np.array([self.group_offsets[k] for k in range(1, self.length)], dtype=np.int64)  # [L-1]
        nexts = np.array([self.group_offsets[k + 1] for k in range(1, self.length)], dtype=np.int64)  # [L-1]
        g = np.searchsorted(starts, sp_, side="right") - 1  # group of each prefix state
        out[pre] = nexts[g] + (sp_ - starts[g]) * n + yp  # (out is the fresh result of the rule above)
        return out

    def successor_table(self) -> np.ndarray:
        """int64[num_states, N]: ``table[s, y]`` is the successor of state s under token y.

        Computed on each call (as large as a probability table, so never cached); kernels
        use the arithmetic of :meth:`successors_of` or the structured products instead.
        """
        table = self.successors_of(np.arange(self.num_states, dtype=np.int64)[:, None],
                                   np.arange(self.n_tokens, dtype=np.int64)[None, :])  # [S, N]
        table.setflags(write=False)
        return table

    def __repr__(self) -> str:
        return (
            f"StateSpace(n_tokens={self.n_tokens}, length={self.length}, prefixes={self.prefixes}; "
            f"{self.num_full} full + {self.num_prefix} prefix states)"
        )


def _count_states(n: int, length: int, prefixes: bool) -> int:
    full = n**length
    if not prefixes:
        return full
    return full + sum(n**k for k in range(1, length))


def _digits(values: np.ndarray, base: int, k: int) -> np.ndarray:
    """Big-endian base-`base` digits of `values`: int64[B] -> int64[B, k]."""
    out = np.empty((values.shape[0], k), dtype=np.int64)
    v = values.copy()
    for pos in range(k - 1, -1, -1):
        out[:, pos] = v % base
        v //= base
    return out

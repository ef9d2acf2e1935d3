"""Data sources with exact statistics, for training and for judging trained models.

A *source* is a stationary ergodic process over the alphabet T = {0 .. N-1}.
Every source here is a *unifilar hidden-state* process: a finite hidden state
s in {0 .. S-1} emits token y with probability ``emit[s, y]`` and then moves to
the state ``next_state[s, y]``, which the token determines. Hence

    M[y][s, s'] = emit[s, y] * [next_state[s, y] == s']      (substochastic, S x S)
    P           = sum_y M[y]                                  (hidden transition matrix)
    pi          = the unique probability vector with pi P = pi

and, for the stationary process (hidden state at time 0 drawn from pi):

    P(x_1 .. x_k)      = pi M[x_1] M[x_2] ... M[x_k] 1            (forward algorithm)
    entropy rate h     = sum_s pi(s) H(emit[s, :])                 (unifilar => exact)
    H(X_k | X_<k)      = H(X_1..X_k) - H(X_1..X_{k-1})  ->  h  as k -> infinity.

Conventions
-----------
* Windows are indexed big-endian, oldest token most significant:
  index(x_1 .. x_k) = sum_i x_i N^(k-i), so ``window_probs(k).reshape([N]*k)``
  has axes in time order and marginalising the newest token of window k+1 is
  ``window_probs(k+1).reshape(-1, N).sum(1)``.
* Entropies are in nats. ``window_probs`` is exact up to float64 rounding.
* ``sample`` draws every sequence from the stationary process (its hidden
  state at time 0 from pi), so sample windows follow ``window_probs``.
* ``next_token_probs(contexts)`` is the exact P(y | context) of the stationary
  process (context oldest first, any length >= 0); a context of probability 0
  has no conditional and its row is NaN.

Sources: ``CoinSource`` (i.i.d. coin, N = 2), ``MarkovSource`` (order-m chain,
hidden state = last m tokens), ``DyckSource`` (bounded Dyck-1 words separated
by '|', hidden state = nesting depth), and ``CorpusSource``, the empirical
process of a corpus read as a cycle (``text:PATH``, ``tokens:PATH``, ``pydoc``;
loading in ``corpus``, characters in ``alphabet``). ``parse_source`` reads CLI
strings such as ``coin:p=0.6``, ``markov:n_tokens=4,order=2,seed=0``,
``dyck:max_depth=3``, ``text:notes.txt``; ``source_from_spec`` rebuilds a source
from its ``spec()`` dict (a corpus re-read and checked against its SHA-256).
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
from scipy.special import xlogy

from semio_jax.errors import DataError, StateSpaceTooLargeError, UnknownTokenError

from .alphabet import Alphabet
from .corpus import load_pydoc, load_text, load_tokens

__all__ = [
    "Source",
    "FiniteStateSource",
    "CoinSource",
    "MarkovSource",
    "DyckSource",
    "CorpusSource",
    "text_source",
    "tokens_source",
    "pydoc_source",
    "source_from_spec",
    "parse_source",
    "entropy",
    "stationary_distribution",
]

MAX_WINDOW_CELLS = 2**26  # largest forward table (windows x hidden states) window_probs builds
MAX_HIDDEN_STATES = 4096  # largest hidden state space a source may have


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of probability vectors along ``axis`` (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    return -xlogy(p, p).sum(axis=axis)


def _as_generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise ValueError(f"rng must be an int seed or a numpy Generator, got {rng!r}")
    return np.random.default_rng(int(rng))


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def _check_prob(name: str, value: Any, *, open_interval: bool) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    ok = (0.0 < value < 1.0) if open_interval else (0.0 <= value <= 1.0)
    if not ok:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def _all_windows(n_tokens: int, k: int) -> np.ndarray:
    """int32 [N**k, k]: every window in big-endian index order."""
    idx = np.arange(n_tokens**k, dtype=np.int64)
    powers = n_tokens ** np.arange(k - 1, -1, -1, dtype=np.int64)  # [k]
    return ((idx[:, None] // powers[None, :]) % n_tokens).astype(np.int32)


def stationary_distribution(P: np.ndarray) -> np.ndarray:
    """The unique stationary row vector of the stochastic matrix P (ValueError if not unique)."""
    S = P.shape[0]
    if S == 1:
        return np.ones(1)
    basis = scipy.linalg.null_space(P.T - np.eye(S))  # [S, dim]
    if basis.shape[1] != 1:
        raise ValueError(
            f"the hidden chain has {basis.shape[1]} independent stationary distributions "
            "(it is reducible): the stationary process is not unique"
        )
    pi = basis[:, 0] / basis[:, 0].sum()
    if pi.min() < -1e-10:
        raise ValueError("stationary distribution has negative entries: the chain is not valid")
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


# -----------------------------------------------------------------------------
# Base classes


class Source(abc.ABC):
    """A stationary process over {0 .. n_tokens-1} with exact statistics."""

    n_tokens: int

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short human-readable name, e.g. ``coin(p=0.5)``."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able dict with a ``kind`` key; ``source_from_spec`` rebuilds the source."""

    @abc.abstractmethod
    def sample(self, rng: Any, n_seqs: int, length: int) -> np.ndarray:
        """int32 [n_seqs, length]: independent stretches of the stationary process."""

    @property
    @abc.abstractmethod
    def entropy_rate(self) -> float:
        """lim_k H(X_k | X_1 .. X_{k-1}) in nats (exact)."""

    @abc.abstractmethod
    def window_probs(self, k: int) -> np.ndarray:
        """float64 [N**k]: P(x_1 .. x_k) for every window, big-endian index."""

    @abc.abstractmethod
    def next_token_probs(self, contexts: Any) -> np.ndarray:
        """float64 [B, N]: exact P(y | context) for int contexts [B, k] (NaN row if P(context) = 0)."""

    def window_entropy(self, k: int) -> float:
        """H(X_1 .. X_k) in nats (0 for k = 0)."""
        return float(entropy(self.window_probs(k))) if k > 0 else 0.0

    def conditional_entropy(self, k: int) -> float:
        """H(X_k | X_1 .. X_{k-1}) in nats, k >= 1: the best achievable loss with k-1 tokens of context."""
        k = _check_int("k", k, 1)
        return self.window_entropy(k) - self.window_entropy(k - 1)

    #: False for a source whose entropy rate a finite description does not fix (a corpus).
    exact_entropy_rate: bool = True

    def context_table(self, L: int) -> tuple[np.ndarray, np.ndarray]:
        """(contexts int32 [C, L], joint float64 [C, N]): every context of probability > 0 and P(context, y)."""
        N = self.n_tokens
        joint = self.window_probs(L + 1).reshape(N**L, N)  # [N^L, N]
        live = np.flatnonzero(joint.sum(1) > 0)  # [C]
        return _all_windows(N, L)[live], joint[live]

    def exact_loss_cells(self, L: int) -> int:
        """How many (context, next token) cells an exact loss with context length L evaluates."""
        return self.n_tokens ** (L + 1)

    def cli_string(self) -> str:
        """A string that ``parse_source`` maps back to an equal source."""
        spec = self.spec()
        kind = spec.pop("kind")
        if any(isinstance(v, (list, dict)) for v in spec.values()):
            raise ValueError(f"{self.name} has no CLI string (it has a table parameter)")
        if not spec:
            return kind
        return kind + ":" + ",".join(f"{k}={v!r}" for k, v in spec.items())

    def _check_contexts(self, contexts: Any) -> np.ndarray:
        x = np.asarray(contexts)
        if x.ndim != 2:
            raise ValueError(f"contexts must have shape [B, k], got shape {x.shape}")
        if x.size and not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"contexts must be integers, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.n_tokens):
            bad = x[(x < 0) | (x >= self.n_tokens)].ravel()[0]
            raise UnknownTokenError(f"token id {int(bad)} is outside the alphabet 0..{self.n_tokens - 1}")
        return x.astype(np.int64)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Source) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(json.dumps(self.spec(), sort_keys=True))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class FiniteStateSource(Source):
    """A unifilar hidden-state source given by ``emit`` [S, N] and ``next_state`` [S, N]."""

    def __init__(self, n_tokens: int, emit: np.ndarray, next_state: np.ndarray):
        emit = np.asarray(emit, dtype=np.float64)
        next_state = np.asarray(next_state, dtype=np.int64)
        S = emit.shape[0]
        if S > MAX_HIDDEN_STATES:
            raise StateSpaceTooLargeError(
                f"the source has {S} hidden states, more than the limit {MAX_HIDDEN_STATES}"
            )
        assert emit.shape == (S, n_tokens) and next_state.shape == (S, n_tokens)
        assert np.allclose(emit.sum(1), 1.0) and (emit >= 0).all()
        assert ((0 <= next_state) & (next_state < S)).all()
        self.n_tokens = int(n_tokens)
        self.n_states = S
        self.emit = emit  # [S, N]
        self.next_state = next_state  # [S, N]
        onehot = np.eye(S)[next_state]  # [S, N, S]
        self.M = (emit[:, :, None] * onehot).transpose(1, 0, 2)  # [N, S, S]
        self.P = self.M.sum(0)  # [S, S]
        self.pi = stationary_distribution(self.P)  # [S]
        # Inverse-CDF table for sampling; 1.0 from each row's last possible
        # token on, so rounding can never produce a token of probability 0.
        cdf = np.cumsum(emit, axis=1)  # [S, N]
        N = self.n_tokens
        last = N - 1 - np.argmax(emit[:, ::-1] > 0, axis=1)  # [S] last token of probability > 0
        cdf[np.arange(N)[None, :] >= last[:, None]] = 1.0
        self._cdf = cdf
        self._window_cache: dict[int, np.ndarray] = {}

    @property
    def entropy_rate(self) -> float:
        return float(self.pi @ entropy(self.emit, axis=1))

    def sample(self, rng: Any, n_seqs: int, length: int) -> np.ndarray:
        rng = _as_generator(rng)
        n_seqs = _check_int("n_seqs", n_seqs, 0)
        length = _check_int("length", length, 0)
        s = rng.choice(self.n_states, size=n_seqs, p=self.pi)  # [B] hidden state at time 0
        out = np.empty((n_seqs, length), dtype=np.int32)  # [B, T]
        for t in range(length):
            u = rng.random(n_seqs)  # [B]
            y = (u[:, None] >= self._cdf[s]).sum(1)  # [B] inverse CDF
            out[:, t] = y
            s = self.next_state[s, y]
        return out

    def window_probs(self, k: int) -> np.ndarray:
        k = _check_int("k", k, 0)
        if k not in self._window_cache:
            self._window_cache[k] = self._compute_window_probs(k)
        return self._window_cache[k].copy()

    def _compute_window_probs(self, k: int) -> np.ndarray:
        return self._forward_window_probs(k)

    def _forward_window_probs(self, k: int) -> np.ndarray:
        """Forward algorithm over every window: alpha[w, s] = P(window w, hidden state s after it)."""
        N, S = self.n_tokens, self.n_states
        if N**k * S > MAX_WINDOW_CELLS:
            raise StateSpaceTooLargeError(
                f"{N}^{k} windows x {S} hidden states exceed the limit of {MAX_WINDOW_CELLS} cells"
            )
        alpha = self.pi[None, :]  # [1, S]
        for _ in range(k):
            alpha = np.einsum("ws,yst->wyt", alpha, self.M).reshape(-1, S)  # [W*N, S]
        return alpha.sum(1)  # [N**k]

    def next_token_probs(self, contexts: Any) -> np.ndarray:
        x = self._check_contexts(contexts)  # [B, k]
        B, k = x.shape
        rows = np.arange(B)
        belief = np.broadcast_to(self.pi, (B, self.n_states)).copy()  # [B, S] unnormalised filter
        for t in range(k):
            y = x[:, t]  # [B]
            w = belief * self.emit[:, y].T  # [B, S]
            belief = np.zeros_like(belief)
            np.add.at(belief, (rows[:, None], self.next_state[:, y].T), w)  # [B, S]
            z = belief.sum(1, keepdims=True)
            belief = np.divide(belief, z, out=np.zeros_like(belief), where=z > 0)
        probs = belief @ self.emit  # [B, N]
        probs[belief.sum(1) == 0] = np.nan
        return probs


# -----------------------------------------------------------------------------
# Concrete sources


class CoinSource(FiniteStateSource):
    """I.i.d. coin flips over {0, 1}: token 1 (heads) with probability ``p_heads``."""

    def __init__(self, p_heads: float = 0.5):
        self.p_heads = _check_prob("p_heads", p_heads, open_interval=False)
        p = self.p_heads
        super().__init__(2, emit=[[1.0 - p, p]], next_state=[[0, 0]])

    @property
    def name(self) -> str:
        return f"coin(p={self.p_heads:g})"

    def spec(self) -> dict[str, Any]:
        return {"kind": "coin", "p_heads": self.p_heads}


class MarkovSource(FiniteStateSource):
    """Order-m Markov chain over {0 .. N-1}.

    ``kernel[x_{t-m}, ..., x_{t-1}, y] = P(x_t = y | previous m tokens)``, oldest
    index first, a float64 array of shape [N]*m + [N] whose last axis sums to 1.
    Without ``kernel``, each of the N^m rows is drawn from a symmetric Dirichlet
    with parameter ``concentration`` using ``np.random.default_rng(seed)``
    (seed 0 if not given); a small concentration (say 0.3) gives peaked rows,
    i.e. a chain with strongly preferred transitions.

    The hidden state is the last m tokens, index big-endian in [0, N^m); the
    stationary distribution of that chain is the law of m consecutive tokens.
    """

    def __init__(
        self,
        n_tokens: int,
        order: int = 1,
        kernel: Any = None,
        seed: int | None = None,
        concentration: float = 1.0,
    ):
        N = _check_int("n_tokens", n_tokens, 2)
        m = _check_int("order", order, 1)
        if N**m > MAX_HIDDEN_STATES:
            raise StateSpaceTooLargeError(
                f"an order-{m} chain over {N} tokens has {N**m} states, more than {MAX_HIDDEN_STATES}"
            )
        self.order = m
        if kernel is None:
            self.seed = 0 if seed is None else _check_int("seed", seed, 0)
            c = concentration
            if isinstance(c, bool) or not isinstance(c, (int, float, np.number)) or not c > 0:
                raise ValueError(f"concentration must be a number > 0, got {c!r}")
            self.concentration = float(c)
            rng = np.random.default_rng(self.seed)
            table = rng.dirichlet(np.full(N, self.concentration), size=N**m)  # [N^m, N]
            self._explicit_kernel = False
        else:
            if seed is not None:
                raise ValueError("give either kernel= or seed= (a random kernel), not both")
            table = np.asarray(kernel, dtype=np.float64)
            if table.shape != (N,) * m + (N,):
                raise ValueError(
                    f"kernel must have shape {(N,) * m + (N,)} for n_tokens={N}, order={m}; "
                    f"got {table.shape}"
                )
            if not np.isfinite(table).all() or (table < 0).any():
                raise ValueError("kernel entries must be finite and >= 0")
            sums = table.sum(-1)
            if not np.allclose(sums, 1.0, rtol=0, atol=1e-9):
                worst = np.unravel_index(np.argmax(np.abs(sums - 1)), sums.shape)
                raise ValueError(
                    f"kernel rows must sum to 1; row {tuple(int(i) for i in worst)} sums to {sums[worst]!r}"
                )
            table = (table / sums[..., None]).reshape(N**m, N)
            self.seed = None
            self.concentration = None
            self._explicit_kernel = True
        self.kernel = table.reshape((N,) * m + (N,))  # [N]*m + [N]
        states = np.arange(N**m)
        next_state = (states[:, None] * N + np.arange(N)[None, :]) % (N**m)  # [N^m, N]
        super().__init__(N, emit=table, next_state=next_state)

    @property
    def name(self) -> str:
        if self._explicit_kernel:
            return f"markov(n={self.n_tokens},order={self.order},kernel)"
        return f"markov(n={self.n_tokens},order={self.order},seed={self.seed},alpha={self.concentration:g})"

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": "markov", "n_tokens": self.n_tokens, "order": self.order}
        if self._explicit_kernel:
            spec["kernel"] = self.kernel.tolist()
        else:
            spec["seed"] = self.seed
            spec["concentration"] = self.concentration
        return spec

    def _compute_window_probs(self, k: int) -> np.ndarray:
        """Direct formula: the law of m tokens is pi; each further token multiplies by the kernel."""
        N, m = self.n_tokens, self.order
        if N**k > MAX_WINDOW_CELLS:
            raise StateSpaceTooLargeError(f"{N}^{k} windows exceed the limit of {MAX_WINDOW_CELLS}")
        if k <= m:
            return self.pi.reshape(N**k, N ** (m - k)).sum(1)  # [N^k]
        w = self.pi  # [N^m]
        table = self.emit  # [N^m, N]
        for _ in range(k - m):
            w = (w.reshape(-1, N**m, 1) * table[None]).reshape(-1)  # [N^(j+1)]
        return w


class DyckSource(FiniteStateSource):
    """Bounded Dyck-1 words separated by '|': tokens 0 = '(', 1 = ')', 2 = '|'.

    Hidden state: the nesting depth d in {0 .. max_depth}.
      d = 0:             '(' w.p. p_open (-> 1), '|' otherwise (stay 0)
      0 < d < max_depth: '(' w.p. p_open (-> d+1), ')' otherwise (-> d-1)
      d = max_depth:     ')' (-> d-1)
    """

    OPEN, CLOSE, SEP = 0, 1, 2

    def __init__(self, max_depth: int = 3, p_open: float = 0.5):
        D = self.max_depth = _check_int("max_depth", max_depth, 1)
        p = self.p_open = _check_prob("p_open", p_open, open_interval=True)
        emit = np.zeros((D + 1, 3))
        next_state = np.tile(np.arange(D + 1)[:, None], (1, 3))  # unused moves stay put
        for d in range(D + 1):
            if d < D:
                emit[d, self.OPEN], next_state[d, self.OPEN] = p, d + 1
            if d == 0:
                emit[d, self.SEP] = 1.0 - p
            elif d < D:
                emit[d, self.CLOSE], next_state[d, self.CLOSE] = 1.0 - p, d - 1
            else:
                emit[d, self.CLOSE], next_state[d, self.CLOSE] = 1.0, d - 1
        super().__init__(3, emit=emit, next_state=next_state)

    @property
    def name(self) -> str:
        return f"dyck(depth={self.max_depth},p={self.p_open:g})"

    def spec(self) -> dict[str, Any]:
        return {"kind": "dyck", "max_depth": self.max_depth, "p_open": self.p_open}


class CorpusSource(Source):
    """The empirical process of a token sequence x_0 .. x_{T-1} read as a cycle.

    P(w_1 .. w_k) = #{t in 0..T-1 : x_{t+j mod T} = w_{j+1}, j < k} / T: window laws are
    frequencies among the T cyclic windows, hence consistent and stationary.
    ``conditional_entropy(k)``, the corpus's empirical H(X_k | X_<k), is the least
    cross-entropy on the corpus of any model with k-1 tokens of context (and the
    entropy rate of the maximum-likelihood order-(k-1) Markov chain); it falls
    towards 0 as k grows, so a corpus has no exact entropy rate (``entropy_rate``
    raises DataError). ``sample`` reads ``length`` tokens cyclically from uniform
    start positions. Window codes are big-endian int64 (N^k < 2^62). ``alphabet``
    prints tokens as text; ``corpus`` is the provenance for model cards.
    """

    exact_entropy_rate = False

    def __init__(self, tokens: Any, n_tokens: int, *, spec: dict[str, Any], name: str,
                 alphabet: Alphabet | None = None, corpus: dict[str, Any] | None = None):
        N = _check_int("n_tokens", n_tokens, 2)
        x = np.asarray(tokens)
        if x.ndim != 1 or x.size < 2 or not np.issubdtype(x.dtype, np.integer):
            raise DataError(f"a corpus is a 1-D integer array of at least 2 tokens, got {x.dtype} {x.shape}")
        if x.min() < 0 or x.max() >= N:
            raise UnknownTokenError(f"corpus token ids span {int(x.min())}..{int(x.max())}, outside 0..{N - 1}")
        self.tokens = x.astype(np.int32)  # [T]
        self.n_tokens = N
        self.alphabet = alphabet
        self.corpus = dict(corpus or {})
        self._spec, self._name = dict(spec), name
        self._counts: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def name(self) -> str:
        return self._name

    def spec(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._spec))

    def cli_string(self) -> str:
        kind = self._spec["kind"]
        return kind if kind == "pydoc" else f"{kind}:{self._spec['path']}"

    @property
    def entropy_rate(self) -> float:
        raise DataError("a corpus has no exact entropy rate; conditional_entropy(k) gives its empirical "
                        "H(X_k | X_<k) at each context length")

    def _power_check(self, k: int) -> None:
        if self.n_tokens**k >= 2**62:
            raise StateSpaceTooLargeError(
                f"windows of {k} tokens over {self.n_tokens} symbols do not fit an int64 code")

    def window_counts(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct window codes int64 [W], their counts int64 [W]) among the T cyclic k-windows."""
        k = _check_int("k", k, 1)
        if k not in self._counts:
            self._power_check(k)
            T, N = self.tokens.size, self.n_tokens
            codes = np.zeros(T, dtype=np.int64)  # [T] code of the window starting at t
            for j in range(k):
                codes = codes * N + np.roll(self.tokens, -j)
            self._counts[k] = np.unique(codes, return_counts=True)
        return self._counts[k]

    def _decode(self, codes: np.ndarray, k: int) -> np.ndarray:
        powers = self.n_tokens ** np.arange(k - 1, -1, -1, dtype=np.int64)  # [k]
        return ((codes[:, None] // powers[None, :]) % self.n_tokens).astype(np.int32)  # [W, k]

    def window_probs(self, k: int) -> np.ndarray:
        k = _check_int("k", k, 0)
        N = self.n_tokens
        if k == 0:
            return np.ones(1)
        if N**k > MAX_WINDOW_CELLS:
            raise StateSpaceTooLargeError(f"{N}^{k} windows exceed the limit of {MAX_WINDOW_CELLS} (use window_counts)")
        codes, counts = self.window_counts(k)
        out = np.zeros(N**k)
        out[codes] = counts / self.tokens.size
        return out

    def window_entropy(self, k: int) -> float:
        if k == 0:
            return 0.0
        return float(entropy(self.window_counts(k)[1] / self.tokens.size))

    def context_table(self, L: int) -> tuple[np.ndarray, np.ndarray]:
        N = self.n_tokens
        codes, counts = self.window_counts(L + 1)
        ctx, inverse = np.unique(codes // N, return_inverse=True)  # [C], [W]
        joint = np.zeros((ctx.size, N))  # [C, N]
        joint[inverse, codes % N] = counts / self.tokens.size
        return self._decode(ctx, L), joint

    def exact_loss_cells(self, L: int) -> int:
        return self.window_counts(L)[0].size * self.n_tokens if L > 0 else self.n_tokens

    def sample(self, rng: Any, n_seqs: int, length: int) -> np.ndarray:
        rng = _as_generator(rng)
        n_seqs = _check_int("n_seqs", n_seqs, 0)
        length = _check_int("length", length, 0)
        T = self.tokens.size
        starts = rng.integers(0, T, size=n_seqs)  # [B]
        return self.tokens[(starts[:, None] + np.arange(length)[None, :]) % T]  # [B, length]

    def next_token_probs(self, contexts: Any) -> np.ndarray:
        x = self._check_contexts(contexts)  # [B, k]
        B, k = x.shape
        N = self.n_tokens
        self._power_check(k + 1)
        ctx = np.zeros(B, dtype=np.int64)
        for j in range(k):
            ctx = ctx * N + x[:, j]
        codes, counts = self.window_counts(k + 1)
        want = ctx[:, None] * N + np.arange(N)[None, :]  # [B, N]
        pos = np.minimum(np.searchsorted(codes, want), codes.size - 1)
        found = np.where(codes[pos] == want, counts[pos], 0).astype(np.float64)  # [B, N]
        total = found.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, found / total, np.nan)


def text_source(path: str | Path, alphabet: Alphabet | str | None = None, sha256: str | None = None) -> CorpusSource:
    """A character-level corpus from a UTF-8 file (``alphabet``: an Alphabet, or the CLI's --alphabet string)."""
    return CorpusSource(**load_text(path, alphabet, sha256))


def tokens_source(path: str | Path, n_tokens: int | None = None, sha256: str | None = None) -> CorpusSource:
    """A corpus of integer token ids (see ``corpus.read_tokens``); N = ``n_tokens`` or the largest id + 1."""
    return CorpusSource(**load_tokens(path, n_tokens, sha256))


def pydoc_source(alphabet: Alphabet | str | None = "letters", sha256: str | None = None) -> CorpusSource:
    """CPython's documentation text (``corpus.pydoc_text``) read in ``alphabet`` (default: letters and space)."""
    return CorpusSource(**load_pydoc(alphabet, sha256))


def _corpus_from_spec(spec: dict[str, Any]) -> CorpusSource:
    """Rebuild a corpus source; DataError if the file (or this Python's pydoc text) differs from the spec's hash."""
    kind = spec["kind"]
    allowed = {"text": {"path", "sha256", "alphabet"}, "tokens": {"path", "sha256", "n_tokens"},
               "pydoc": {"sha256", "python", "alphabet"}}[kind]
    unknown = sorted(set(spec) - allowed - {"kind"})
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for source {kind!r}; allowed: {sorted(allowed)}")
    alpha = Alphabet.from_dict(spec["alphabet"]) if "alphabet" in spec else None
    if kind == "text":
        return text_source(spec["path"], alpha, spec.get("sha256"))
    if kind == "tokens":
        return tokens_source(spec["path"], spec.get("n_tokens"), spec.get("sha256"))
    return pydoc_source(alpha or "letters", spec.get("sha256"))


# -----------------------------------------------------------------------------
# Specs and CLI strings

_KINDS: dict[str, type[Source]] = {"coin": CoinSource, "markov": MarkovSource, "dyck": DyckSource}
_ALIASES: dict[str, dict[str, str]] = {
    "coin": {"p": "p_heads", "p_heads": "p_heads"},
    "markov": {
        "n_tokens": "n_tokens", "n": "n_tokens", "order": "order", "seed": "seed",
        "concentration": "concentration", "alpha": "concentration",
    },
    "dyck": {"max_depth": "max_depth", "depth": "max_depth", "p_open": "p_open", "p": "p_open"},
}
_CORPUS_KINDS = ("text", "tokens", "pydoc")  # text:PATH, tokens:PATH, pydoc (CorpusSource)


def source_from_spec(spec: dict[str, Any]) -> Source:
    """Rebuild a source from ``Source.spec()``; ValueError for an unknown kind or key."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"a source spec is a dict with a 'kind' key, got {spec!r}")
    kind = spec["kind"]
    if kind in _CORPUS_KINDS:
        return _corpus_from_spec(spec)
    if kind not in _KINDS:
        raise ValueError(f"unknown source kind {kind!r}; known kinds: {sorted(_KINDS) + list(_CORPUS_KINDS)}")
    params = {k: v for k, v in spec.items() if k != "kind"}
    allowed = set(_ALIASES[kind].values()) | ({"kernel"} if kind == "markov" else set())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for source {kind!r}; allowed: {sorted(allowed)}")
    return _KINDS[kind](**params)


def _parse_value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    raise ValueError(f"cannot read {text!r} as a number")


def parse_source(text: str, alphabet: str | Alphabet | None = None) -> Source:
    """Parse ``kind`` or ``kind:key=value,key=value`` (e.g. ``markov:n_tokens=4,order=2,seed=0``).

    Corpora: ``text:PATH`` (characters of a UTF-8 file in ``alphabet``: ``file``,
    the default, ``letters``, or the symbols), ``tokens:PATH`` (integer token
    ids, see ``corpus.read_tokens``) and ``pydoc`` (CPython's documentation
    text, default alphabet ``letters``). ``alphabet`` is an error for other kinds.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a source string is expected, e.g. 'coin:p=0.6', got {text!r}")
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    if alphabet is not None and kind not in ("text", "pydoc"):
        raise ValueError(f"an alphabet applies to text:PATH and pydoc sources, not to {kind!r}")
    if kind in ("text", "tokens"):
        if not rest:
            raise ValueError(f"the {kind} source needs a file: {kind}:PATH")
        return text_source(rest, alphabet) if kind == "text" else tokens_source(rest)
    if kind == "pydoc":
        if rest:
            raise ValueError(f"the pydoc source takes no parameters, got {rest!r}")
        return pydoc_source(alphabet or "letters")
    if kind not in _KINDS:
        raise ValueError(f"unknown source kind {kind!r} in {text!r}; "
                         f"known kinds: {sorted(_KINDS) + list(_CORPUS_KINDS)}")
    spec: dict[str, Any] = {"kind": kind}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"expected key=value in source string {text!r}, got {item!r}")
        if key not in _ALIASES[kind]:
            raise ValueError(
                f"unknown parameter {key!r} for source {kind!r}; allowed: {sorted(_ALIASES[kind])}"
            )
        name = _ALIASES[kind][key]
        if name in spec:
            raise ValueError(f"parameter {name!r} given twice in {text!r}")
        try:
            spec[name] = _parse_value(value.strip())
        except ValueError as e:
            raise ValueError(f"bad value for {key!r} in source string {text!r}: {e}") from None
    return source_from_spec(spec)

"""Trajectories: the probability of a token string, and the most probable strings under several decoders.

From a start state s_0, a string y_1..y_n has probability

    P(y_1..y_n | s_0) = prod_t q(y_t | s_{t-1}),   s_t = succ(s_{t-1}, y_t),

reported as a log-probability (natural log, a sum of float64 logs) and as the
linear probability exp(log P). From a start *distribution* d the probability
is sum_s d(s) P(y | s) (computed with log-sum-exp).

Decoders (all from a single start state, n tokens):

* **MAP** (:func:`map_trajectory`): the exact most probable string, by
  max-product dynamic programming over the whole state space in log space.
  The backward Bellman recursion

      V_n(s) = 0,   V_t(s) = max_y [log q(y|s) + V_{t+1}(succ(s, y))],

  costs n |S| N operations (instead of N^n strings); max_y P(y | s_0) =
  exp V_0(s_0), and the string is read forwards by taking at each step the
  maximising token, ties to the lowest token id, which yields the
  lexicographically smallest most probable string. Memory: one token per
  (t, s) pair (uint8/uint16/int32 by alphabet size).
* **greedy** (:func:`greedy_trajectory`): y_t = argmax_y q(y | s_{t-1}),
  ties to the lowest id.
* **beam search** (:func:`beam_search`): keep the ``width`` best prefixes by
  log-probability (ties broken by the lexicographically smaller string);
  expand every kept prefix by every token of positive probability; return the
  best complete string. Width 1 is greedy; width >= N^(n-1) is exhaustive.

Guarantees tested in tests/test_trajectories.py: log P(MAP) >= log P(beam)
and >= log P(greedy) for every width; beam(width=1) == greedy; MAP equals a
brute-force maximum over all N^n strings (:func:`map_reference`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import PromptError, StateSpaceTooLargeError, UnknownTokenError
from .evolution import resolve_start

__all__ = ["Trajectory", "DecoderComparison", "trajectory_probability", "map_trajectory", "greedy_trajectory",
           "beam_search", "compare_decoders", "MAX_BELLMAN_CELLS"]

#: Largest n * |S| for the Bellman table of :func:`map_trajectory`.
MAX_BELLMAN_CELLS = 2**30


@dataclass(frozen=True)
class Trajectory:
    """A generated string and its exact probability.

    Attributes:
      tokens: int64[n], the generated tokens (the prompt excluded).
      log_prob: natural log of its probability from the start (-inf if impossible).
      start: the start state (None for a distribution start).
      decoder: which decoder produced it ("given", "map", "greedy", "beam(w)").
    """

    tokens: np.ndarray
    log_prob: float
    start: int | None = None
    decoder: str = "given"

    @property
    def prob(self) -> float:
        """The linear probability exp(log_prob)."""
        return math.exp(self.log_prob) if self.log_prob > -math.inf else 0.0

    @property
    def log2_prob(self) -> float:
        return self.log_prob / math.log(2.0)

    def text(self, n_tokens: int | None = None) -> str:
        sep = "" if (n_tokens or 0) <= 10 else ","
        return sep.join(str(int(t)) for t in self.tokens)

    def to_dict(self) -> dict:
        return {"decoder": self.decoder, "start": self.start, "tokens": [int(t) for t in self.tokens],
                "log_prob": self.log_prob, "prob": self.prob}


def _logq(op) -> np.ndarray:
    cache = op.__dict__.setdefault("_analysis_cache", {})
    key = ("log_probs", ())
    if key not in cache:
        with np.errstate(divide="ignore"):
            lq = np.log(op.probs)
        lq.setflags(write=False)
        cache[key] = lq
    return cache[key]


def _single_start(op, start, what: str) -> int:
    s0, _ = resolve_start(op, start)
    if s0 is None:
        raise PromptError(f"{what} needs a single start state (an index or a prompt), not a distribution")
    return s0


def _check_tokens(op, tokens) -> np.ndarray:
    toks = np.asarray(tokens, dtype=np.int64).ravel()
    if toks.size and (toks.min() < 0 or toks.max() >= op.n_tokens):
        raise UnknownTokenError(f"tokens must lie in 0..{op.n_tokens - 1}, got {toks.tolist()}")
    return toks


def trajectory_probability(op, start, tokens) -> Trajectory:
    """Exact probability of generating ``tokens`` after ``start`` (index, prompt or distribution)."""
    s0, d = resolve_start(op, start)
    toks = _check_tokens(op, tokens)
    lq = _logq(op)
    support = np.flatnonzero(d)
    states = support.copy()
    logs = np.log(d[support])
    for y in toks:
        logs = logs + lq[states, y]  # left fold, t = 1..n
        states = op.space.successors_of(states, y)
    m = logs.max() if logs.size else -np.inf
    if s0 is not None:
        total = float(logs[0])
    elif m == -np.inf:
        total = -math.inf
    else:
        total = float(m + np.log(np.sum(np.exp(logs - m))))
    return Trajectory(tokens=toks, log_prob=total, start=s0, decoder="given")


def _bellman_dtype(n_tokens: int):
    return np.uint8 if n_tokens <= 2**8 else (np.uint16 if n_tokens <= 2**16 else np.int32)


def map_trajectory(op, start, n: int) -> Trajectory:
    """The exact most probable n-token continuation (max-product DP; ties to the lowest token id)."""
    s0 = _single_start(op, start, "map_trajectory")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    s = op.num_states
    if n * s > MAX_BELLMAN_CELLS:
        raise StateSpaceTooLargeError(
            f"the Bellman table needs n * |S| = {n} * {s} = {n * s:.2e} cells (> {MAX_BELLMAN_CELLS:.1e}); "
            f"use beam_search for long horizons"
        )
    lq = _logq(op)
    succ = op.space.successor_table()  # [S, N], needed whole by the Bellman sweep
    choice = np.empty((n, s), dtype=_bellman_dtype(op.n_tokens))
    v = np.zeros(s)
    for t in range(n - 1, -1, -1):
        cand = lq + v[succ]  # [S, N]: log q(y|s) + V_{t+1}(succ(s, y))
        best = np.argmax(cand, axis=1)  # first maximiser = lowest token id
        choice[t] = best
        v = cand[np.arange(s), best]
    tokens = np.empty(n, dtype=np.int64)
    state = s0
    for t in range(n):
        tokens[t] = choice[t, state]
        state = succ[state, tokens[t]]
    return Trajectory(tokens=tokens, log_prob=float(v[s0]), start=s0, decoder="map")


def greedy_trajectory(op, start, n: int) -> Trajectory:
    """Greedy decoding for n steps from a start state: argmax q(.|s) each step, ties to the lowest id."""
    s0 = _single_start(op, start, "greedy_trajectory")
    lq = _logq(op)
    tokens = np.empty(int(n), dtype=np.int64)
    state, logp = s0, 0.0
    for t in range(int(n)):
        y = int(np.argmax(op.probs[state]))
        tokens[t] = y
        logp += lq[state, y]
        state = int(op.space.successors_of(state, y))
    return Trajectory(tokens=tokens, log_prob=float(logp), start=s0, decoder="greedy")


def beam_search(op, start, n: int, width: int, return_all: bool = False):
    """Beam search of the given width for n steps from a start state.

    Returns the best Trajectory (or, with ``return_all``, the final beam as a
    list of Trajectories, best first). Ties in log-probability go to the
    lexicographically smaller string.
    """
    s0 = _single_start(op, start, "beam_search")
    width = int(width)
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    n = int(n)
    lq = _logq(op)
    states = np.array([s0], dtype=np.int64)
    scores = np.zeros(1)
    toks = np.zeros((1, 0), dtype=np.int64)
    for _ in range(n):
        cand = scores[:, None] + lq[states]  # [B, N]
        beam_idx, y = np.nonzero(np.isfinite(cand))  # row-major: beam order, then token id
        cs = cand[beam_idx, y]
        ctoks = np.concatenate([toks[beam_idx], y[:, None]], axis=1)  # [M, t+1]
        keys = [ctoks[:, j] for j in range(ctoks.shape[1] - 1, -1, -1)] + [-cs]
        order = np.lexsort(keys)[:width]  # by score desc, then lexicographic
        states = op.space.successors_of(states[beam_idx[order]], y[order])
        scores = cs[order]
        toks = ctoks[order]
    beams = [Trajectory(tokens=toks[i].copy(), log_prob=float(scores[i]), start=s0, decoder=f"beam({width})")
             for i in range(toks.shape[0])]
    return beams if return_all else beams[0]


@dataclass
class DecoderComparison:
    """MAP, greedy and beam-search strings from one start, with their exact probabilities."""

    start: int
    n: int
    width: int
    map: Trajectory
    greedy: Trajectory
    beam: Trajectory
    n_tokens: int

    def rows(self) -> list[dict]:
        return [t.to_dict() for t in (self.map, self.beam, self.greedy)]

    def summary(self) -> dict:
        return {"start": self.start, "n": self.n, "width": self.width, "decoders": self.rows(),
                "greedy_is_map": bool(np.array_equal(self.greedy.tokens, self.map.tokens)),
                "beam_is_map": bool(np.array_equal(self.beam.tokens, self.map.tokens))}

    def table(self) -> str:
        lines = [f"{'decoder':<10} {'string':<24} {'log P':>12} {'P':>12}"]
        for t in (self.map, self.beam, self.greedy):
            lines.append(f"{t.decoder:<10} {t.text(self.n_tokens)[:24]:<24} {t.log_prob:>12.6f} {t.prob:>12.6g}")
        return "\n".join(lines)


def compare_decoders(op, start, n: int, width: int = 4) -> DecoderComparison:
    """MAP vs beam search (given width) vs greedy for n tokens from a start state."""
    s0 = _single_start(op, start, "compare_decoders")
    return DecoderComparison(start=s0, n=int(n), width=int(width), map=map_trajectory(op, s0, n),
                             greedy=greedy_trajectory(op, s0, n), beam=beam_search(op, s0, n, width),
                             n_tokens=op.n_tokens)


# -------------------------------------------------------------- references


"""Estimators from rollouts, with standard errors that respect Markov correlation.

Successive states of one chain are correlated, so the naive standard error of a
time average is wrong. semio_jax uses **independent replicas**: C chains with
independent seeds and independent starting states; each chain yields one time
average Y_c of the observable, the estimate is the mean of the Y_c and its
standard error is sd(Y_c) / sqrt(C). The Y_c are i.i.d., so this is valid
whatever the autocorrelation inside a chain (the error bars already contain it),
and (Y - mu) / se follows Student's t with C - 1 degrees of freedom for
approximately normal Y_c (long chains, by the Markov-chain CLT).

Every stationary observable used here (state occupation, token and n-gram
frequencies) is a linear function of the per-chain visit counts of the full
states, which is what :func:`sample_occupation` records. It also records the
transitions (state, next token) of every chain, sparsely, for the transition
tests of :func:`semio_jax.agreement.check_stationary`.

Absorption experiments (:func:`sample_absorption`) run independent chains from
one start until they enter an attractor or reach a horizon; the outcome counts
are multinomial, so their error bars are exact binomial ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from dataclasses import dataclass, field

import numpy as np

from ..errors import StateSpaceTooLargeError
from ..core.procedure import parse
from ..core.space import StateSpace
from .rollout import Sampler

__all__ = ["ReplicaEstimate", "replica_mean", "OccupationSample", "AbsorptionSample",
           "sample_occupation", "sample_absorption", "window_indices", "batch_means_se",
           "HittingSample", "sample_hitting", "sequence_log_probs", "stream_state_path"]

_MAX_COUNT_CELLS = 2**27  # C * N^L counters (1 GiB of int64)


@dataclass
class ReplicaEstimate:
    """Mean over independent replicas with its standard error.

    Attributes:
      value: float64[d], the mean of the per-replica values.
      se: float64[d], their standard deviation / sqrt(C).
      n_replicas: C.
      per_replica: float64[C, d].
    """

    value: np.ndarray
    se: np.ndarray
    n_replicas: int
    per_replica: np.ndarray = field(repr=False)


def replica_mean(per_replica: np.ndarray) -> ReplicaEstimate:
    """Mean and standard error over axis 0 of ``per_replica`` [C, d]."""
    x = np.asarray(per_replica, dtype=np.float64)
    c = x.shape[0]
    se = x.std(axis=0, ddof=1) / np.sqrt(c) if c > 1 else np.full(x.shape[1:], np.inf)
    return ReplicaEstimate(value=x.mean(axis=0), se=se, n_replicas=c, per_replica=x)


def batch_means_se(series: np.ndarray, n_batches: int = 20) -> float:
    """Standard error of the mean of one correlated series by non-overlapping batch means."""
    x = np.asarray(series, dtype=np.float64)
    b = x.size // n_batches
    if b < 1:
        raise ValueError(f"a series of {x.size} values is too short for {n_batches} batches")
    means = x[: b * n_batches].reshape(n_batches, b).mean(axis=1)
    return float(means.std(ddof=1) / np.sqrt(n_batches))


def window_indices(history: np.ndarray, n_tokens: int, length: int) -> np.ndarray:
    """Full-state index of every length-L window of each row: int[C, T] -> int64[C, T - L + 1]."""
    h = np.asarray(history, dtype=np.int64)
    if h.shape[1] < length:
        return np.zeros((h.shape[0], 0), dtype=np.int64)
    weights = n_tokens ** np.arange(length - 1, -1, -1, dtype=np.int64)  # [L]
    windows = np.lib.stride_tricks.sliding_window_view(h, length, axis=1)  # [C, W, L]
    return windows @ weights  # [C, W]


def _stream_states(sampler: Sampler, prompts: np.ndarray, n_steps: int, seed: int, chunk: int):
    """Yield (t_first, idx[C, w]): full-state indices after t_first, t_first+1, ... generated tokens."""
    length, n = sampler.context_length, sampler.n_tokens
    k0 = prompts.shape[1]
    tail = prompts.astype(np.int64)
    t_end = 0  # generated tokens consumed so far
    for ys in sampler.generate(prompts, n_steps, seed, chunk):
        hist = np.concatenate([tail, ys], axis=1)
        new = ys.shape[1]
        idx = window_indices(hist, n, length)  # windows ending anywhere in hist
        # keep only windows that end on a newly generated token
        keep = min(new, idx.shape[1])
        t_end += new
        if keep:
            yield t_end - keep + 1, idx[:, idx.shape[1] - keep:]
        tail = hist[:, max(0, hist.shape[1] - (length - 1)):] if length > 1 else hist[:, :0]
    del k0


@dataclass
class OccupationSample:
    """Per-chain visit counts of the full states over n_steps steps after burn-in.

    Attributes:
      space: the StateSpace.
      counts: int64[C, N^L]; counts[c, s] = number of steps t in (burn_in, burn_in + n_steps]
        at which chain c was in full state s.
      n_steps, burn_in, seed: the run's parameters.
      starts: int64[C], starting full states.
      procedure: the procedure's spec.
      transition_keys, transition_counts: the transitions made, sparse (None when not
        recorded): ``transition_keys`` int64[K], sorted ascending, distinct, each
        ``(c * N^L + s) * N + y`` for chain c drawing token y in full state s at one of the
        steps burn_in + 1 .. burn_in + n_steps (the state before the step: the start or an
        earlier counted state); ``transition_counts`` int64[K] > 0, how often. Chain-major
        order, so the first c chains are a prefix (:meth:`head`). At most
        min(C * n_steps, C * N^(L+1)) entries, whatever the size of the space.
    """

    space: StateSpace
    counts: np.ndarray
    n_steps: int
    burn_in: int
    seed: int
    starts: np.ndarray
    procedure: str
    transition_keys: np.ndarray | None = field(default=None, repr=False)
    transition_counts: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if (self.transition_keys is None) != (self.transition_counts is None):
            raise ValueError("transition_keys and transition_counts come together (or both None)")
        if self.transition_keys is not None:
            keys = np.asarray(self.transition_keys)
            if keys.shape != np.shape(self.transition_counts):
                raise ValueError("transition_keys and transition_counts must have the same shape")
            limit = self.counts.shape[0] * self.space.num_full * self.space.n_tokens
            if keys.size and (keys[0] < 0 or keys[-1] >= limit):
                raise ValueError(
                    f"transition keys beyond the {self.counts.shape[0]} chains of `counts` (or negative): "
                    "subsample chains with OccupationSample.head(c), which keeps the transitions consistent")

    @property
    def n_chains(self) -> int:
        return self.counts.shape[0]

    @property
    def has_transitions(self) -> bool:
        return self.transition_keys is not None

    def head(self, n_chains: int) -> "OccupationSample":
        """The first ``n_chains`` chains (their counts, starts and transitions): a smaller budget of the same run."""
        c = int(n_chains)
        if not 0 <= c <= self.n_chains:
            raise ValueError(f"n_chains must be in 0..{self.n_chains}, got {n_chains}")
        keys = counts = None
        if self.has_transitions:
            cut = int(np.searchsorted(self.transition_keys, c * self.space.num_full * self.space.n_tokens))
            keys, counts = self.transition_keys[:cut], self.transition_counts[:cut]
        return OccupationSample(self.space, self.counts[:c], self.n_steps, self.burn_in, self.seed,
                                self.starts[:c], self.procedure, keys, counts)

    def transitions(self) -> tuple[np.ndarray, np.ndarray]:
        """Pooled over chains: (states int64[k], counts int64[k, N]), the full states left at least once
        (ascending) and how often each token was drawn there."""
        if not self.has_transitions:
            raise ValueError("this OccupationSample has no recorded transitions (draw it with sample_occupation)")
        n, nf = self.space.n_tokens, self.space.num_full
        pair = self.transition_keys % (nf * n)  # s * N + y, chains pooled
        states, inv = np.unique(pair // n, return_inverse=True)
        out = np.zeros((states.size, n), dtype=np.int64)
        np.add.at(out, (inv.ravel(), pair % n), self.transition_counts)
        return states, out

    def observable(self, g: np.ndarray) -> ReplicaEstimate:
        """Time average of g(X_t) per chain, then over chains: g is float[N^L] or [N^L, d]."""
        g = np.asarray(g, dtype=np.float64)
        g2 = g[:, None] if g.ndim == 1 else g
        est = replica_mean(self.counts @ g2 / self.n_steps)  # [C, d]
        if g.ndim == 1:
            est = ReplicaEstimate(est.value[0], est.se[0], est.n_replicas, est.per_replica[:, 0])
        return est

    def state_frequencies(self) -> ReplicaEstimate:
        """Occupation frequency of every full state."""
        return replica_mean(self.counts / self.n_steps)

    def ngram_frequencies(self, n: int) -> ReplicaEstimate:
        """Frequency of each n-gram (the last n tokens of the window), index big-endian, n <= L."""
        sp_ = self.space
        if not 1 <= n <= sp_.length:
            raise ValueError(f"n-gram order must be in 1..L={sp_.length}, got {n}")
        per = self.counts.reshape(self.n_chains, sp_.n_tokens ** (sp_.length - n), sp_.n_tokens**n).sum(axis=1)
        return replica_mean(per / self.n_steps)

    def token_frequencies(self) -> ReplicaEstimate:
        return self.ngram_frequencies(1)


def _merge_sparse(keys: np.ndarray, counts: np.ndarray, new_keys: np.ndarray,
                  new_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys with summed counts of two sparse count vectors."""
    allk = np.concatenate([keys, new_keys])
    allc = np.concatenate([counts, new_counts])
    u, inv = np.unique(allk, return_inverse=True)
    return u, np.bincount(inv.ravel(), weights=allc, minlength=u.size).astype(np.int64)


def sample_occupation(model, procedure, space: StateSpace, starts: np.ndarray, n_steps: int, seed: int,
                      burn_in: int = 0, chunk: int = 1024) -> OccupationSample:
    """Run one chain from each full state in ``starts``; count visits and transitions after ``burn_in`` steps."""
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size and starts.max() >= space.num_full:
        raise ValueError("occupation chains must start in full states (indices < N^L)")
    cells = starts.size * space.num_full
    if cells > _MAX_COUNT_CELLS:
        raise StateSpaceTooLargeError(
            f"per-chain visit counts need {starts.size} chains x {space.num_full} states = {cells:.2e} counters "
            f"(> {_MAX_COUNT_CELLS:.1e}); use fewer chains or a smaller space"
        )
    sampler = Sampler.shared(model, procedure, space.length, space.n_tokens)
    prompts = np.stack([space.tokens(int(s)) for s in starts]) if starts.size else np.zeros((0, space.length))
    c, nf, n = starts.size, space.num_full, space.n_tokens
    counts = np.zeros(c * nf, dtype=np.int64)
    offs = (np.arange(c, dtype=np.int64) * nf)[:, None]
    t_keys, t_counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    prev = starts.copy()  # the state each chain is in before the next generated token
    for t0, idx in _stream_states(sampler, prompts, burn_in + n_steps, seed, chunk):
        times = t0 + np.arange(idx.shape[1])
        sel = times > burn_in
        before = np.concatenate([prev[:, None], idx[:, :-1]], axis=1)  # [C, w]: the state each token was drawn in
        prev = idx[:, -1]
        if sel.any():
            counts += np.bincount((offs + idx[:, sel]).ravel(), minlength=c * nf)
            keys = ((offs + before[:, sel]) * n + idx[:, sel] % n).ravel()  # the new token is the window's last
            u, k = np.unique(keys, return_counts=True)
            t_keys, t_counts = _merge_sparse(t_keys, t_counts, u, k.astype(np.int64))
    return OccupationSample(space, counts.reshape(c, nf), n_steps, burn_in, seed, starts,
                            sampler.procedure.spec, t_keys, t_counts)


@dataclass
class AbsorptionSample:
    """Where independent chains from one start were absorbed.

    Attributes:
      start: the starting state index.
      horizon: the maximum number of steps run.
      outcome: int64[C]; the attractor entered (-1 if none within the horizon).
      time: int64[C]; steps until entry (-1 if none).
      path: optional int64[C, horizon], the full state after each step 1..horizon
        (-1 while the chain is still in a prefix state); recorded with
        ``keep_path=True`` so that :meth:`relabel` can judge the same chains
        against another operator's attractors.
    """

    start: int
    horizon: int
    outcome: np.ndarray
    time: np.ndarray
    n_attractors: int
    seed: int
    path: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_chains(self) -> int:
        return self.outcome.size

    def counts(self) -> np.ndarray:
        """int64[m + 1]: chains absorbed in each attractor, then the unabsorbed ones."""
        c = np.bincount(self.outcome[self.outcome >= 0], minlength=self.n_attractors)
        return np.concatenate([c, [np.sum(self.outcome < 0)]])

    def frequencies(self) -> tuple[np.ndarray, np.ndarray]:
        """(p_hat[m + 1], binomial standard errors)."""
        p = self.counts() / self.n_chains
        return p, np.sqrt(p * (1 - p) / self.n_chains)

    def relabel(self, attractor_of: np.ndarray, horizon: int | None = None) -> "AbsorptionSample":
        """The same chains judged by another class decomposition (needs ``path``; see sample_absorption).

        ``attractor_of`` maps full states to attractor indices (or -1) of
        another operator; the outcome of a chain is then its first visit, within
        ``horizon`` steps (default: all recorded), to a state with
        ``attractor_of >= 0``. Lets one sample serve several exact operators.
        """
        if self.path is None:
            raise ValueError("this AbsorptionSample has no recorded path; draw it with sample_absorption(..., keep_path=True)")
        attractor_of = np.asarray(attractor_of)
        t_max = self.path.shape[1] if horizon is None else min(int(horizon), self.path.shape[1])
        m = int(attractor_of.max()) + 1 if attractor_of.size else 0
        c = self.n_chains
        outcome = np.full(c, -1, dtype=np.int64)
        time = np.full(c, -1, dtype=np.int64)
        if self.start < attractor_of.size and attractor_of[self.start] >= 0:
            outcome[:] = attractor_of[self.start]
            time[:] = 0
        else:
            p = self.path[:, :t_max]
            att = np.where(p >= 0, attractor_of[np.maximum(p, 0)], -1)  # [C, t_max]
            hit = att >= 0
            first = np.argmax(hit, axis=1)
            got = hit.any(axis=1)
            outcome[got] = att[got, first[got]]
            time[got] = first[got] + 1
        return AbsorptionSample(self.start, t_max, outcome, time, m, self.seed, self.path[:, :t_max])


def sample_absorption(model, procedure, space: StateSpace, start: int, attractor_of: np.ndarray,
                      n_chains: int, horizon: int, seed: int, chunk: int = 256,
                      keep_path: bool = False) -> AbsorptionSample:
    """Run ``n_chains`` chains from state ``start`` for at most ``horizon`` steps each.

    ``attractor_of[s]`` (from the exact class decomposition) names the
    attractor containing full state s, or -1; a chain is absorbed at its first
    visit to a state with attractor_of >= 0. Only this membership table is
    taken from the exact analysis; the dynamics are the model's own.

    ``keep_path=True`` runs every chain for the whole horizon and records its
    full-state path (``AbsorptionSample.path``, int64[C, horizon]), so that
    the sample can be re-judged against another operator's attractors with
    :meth:`AbsorptionSample.relabel`. The outcomes are the same either way.
    """
    attractor_of = np.asarray(attractor_of)
    m = int(attractor_of.max()) + 1 if attractor_of.size else 0
    outcome = np.full(n_chains, -1, dtype=np.int64)
    time = np.full(n_chains, -1, dtype=np.int64)
    if attractor_of[start] >= 0 and not keep_path:
        outcome[:] = attractor_of[start]
        time[:] = 0
        return AbsorptionSample(int(start), horizon, outcome, time, m, seed)
    path = np.full((n_chains, horizon), -1, dtype=np.int64) if keep_path else None
    sampler = Sampler.shared(model, procedure, space.length, space.n_tokens)
    prompt = np.tile(space.tokens(int(start)), (n_chains, 1))
    for t0, idx in _stream_states(sampler, prompt, horizon, seed, chunk):
        if keep_path:
            path[:, t0 - 1: t0 - 1 + idx.shape[1]] = idx
            continue
        att = attractor_of[idx]  # [C, w]
        hit = att >= 0
        first = np.argmax(hit, axis=1)
        newly = hit.any(axis=1) & (outcome < 0)
        outcome[newly] = att[newly, first[newly]]
        time[newly] = t0 + first[newly]
        if (outcome >= 0).all():
            break
    out = AbsorptionSample(int(start), horizon, outcome, time, m, seed, path)
    return out.relabel(attractor_of) if keep_path else out


# ------------------------------------------------------------------------------------------
# Paths: state sequences, model log-probabilities of sampled tokens, hitting times.

def stream_state_path(sampler: Sampler, space: StateSpace, prompts: np.ndarray, n_steps: int, seed: int,
                      chunk: int = 1024):
    """Yield (t_first, idx[C, w]): the state index (prefix states included) after t_first, t_first+1, ... tokens.

    The state after t generated tokens is the last min(k + t, L) tokens of the
    prompt (k tokens) followed by the generated ones.
    """
    p = sampler.check_prompts(prompts).astype(np.int64)
    length, n = space.length, space.n_tokens
    tail = p[:, max(0, p.shape[1] - (length - 1)):] if length > 1 else p[:, :0]
    total = p.shape[1]  # tokens in the whole history so far
    done = 0
    for ys in sampler.generate(prompts, n_steps, seed, chunk):
        hist = np.concatenate([tail, ys.astype(np.int64)], axis=1)
        w, tl = ys.shape[1], tail.shape[1]
        idx = np.empty((p.shape[0], w), dtype=np.int64)
        full_from = max(0, length - 1 - total)  # first column j whose state has L tokens
        for j in range(min(full_from, w)):  # prefix states: the whole history so far
            idx[:, j] = space.indices(hist[:, : total + j + 1])
        if full_from < w:
            wi = window_indices(hist, n, length)  # window starting at column c ends at c + L - 1
            cols = tl + np.arange(full_from, w) - length + 1
            idx[:, full_from:] = wi[:, cols]
        yield done + 1, idx
        done += w
        total += w
        keep = min(total, length - 1)
        tail = hist[:, hist.shape[1] - keep:] if keep else hist[:, :0]


def sequence_log_probs(model, procedure, context_length: int, prompts: np.ndarray, tokens: np.ndarray,
                       batch_size: int = 4096) -> np.ndarray:
    """float64[C, n]: log q(y_t | context) of given continuations, by evaluating ``model`` on every context.

    Context of token t (0-based) of chain c: the last min(k + t, L) tokens of
    prompt[c] + tokens[c, :t]. The model is called afresh (batches of
    ``batch_size`` contexts, padded so each context length compiles once) and
    the procedure's own log-probabilities are taken: nothing is read from an
    exact operator, so this is the sampled side of an agreement test.
    """


    proc = parse(procedure)
    prompts = np.asarray(prompts, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.int64)
    c, k = prompts.shape
    n = tokens.shape[1]
    length = int(context_length)
    hist = np.concatenate([prompts, tokens], axis=1)  # [C, k + n]
    out = np.empty((c, n))
    jittable = getattr(model, "jittable", True)

    def logp(ctx):
        return proc.log_probabilities(model(ctx))

    fn = jax.jit(logp) if jittable else logp

    def evaluate(ctx: np.ndarray, ys: np.ndarray) -> np.ndarray:  # ctx [M, m], ys [M] -> [M]
        res = np.empty(ctx.shape[0])
        b = min(batch_size, ctx.shape[0])
        for start in range(0, ctx.shape[0], b):
            part = ctx[start:start + b]
            real = part.shape[0]
            if real < b:
                part = np.concatenate([part, np.zeros((b - real, part.shape[1]), np.int64)], axis=0)
            lp = np.asarray(fn(jnp.asarray(part.astype(np.int32))), dtype=np.float64)[:real]  # [real, N]
            res[start:start + real] = lp[np.arange(real), ys[start:start + real]]
        return res

    t_full = max(0, length - k)  # from this step on the context has L tokens
    for t in range(min(t_full, n)):
        out[:, t] = evaluate(hist[:, : k + t], tokens[:, t])
    if t_full < n:
        win = np.lib.stride_tricks.sliding_window_view(hist, length, axis=1)  # [C, k+n-L+1, L]
        first = k + t_full - length  # window index whose last token precedes token t_full
        ctx = win[:, first: first + (n - t_full)]  # [C, n - t_full, L]
        vals = evaluate(ctx.reshape(-1, length), tokens[:, t_full:].reshape(-1))
        out[:, t_full:] = vals.reshape(c, n - t_full)
    return out


@dataclass
class HittingSample:
    """First entrance times of independent chains from one start into a target set.

    Attributes:
      start: the starting state index.
      horizon: the maximum number of steps run.
      time: int64[C]; steps until the first visit to the target (0 if the start is in it; -1 if not by horizon).
    """

    start: int
    horizon: int
    time: np.ndarray
    seed: int

    @property
    def n_chains(self) -> int:
        return self.time.size

    def truncated(self) -> np.ndarray:
        """float64[C]: min(tau, horizon) per chain."""
        return np.where(self.time >= 0, self.time, self.horizon).astype(np.float64)


def sample_hitting(model, procedure, space: StateSpace, start: int, target: np.ndarray, n_chains: int,
                   horizon: int, seed: int, chunk: int = 256) -> HittingSample:
    """Run ``n_chains`` chains from state ``start`` until they enter ``target`` (bool[S]) or reach ``horizon``."""
    target = np.asarray(target, dtype=bool)
    time = np.full(n_chains, -1, dtype=np.int64)
    if target[start]:
        time[:] = 0
        return HittingSample(int(start), horizon, time, seed)
    sampler = Sampler.shared(model, procedure, space.length, space.n_tokens)
    prompt = np.tile(space.tokens(int(start)), (n_chains, 1))
    for t0, idx in stream_state_path(sampler, space, prompt, horizon, seed, chunk):
        hit = target[idx]  # [C, w]
        first = np.argmax(hit, axis=1)
        newly = hit.any(axis=1) & (time < 0)
        time[newly] = t0 + first[newly]
        if (time >= 0).all():
            break
    return HittingSample(int(start), horizon, time, seed)

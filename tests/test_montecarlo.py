"""Monte Carlo from the model: windows, the sampler, occupation and absorption samples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import semio_jax as sj
from semio_jax.analysis import greedy_dynamics
from semio_jax.montecarlo import (
    Sampler,
    batch_means_se,
    replica_mean,
    sample_absorption,
    sample_occupation,
    window_indices,
)


# ------------------------------------------------------------------ windows
@pytest.mark.property
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 12), st.data())
def test_window_indices_match_loop(n, length, chains, steps, data):
    hist = np.array(data.draw(st.lists(st.lists(st.integers(0, n - 1), min_size=steps, max_size=steps),
                                       min_size=chains, max_size=chains)), dtype=np.int64).reshape(chains, steps)
    got = window_indices(hist, n, length)
    space = sj.StateSpace(n, length)
    expected = np.array([[space.index(hist[c, t:t + length]) for t in range(steps - length + 1)]
                         for c in range(chains)], dtype=np.int64).reshape(chains, max(steps - length + 1, 0))
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64


# ------------------------------------------------------------------ sampler
def test_sampler_reproducible_and_seed_dependent(ngram3):
    s = Sampler(ngram3, "temperature=1", 3)
    prompts = np.array([[0], [1], [2], [0]] * 4)
    a = s.sample(prompts, 22, seed=7)  # 2 prefix steps, then one chunk of 20
    b = s.sample(prompts, 22, seed=7)
    c = s.sample(prompts, 22, seed=8)
    assert a.shape == (16, 22) and a.dtype == np.int32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # chunking does not change the draws (one key carried through every chunk)
    np.testing.assert_array_equal(s.sample(prompts, 22, seed=7, chunk=10), a)
    # chains with identical prompts still differ (independent draws per chain)
    assert not np.array_equal(a[0], a[3])
    assert a.min() >= 0 and a.max() < 3


def test_sampler_jittable_and_numpy_models_agree(ngram3):
    """The same logits through a jitted model and a numpy (non-jittable) one give the same draws.

    (Regression: the chunked rollout used lax.scan, which traces its body even
    without jit, so a numpy model could not be sampled at all.)
    """
    table = np.asarray(ngram3.table, dtype=np.float32)

    def numpy_fn(c):
        c = np.asarray(c)
        assert c.shape[1] == 3  # only full windows in this test
        return table[c[:, -2], c[:, -1]]

    np_model = sj.FunctionModel(numpy_fn, n_tokens=3, jittable=False)
    p = np.array([[1, 1, 0], [2, 0, 2]])
    a = Sampler(ngram3, "top_k=2", 3).sample(p, 8, seed=3, chunk=4)
    b = Sampler(np_model, "top_k=2", 3).sample(p, 8, seed=3, chunk=4)
    np.testing.assert_array_equal(a, b)


def test_sampler_refuses_bad_prompts(ngram3):
    s = Sampler(ngram3, "temperature=1", 3)
    with pytest.raises(sj.PromptError):
        s.sample(np.zeros((4, 0), dtype=np.int64), 5, seed=0)  # empty prompts
    with pytest.raises(sj.PromptError):
        s.sample(np.zeros((4, 4), dtype=np.int64), 5, seed=0)  # longer than L = 3
    with pytest.raises(sj.PromptError):
        s.sample(np.zeros(4, dtype=np.int64), 5, seed=0)  # not [chains, k]
    with pytest.raises(sj.UnknownTokenError):
        s.sample(np.array([[0, 3]]), 5, seed=0)
    with pytest.raises(sj.UnknownTokenError):
        s.sample(np.array([[-1]]), 5, seed=0)
    with pytest.raises(sj.InvalidProcedureError):
        Sampler(ngram3, "top_k=4", 3)


def test_sampler_zero_steps(ngram3):
    out = Sampler(ngram3, "greedy", 3).sample(np.array([[0], [1]]), 0, seed=0)
    assert out.shape == (2, 0)


def test_greedy_sampler_follows_the_greedy_map(ngram3):
    space = sj.StateSpace(3, 3)
    op = sj.build_operator(ngram3, space, "greedy")
    g = greedy_dynamics(op)
    sampler = Sampler(ngram3, "greedy", 3)
    for starts in (list(space.group(1)), [5, 17, 26]):
        ys = sampler.sample(np.stack([space.tokens(s) for s in starts]), 12, seed=0)
        for s, row in zip(starts, ys):
            orbit = g.orbit(s, 12)
            np.testing.assert_array_equal(row, [space.tokens(int(x))[-1] for x in orbit[1:]])


def test_one_step_frequencies_match_the_operator(ngram3):
    """20000 chains, one step from each prompt: chi-square against the exact row (fixed seed)."""
    space = sj.StateSpace(3, 3)
    op = sj.build_operator(ngram3, space, "temperature=0.8,top_p=0.9")
    s = Sampler(ngram3, op.procedure, 3)
    for state in (space.index([0, 0]), space.index([1, 2, 0]), space.index([2])):
        toks = space.tokens(state)
        ys = s.sample(np.tile(toks, (20_000, 1)), 1, seed=state)[:, 0]
        counts = np.bincount(ys, minlength=3)
        p = op.probs[state]
        assert (counts[p == 0] == 0).all(), "a token of probability 0 was sampled"
        keep = p > 0
        if keep.sum() > 1:
            pval = stats.chisquare(counts[keep], 20_000 * p[keep]).pvalue
            assert pval > 1e-4, (state, counts, p)


# -------------------------------------------------------------- occupation
def test_sample_occupation_counts(coin_ngram):
    space = sj.StateSpace(2, 3)
    starts = np.array([0, 7, 3])
    occ = sample_occupation(coin_ngram, "temperature=1", space, starts, n_steps=40, seed=1, burn_in=5, chunk=16)
    assert occ.counts.shape == (3, 8) and occ.n_chains == 3
    np.testing.assert_array_equal(occ.counts.sum(axis=1), [40, 40, 40])
    again = sample_occupation(coin_ngram, "temperature=1", space, starts, n_steps=40, seed=1, burn_in=5, chunk=16)
    np.testing.assert_array_equal(occ.counts, again.counts)
    # the counts are exactly the windows of the sampled tokens, after burn-in
    ys = Sampler(coin_ngram, "temperature=1", 3).sample(np.stack([space.tokens(s) for s in starts]), 45, seed=1)
    hist = np.concatenate([np.stack([space.tokens(s) for s in starts]), ys], axis=1)
    idx = window_indices(hist, 2, 3)[:, 1:]  # the state after each generated token
    manual = np.stack([np.bincount(row[5:], minlength=8) for row in idx])
    np.testing.assert_array_equal(occ.counts, manual)
    freq = occ.state_frequencies()
    np.testing.assert_allclose(freq.value.sum(), 1.0)
    tok = occ.token_frequencies()
    assert tok.value.shape == (2,) and abs(tok.value.sum() - 1) < 1e-12
    assert occ.ngram_frequencies(3).value.shape == (8,)
    with pytest.raises(ValueError):
        occ.ngram_frequencies(4)
    obs = occ.observable(np.arange(8.0))
    assert obs.per_replica.shape == (3,)
    # the transitions: chain c drew token y in state s at each of the counted steps (the state before a step
    # is the start or an earlier window); chain-major sparse keys (c * N^L + s) * N + y
    before = np.concatenate([starts[:, None], idx[:, :-1]], axis=1)[:, 5:]
    keys = ((np.arange(3)[:, None] * 8 + before) * 2 + idx[:, 5:] % 2).ravel()
    u, k = np.unique(keys, return_counts=True)
    np.testing.assert_array_equal(occ.transition_keys, u)
    np.testing.assert_array_equal(occ.transition_counts, k)
    states, trans = occ.transitions()  # pooled over the chains
    assert trans.sum() == 120 and trans.shape == (states.size, 2)
    manual_t = np.zeros((8, 2), np.int64)
    np.add.at(manual_t, (before.ravel(), (idx[:, 5:] % 2).ravel()), 1)
    np.testing.assert_array_equal(trans, manual_t[states])
    assert set(states) == set(np.flatnonzero(manual_t.sum(axis=1)))
    # head(c): the first c chains, counts and transitions together
    two = occ.head(2)
    assert two.n_chains == 2 and two.transitions()[1].sum() == 80
    np.testing.assert_array_equal(two.counts, occ.counts[:2])
    assert occ.head(3).transitions()[1].sum() == 120 and occ.head(0).transitions()[1].size == 0
    with pytest.raises(ValueError, match="head"):  # slicing the counts alone would orphan transitions
        dataclasses.replace(occ, counts=occ.counts[:2], starts=occ.starts[:2])


def test_sample_occupation_refuses_prefix_starts(coin_ngram):
    space = sj.StateSpace(2, 3)
    with pytest.raises(ValueError, match="full states"):
        sample_occupation(coin_ngram, "temperature=1", space, np.array([8]), n_steps=5, seed=0)


def test_sample_occupation_too_many_counters(coin_ngram):
    space = sj.StateSpace(2, 20, prefixes=False)
    with pytest.raises(sj.StateSpaceTooLargeError):
        sample_occupation(coin_ngram, "temperature=1", space, np.zeros(200, dtype=np.int64), n_steps=5, seed=0)


# --------------------------------------------------------------- absorption
def test_sample_absorption_greedy_times_equal_tails(ngram3):
    space = sj.StateSpace(3, 3)
    op = sj.build_operator(ngram3, space, "greedy")
    g = greedy_dynamics(op)
    cs = sj.class_structure(op)
    for start in (space.index([2]), space.index([1, 0])):
        samp = sample_absorption(ngram3, "greedy", space, start, cs.attractor_of, n_chains=3, horizon=50, seed=0)
        assert (samp.outcome == g.cycle_of[start]).all()
        assert (samp.time == g.tail[start]).all()
        np.testing.assert_array_equal(samp.counts()[:-1], np.bincount(samp.outcome, minlength=len(g.cycles)))
    # a start inside an attractor is absorbed at time 0 without sampling
    inside = int(cs.attractors[0][0])
    samp = sample_absorption(ngram3, "greedy", space, inside, cs.attractor_of, n_chains=4, horizon=5, seed=0)
    assert (samp.time == 0).all() and (samp.outcome == 0).all()
    p, se = samp.frequencies()
    assert p[0] == 1.0 and se[0] == 0.0


def test_sample_absorption_horizon(split_ngram):
    # a horizon too short to reach an attractor leaves the chains unabsorbed (-1)
    space = sj.StateSpace(4, 4)
    op = sj.build_operator(split_ngram, space, "temperature=1")
    cs = sj.class_structure(op)
    start = space.index([0])  # needs 3 more tokens to be a full state
    samp = sample_absorption(split_ngram, "temperature=1", space, start, cs.attractor_of, n_chains=10, horizon=2,
                             seed=0)
    assert (samp.outcome == -1).all() and samp.counts()[-1] == 10
    # ... and one more step reaches a full state: [0, y1, y2, y3] with every y in {0, 1} (the only tokens that
    # follow 0 or 1), which lies in the attractor of the {0, 1} windows: every chain is absorbed there at
    # exactly t = 3 (an off-by-one in the time or a wrong window would show here), and the kept paths agree
    group01 = int(cs.attractor_of[space.index([0, 0, 0, 0])])
    assert group01 >= 0 and group01 != int(cs.attractor_of[space.index([2, 2, 2, 2])])
    three = sample_absorption(split_ngram, "temperature=1", space, start, cs.attractor_of, n_chains=10, horizon=3,
                              seed=0)
    assert (three.outcome == group01).all() and (three.time == 3).all()
    kept = sample_absorption(split_ngram, "temperature=1", space, start, cs.attractor_of, n_chains=10, horizon=3,
                             seed=0, keep_path=True)
    assert (kept.path[:, :2] == -1).all()  # still prefix states after 1 and 2 steps
    last = np.stack([space.tokens(int(s)) for s in kept.path[:, 2]])  # [C, 4]
    assert (last[:, 0] == 0).all() and (last <= 1).all()
    np.testing.assert_array_equal(kept.outcome, three.outcome)
    np.testing.assert_array_equal(kept.time, three.time)


# ------------------------------------------------------------------ estimators
def test_replica_mean_and_batch_means():
    x = np.arange(12.0).reshape(4, 3)
    est = replica_mean(x)
    np.testing.assert_allclose(est.value, x.mean(axis=0))
    np.testing.assert_allclose(est.se, x.std(axis=0, ddof=1) / 2)
    assert est.n_replicas == 4
    assert np.isinf(replica_mean(x[:1]).se).all()
    rng = np.random.default_rng(0)
    iid = rng.normal(size=20_000)
    se = batch_means_se(iid, 20)
    assert 0.5 / np.sqrt(20_000) < se < 2 / np.sqrt(20_000)
    with pytest.raises(ValueError):
        batch_means_se(np.ones(5), 20)

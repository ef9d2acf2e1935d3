"""StateSpace: indexing conventions, successors, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.core.space import MAX_STATES
from semio_jax.testing import spaces


def all_states_by_hand(n: int, length: int, prefixes: bool) -> list[tuple[int, ...]]:
    """Every state in index order, written from the documented convention only."""
    out = [tuple(t) for t in itertools.product(range(n), repeat=length)]  # big-endian = lexicographic
    if prefixes:
        for k in range(1, length):
            out += [tuple(t) for t in itertools.product(range(n), repeat=k)]
    return out


# ------------------------------------------------------------ explicit example
def test_explicit_indices_n2_l3():
    space = sj.StateSpace(2, 3)
    assert space.num_full == 8 and space.num_prefix == 2 + 4 and space.num_states == 14 and len(space) == 14
    # full states: oldest token is the most significant digit
    assert space.index([0, 0, 0]) == 0
    assert space.index([0, 0, 1]) == 1
    assert space.index([0, 1, 1]) == 3
    assert space.index([1, 0, 0]) == 4
    assert space.index([1, 1, 1]) == 7
    # prefix groups by length after the full states: length 1 at 8, length 2 at 10
    assert space.group_offsets == {3: 0, 1: 8, 2: 10}
    assert space.index([0]) == 8 and space.index([1]) == 9
    assert [space.index(t) for t in ([0, 0], [0, 1], [1, 0], [1, 1])] == [10, 11, 12, 13]
    assert list(space.group(1)) == [8, 9] and list(space.group(2)) == [10, 11, 12, 13]
    assert space.lengths == [3, 1, 2]
    # successors: sliding window for full states, growth for prefixes
    assert space.successor(space.index([1, 0, 1]), 1) == space.index([0, 1, 1]) == 3
    assert space.successor(space.index([1]), 0) == space.index([1, 0]) == 12
    assert space.successor(space.index([1, 1]), 0) == space.index([1, 1, 0]) == 6
    assert space.tokens(6).tolist() == [1, 1, 0]
    assert space.tokens(9).tolist() == [1]
    assert space.label(12) == "10"


def test_explicit_indices_n3_l2():
    space = sj.StateSpace(3, 2)
    assert space.num_states == 9 + 3
    assert space.index([2, 1]) == 2 * 3 + 1 == 7
    assert space.index([1, 2]) == 5
    assert space.index([2]) == 9 + 2
    assert space.successor(7, 0) == space.index([1, 0]) == 3
    assert space.successor(11, 2) == space.index([2, 2]) == 8
    np.testing.assert_array_equal(space.successor_table()[7], [3, 4, 5])


def test_no_prefixes():
    space = sj.StateSpace(3, 2, prefixes=False)
    assert space.num_states == 9 and space.num_prefix == 0 and space.lengths == [2]
    with pytest.raises(sj.PromptError):
        space.index([1])
    with pytest.raises(sj.PromptError):
        space.group(1)


def test_length_one_is_the_alphabet():
    space = sj.StateSpace(4, 1)
    assert space.num_states == 4
    np.testing.assert_array_equal(space.successor_table(), np.tile(np.arange(4), (4, 1)))


# ---------------------------------------------------------------- properties
@pytest.mark.property
@given(spaces(max_tokens=4, max_length=4, max_states=400))
def test_index_tokens_round_trip(space):
    states = all_states_by_hand(space.n_tokens, space.length, space.prefixes)
    assert len(states) == space.num_states
    for i, toks in enumerate(states):
        assert space.index(toks) == i
        assert tuple(space.tokens(i).tolist()) == toks
        assert space.length_of(i) == len(toks)
    for k, offset in space.iter_groups():
        ctx = space.contexts(k)
        assert ctx.dtype == np.int32 and ctx.shape == (space.n_tokens**k, k)
        np.testing.assert_array_equal(space.indices(ctx), offset + np.arange(space.n_tokens**k))
        assert [tuple(r) for r in ctx.tolist()] == states[offset: offset + space.n_tokens**k]


@pytest.mark.property
@given(spaces(max_tokens=4, max_length=4, max_states=400))
def test_successor_table_matches_definition(space):
    succ = space.successor_table()
    assert succ.shape == (space.num_states, space.n_tokens) and succ.dtype == np.int64
    assert not succ.flags.writeable
    for s in range(space.num_states):
        toks = tuple(space.tokens(s).tolist())
        for y in range(space.n_tokens):
            nxt = toks[1:] + (y,) if len(toks) == space.length else toks + (y,)
            assert succ[s, y] == space.index(nxt)
            assert space.successor(s, y) == succ[s, y]
    # full states: the closed form of the module docstring
    i = np.arange(space.num_full)
    np.testing.assert_array_equal(
        succ[: space.num_full],
        (i % space.n_tokens ** (space.length - 1))[:, None] * space.n_tokens + np.arange(space.n_tokens)[None, :],
    )


@pytest.mark.property
@given(spaces(max_tokens=3, max_length=4), st.data())
def test_contexts_slices(space, data):
    k = data.draw(st.sampled_from(space.lengths))
    size = space.n_tokens**k
    start = data.draw(st.integers(0, size))
    stop = data.draw(st.integers(start, size + 3))
    np.testing.assert_array_equal(space.contexts(k, start, stop), space.contexts(k)[start:stop])


# ------------------------------------------------------------------- errors
def test_unknown_tokens():
    space = sj.StateSpace(3, 2)
    for bad in ([0, 3], [-1, 0], [5]):
        with pytest.raises(sj.UnknownTokenError, match="outside the alphabet"):
            space.index(bad)
    with pytest.raises(sj.UnknownTokenError):
        space.indices(np.array([[0, 1], [1, 3]]))
    with pytest.raises(sj.UnknownTokenError):
        space.successor(0, 3)
    with pytest.raises(ValueError):  # UnknownTokenError is a ValueError too
        space.index([9, 9])


def test_prompt_errors():
    space = sj.StateSpace(2, 3)
    with pytest.raises(sj.PromptError, match="at least one token"):
        space.index([])
    with pytest.raises(sj.PromptError, match="longer than the context length"):
        space.index([0, 1, 0, 1])
    with pytest.raises(sj.PromptError):
        space.indices(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(sj.PromptError):
        space.group(7)
    assert issubclass(sj.PromptError, sj.SemioError) and issubclass(sj.PromptError, ValueError)


def test_bad_indices_and_sizes():
    space = sj.StateSpace(2, 2)
    with pytest.raises(IndexError):
        space.tokens(space.num_states)
    with pytest.raises(IndexError):
        space.tokens(-1)
    with pytest.raises(ValueError):
        sj.StateSpace(0, 2)
    with pytest.raises(ValueError):
        sj.StateSpace(2, 0)
    with pytest.raises(ValueError):
        sj.StateSpace(2.5, 2)
    with pytest.raises(sj.StateSpaceTooLargeError, match="2\\*\\*40"):
        sj.StateSpace(2, 41)
    assert sj.StateSpace(2, 40, prefixes=False).num_states == MAX_STATES


@pytest.mark.property
@given(spaces(max_tokens=4, max_length=4, max_states=400), st.integers(0, 2**32 - 1))
def test_successors_are_arithmetic_and_never_stored(space, seed):
    """successors_of agrees with the token-appending definition on random (state, token) batches; nothing is cached."""
    rng = np.random.default_rng(seed)
    states = rng.integers(0, space.num_states, size=50)
    toks = rng.integers(0, space.n_tokens, size=50)
    got = space.successors_of(states, toks)
    for s, y, t in zip(states, toks, got):
        tokens = list(space.tokens(int(s))) + [int(y)]
        assert int(t) == space.index(tokens[-space.length:])
    assert space.successor_table() is not space.successor_table()  # computed on demand
    assert not any("succ" in k for k in vars(space))


def test_successors_of_applies_the_prefix_rule_to_the_prefix_states_alone():
    """The prefix states' rule is evaluated on them alone: the whole [S, N] broadcast costs its output
    and one temporary at most (1.4 output sizes; 3.1 when the rule ran over every state and np.where
    picked), and agrees with the definition (tokens, append, drop the oldest, index) on sampled states."""
    from helpers import traced_peak

    sp_ = sj.StateSpace(16, 4)
    s = np.arange(sp_.num_states, dtype=np.int64)[:, None]
    y = np.arange(16, dtype=np.int64)[None, :]
    out, peak = traced_peak(sp_.successors_of, s, y)
    assert peak <= 2.0 * out.nbytes, peak / out.nbytes
    picks = np.concatenate([np.random.default_rng(0).integers(0, sp_.num_states, 100),
                            np.arange(sp_.num_full, sp_.num_states, 97)])  # some of them prefix states
    for i in picks:
        toks = tuple(sp_.tokens(int(i)).tolist())
        for tok in (0, 15):
            nxt = toks[1:] + (tok,) if len(toks) == sp_.length else toks + (tok,)
            assert out[i, tok] == sp_.index(nxt)

"""core/model.py: plain Python/numpy models are detected and run outside jit; full-length-only models."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import semio_jax as sj
from semio_jax.core.model import probe_jittable

RNG = np.random.default_rng(7)
TABLE = RNG.normal(size=(3, 3, 3))  # logits[a, b, y]: next token y after ... a b


def numpy_bigram(contexts):
    """Plain numpy: np.asarray of a tracer fails under jax.jit."""
    c = np.asarray(contexts)
    if c.shape[1] < 2:
        return np.zeros((c.shape[0], 3))
    return TABLE[c[:, -2], c[:, -1]]


def full_only(contexts):
    """Reads position 2 of every context: only full-length (L = 3) contexts work."""
    c = np.asarray(contexts)
    return TABLE[c[:, 0], c[:, 2]]


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _brute_rows(space, rule):
    """Independent operator rows: softmax of the hand-computed logits of every state's context."""
    rows = []
    for s in range(space.num_states):
        toks = space.tokens(s)
        rows.append(_softmax(rule(toks)))
    return np.array(rows)


def test_numpy_function_is_detected_and_built_without_flags():
    assert probe_jittable(numpy_bigram) is False
    assert probe_jittable(lambda c: jnp.zeros((c.shape[0], 3))) is True
    assert sj.FunctionModel(numpy_bigram, 3).jittable is False  # detected, not declared
    space = sj.StateSpace(3, 3)
    op = sj.build_operator(numpy_bigram, space, "temperature=1")  # a bare function, no flags
    want = _brute_rows(space, lambda t: TABLE[t[-2], t[-1]] if len(t) >= 2 else np.zeros(3))
    np.testing.assert_allclose(op.probs, want, rtol=1e-6, atol=1e-7)


def test_numpy_model_is_called_in_batches_on_numpy_arrays():
    seen = []

    def spy(contexts):
        seen.append((type(contexts), contexts.shape))
        return numpy_bigram(contexts)

    sj.build_operator(spy, sj.StateSpace(3, 3), "greedy", batch_size=4)
    real = [shape for t, shape in seen if t is np.ndarray]
    assert len(real) == len(seen) - 1  # one abstract probe (a tracer), every evaluation on numpy arrays
    assert max(shape[0] for shape in real) == 4  # batches of batch_size contexts
    assert sum(shape[0] for shape in real) >= 39  # every state of N=3, L=3 (27 full + 12 prefix)


def test_full_length_only_model_names_prefixes_false():
    model = sj.FunctionModel(full_only, 3, 3)
    with pytest.raises(sj.PrefixContextError, match="prefixes=False") as info:
        sj.build_operator(model, sj.StateSpace(3, 3))
    assert isinstance(info.value.__cause__, IndexError)  # the user's own error is kept as the cause
    space = sj.StateSpace(3, 3, prefixes=False)
    op = sj.build_operator(model, space)
    np.testing.assert_allclose(op.probs, _brute_rows(space, lambda t: TABLE[t[0], t[2]]), rtol=1e-6, atol=1e-7)


def test_errors_on_full_contexts_are_not_renamed():
    def broken(contexts):
        raise RuntimeError("my bug")

    with pytest.raises(RuntimeError, match="my bug"):
        sj.build_operator(sj.FunctionModel(broken, 3, 2), sj.StateSpace(3, 2, prefixes=False))

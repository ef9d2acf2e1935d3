"""The shared-prefix operator build equals the plain batched build.

Both evaluate the same float32 network; they differ only in the order of
float32 operations (cached keys/values vs a full forward pass), so the logits
agree to float32 round-off. Softmax only sees differences within a row, so
the round-off is measured against the row's scale: |a - b| <= 1e-5 * (1 +
max_y |b_y|) per row, about 84 float32 ulps of the largest logit: above the
1e-6-level differences seen on trained models (whose layers amplify round-off)
and far below any real mistake (a wrong position or window changes logits at the
1e-2 level).
"""

from __future__ import annotations

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.errors import LogitsShapeError, NonFiniteLogitsError
from semio_jax.build import evaluate_logits
from semio_models.checkpoint import load
from semio_models.transformer import TransformerConfig, TransformerModel

RTOL = 1e-5


def _close(a, b):
    scale = 1.0 + np.max(np.abs(b), axis=1, keepdims=True)  # [S, 1]
    return np.max(np.abs(a - b) / scale)


@pytest.mark.parametrize("name", ["coin", pytest.param("markov2", marks=pytest.mark.slow),
                                  pytest.param("dyck", marks=pytest.mark.slow)])
def test_prefix_equals_plain_on_the_zoo(name):
    model = load(name)
    space = sj.StateSpace(model.n_tokens, model.context_length)
    a = evaluate_logits(model, space, method="prefix")
    b = evaluate_logits(model, space, method="plain")
    assert a.shape == b.shape == (space.num_states, space.n_tokens)
    assert _close(a, b) <= RTOL


@pytest.mark.parametrize("n,length,layers,chunk", [(2, 7, 1, 8), (3, 4, 2, 5), (4, 3, 2, 4096)])
def test_prefix_equals_plain_on_random_transformers(n, length, layers, chunk):
    model = TransformerModel.random(TransformerConfig(n_tokens=n, context_length=length, n_layers=layers,
                                                      d_model=16, n_heads=2), seed=n + length)
    space = sj.StateSpace(n, length)
    out = {}

    def emit(k, start, logits):  # blocks must tile every level exactly once
        for i in range(logits.shape[0]):
            assert (k, start + i) not in out
            out[(k, start + i)] = logits[i]

    model.prefix_tree_logits(length, emit, chunk=chunk)
    assert len(out) == space.num_states
    b = evaluate_logits(model, space, method="plain")
    a = np.stack([out[(k, i)] for k in space.lengths for i in range(n**k)])  # index order: L first, then 1..L-1
    assert _close(a, b) <= RTOL


def test_prefix_build_without_prefix_states_and_operator_level_agreement():
    model = load("dyck")
    full = sj.StateSpace(3, 6, prefixes=False)
    op_a = sj.build_operator(model, full, "top_p=0.5", method="prefix")
    op_b = sj.build_operator(model, full, "top_p=0.5", method="plain")
    assert op_a.num_states == 729
    assert _close(op_a.logits, op_b.logits) <= RTOL
    assert np.max(np.abs(op_a.probs - op_b.probs)) < 2e-6


class _TreeModel:
    """A model that implements only the prefix-tree protocol's emit side by hand."""

    n_tokens, context_length = 2, 3

    def __init__(self, bad=None):
        self.bad = bad

    def __call__(self, contexts):
        import jax.numpy as jnp

        c = jnp.asarray(contexts)
        return jnp.stack([c.sum(axis=1) * 0.5, -c.sum(axis=1) * 0.5], axis=1).astype(jnp.float32)

    def prefix_tree_logits(self, length, emit, chunk=4096):
        space = sj.StateSpace(2, length)
        for k in range(1, length + 1):
            logits = np.array(self(space.contexts(k)))  # a writable copy
            if self.bad == "nan" and k == 2:
                logits[1, 0] = np.nan
            if self.bad == "shape":
                logits = logits[:, :1]
            emit(k, 0, logits)


def test_any_model_may_implement_the_protocol():
    m = _TreeModel()
    space = sj.StateSpace(2, 3)
    np.testing.assert_array_equal(evaluate_logits(m, space, method="prefix"), evaluate_logits(m, space, method="plain"))


def test_prefix_path_names_bad_logits():
    with pytest.raises(NonFiniteLogitsError, match=r"\[0, 1\]"):
        sj.build_operator(_TreeModel("nan"), sj.StateSpace(2, 3))
    with pytest.raises(LogitsShapeError):
        sj.build_operator(_TreeModel("shape"), sj.StateSpace(2, 3))


def test_method_argument_is_checked():
    with pytest.raises(ValueError, match="unknown evaluation method"):
        evaluate_logits(load("coin"), sj.StateSpace(2, 8), method="fast")
    with pytest.raises(ValueError, match="no prefix_tree_logits"):
        evaluate_logits(sj.NGramModel(np.zeros((2, 2))), sj.StateSpace(2, 3), method="prefix")

"""Shared test configuration: hypothesis profiles, x64, small model fixtures.

Hypothesis profiles (pick one with the environment variable HYPOTHESIS_PROFILE):

* ``ci`` (default): 30 examples per property, derandomized (the same examples
  on every run, so CI is reproducible), no deadline (JAX compiles on first use);
* ``dev``: 10 random examples, for quick local iteration;
* ``thorough``: 500 random examples, for a nightly or pre-release run.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import semio_jax as sj  # noqa: F401  (enables jax_enable_x64 before any test builds arrays)

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
settings.register_profile("ci", max_examples=30, derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", max_examples=10, **_COMMON)
settings.register_profile("thorough", max_examples=500, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# --------------------------------------------------------------- models
@pytest.fixture(scope="session")
def ngram3() -> sj.NGramModel:
    """A fixed bigram-context (order 2) model over N=3 tokens with one impossible transition."""
    rng = np.random.default_rng(20240611)
    table = rng.normal(scale=1.5, size=(3, 3, 3))
    table[0, 0, 2] = -np.inf  # after "00", token 2 is impossible
    return sj.NGramModel(table, context_length=4, name="ngram3")


@pytest.fixture(scope="session")
def coin_ngram() -> sj.NGramModel:
    """A 'sticky coin' over N=2: repeat the last token with probability ~0.8."""
    p = np.log(np.array([[0.8, 0.2], [0.2, 0.8]]))
    return sj.NGramModel(p, context_length=6, name="sticky-coin")


@pytest.fixture(scope="session")
def split_ngram() -> sj.NGramModel:
    """N=4, order 1: tokens {0,1} never lead to {2,3} and vice versa, so the chain has two attractors."""
    rng = np.random.default_rng(7)
    table = rng.normal(size=(4, 4))
    table[:2, 2:] = -np.inf
    table[2:, :2] = -np.inf
    return sj.NGramModel(table, context_length=4, name="split")


class RecordingModel:
    """A numpy model that records every call (to prove an error came before any evaluation)."""

    jittable = False

    def __init__(self, n_tokens: int, seed: int = 0):
        self.n_tokens = n_tokens
        self.context_length = None
        self.calls = []
        self._rng = np.random.default_rng(seed)
        self._w = self._rng.normal(size=(n_tokens, n_tokens))

    def __call__(self, contexts):
        c = np.asarray(contexts)
        self.calls.append(c.shape)
        return self._w[c[:, -1]]


@pytest.fixture
def recording_model():
    return RecordingModel

"""The sampler's key/value cache: same tokens as the plain whole-context path, fallbacks, agreement.

Equality of tokens: both paths split the key identically and draw with
``jax.random.categorical`` (argmax of log-probabilities plus the same Gumbel
noise) from the same procedure; their logits differ by float32 round-off only
(~1e-6 absolute, asserted below to 1e-5 relative + 1e-4 absolute), so a token
can differ only where the two best perturbed scores lie within that round-off:
a chance of order 1e-6 to 1e-5 per draw, i.e. well under one expected
difference in the few thousand draws here. These seeds give zero differences
(deterministically); a failure of the equality means a real change of the
draws (a key used differently, a wrong position), not bad luck.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import semio_jax as sj
from semio_jax.agreement import check_basins
from semio_jax.montecarlo import Sampler
from semio_jax.montecarlo.rollout import supports_kv_cache
from semio_models.transformer import TransformerConfig, TransformerModel


def _scaled(cfg: TransformerConfig, seed: int, scale: float) -> TransformerModel:
    """Random weights times ``scale``: peaked (not near-uniform) next-token laws."""
    base = TransformerModel.random(cfg, seed=seed)
    return TransformerModel(cfg, jax.tree_util.tree_map(lambda a: a * scale, base.params))


@pytest.fixture(scope="module")
def tiny() -> TransformerModel:
    """N = 2, L = 4, two blocks. Under top_p=0.8 it has two attractors (0000, 1111) and
    the prompt "0" splits between them (about 0.37 / 0.63)."""
    return _scaled(TransformerConfig(n_tokens=2, context_length=4, n_layers=2, d_model=16, n_heads=2), 1, 3.0)


@pytest.fixture(scope="module")
def tiny_samplers(tiny) -> tuple[Sampler, Sampler]:
    """(plain, cached) samplers of ``tiny``, reused across tests so each shape compiles once."""
    plain = Sampler(tiny, "temperature=1", 4, kv_cache=False)
    cached = Sampler(tiny, "temperature=1", 4, kv_cache=True)
    assert not plain.kv_cache and cached.kv_cache
    return plain, cached


def test_cached_step_and_prefill_match_the_forward_pass(tiny):
    x = np.random.default_rng(0).integers(0, 2, size=(16, 4)).astype(np.int32)
    full = np.asarray(tiny.logits_all(x))  # [B, L, N]
    cache = tiny.init_cache(16)
    for t in range(4):
        logits, cache = tiny.cached_step(cache, jnp.asarray(x[:, t]), t)
        np.testing.assert_allclose(np.asarray(logits), full[:, t], atol=1e-4, rtol=1e-5)
        if t == 2:
            pre = tiny.prefill(x[:, : t + 1])  # the same cache in one pass
            for a, b in zip(pre, cache):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-5)
    # a per-sequence position vector: each sequence stops at its own length
    ends = np.array([0, 1, 2, 3] * 4)
    cache = tiny.init_cache(16)
    for step in range(4):
        t = np.minimum(step, ends)
        logits, cache = tiny.cached_step(cache, jnp.asarray(x[np.arange(16), t]), jnp.asarray(t, jnp.int32))
    np.testing.assert_allclose(np.asarray(logits), full[np.arange(16), ends], atol=1e-4, rtol=1e-5)


def test_cached_equals_plain_tokens_on_a_random_transformer(tiny_samplers):
    plain, cached = tiny_samplers
    rng = np.random.default_rng(1)
    # (prompt length, steps): growing then sliding over several chunks (of 3); growth cut short;
    # full from the start. (Growth from a longer prompt, via prefill: the zoo test below.)
    for k, n_steps in ((1, 12), (1, 2), (4, 6)):
        prompts = rng.integers(0, 2, size=(200, k))
        for seed in (0, 1):
            a, b = plain.sample(prompts, n_steps, seed, chunk=3), cached.sample(prompts, n_steps, seed, chunk=3)
            assert a.shape == b.shape == (200, n_steps)
            np.testing.assert_array_equal(a, b, err_msg=f"k={k} n_steps={n_steps} seed={seed}")
    assert cached.sample(prompts, 0, seed=0).shape == (200, 0)


def test_cached_equals_plain_tokens_on_a_zoo_model():
    from semio_models.checkpoint import load

    model = load("markov2")  # N = 4, L = 5
    plain = Sampler(model, "temperature=1", 5, kv_cache=False)
    cached = Sampler(model, "temperature=1", 5)
    assert cached.kv_cache
    prompts = np.random.default_rng(2).integers(0, 4, size=(256, 4))
    for seed in (0, 1, 2):  # 1 growing step (prompt through prefill, then one cached step), 2 full-window steps
        np.testing.assert_array_equal(plain.sample(prompts, 3, seed), cached.sample(prompts, 3, seed),
                                      err_msg=f"seed={seed}")


def test_models_without_the_capability_use_the_plain_path(tiny, tiny_samplers, ngram3):
    wrapped = sj.FunctionModel(lambda c: tiny(c), n_tokens=2, context_length=4, name="wrapped")
    assert not supports_kv_cache(wrapped, 4) and not supports_kv_cache(ngram3, 4)
    assert supports_kv_cache(tiny, 4) and supports_kv_cache(tiny, 3) and not supports_kv_cache(tiny, 5)
    s = Sampler(wrapped, "temperature=1", 4)
    assert not s.kv_cache
    with pytest.raises(ValueError, match="kv_cache=True"):
        Sampler(wrapped, "temperature=1", 4, kv_cache=True)
    prompts = np.random.default_rng(4).integers(0, 2, size=(200, 4))
    # the wrapper calls the same forward pass as the plain path: identical draws
    np.testing.assert_array_equal(s.sample(prompts, 3, seed=3, chunk=3),
                                  tiny_samplers[0].sample(prompts, 3, seed=3, chunk=3))
    numpy_model = sj.FunctionModel(lambda c: np.asarray(tiny(np.asarray(c))), n_tokens=2, context_length=4,
                                   jittable=False)
    assert not Sampler(numpy_model, "temperature=1", 4).kv_cache
    assert Sampler(ngram3, "temperature=1", 3).sample(np.zeros((8, 3), np.int32), 2, seed=0).shape == (8, 2)


def test_shared_samplers_keep_the_cache_setting_apart(tiny):
    a = Sampler.shared(tiny, "temperature=1", 4)
    b = Sampler.shared(tiny, "temperature=1", 4, kv_cache=False)
    assert a is not b and a.kv_cache and not b.kv_cache
    assert Sampler.shared(tiny, "temperature=1", 4) is a


def test_check_basins_passes_with_the_cached_sampler(tiny):
    # chains from the one-token prompt "0" start in the growing phase, where the cache is used
    op = sj.build_operator(tiny, sj.StateSpace(2, 4), "top_p=0.8")
    assert len(sj.attractors(op)) == 2
    s0 = op.space.index([0])
    h = sj.basins(op)[s0]
    assert ((h > 0.2) & (h < 0.8)).all()
    assert Sampler.shared(tiny, op.procedure, 4).kv_cache
    rep = check_basins(op, tiny, starts=[s0], horizon=40, n_chains=1000, seed=0)
    assert rep.passed, rep.table()
    assert rep.n_tests == 2

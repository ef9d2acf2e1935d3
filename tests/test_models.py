"""Tests of semio_models: transformer, sources, training, checkpoints and the shipped zoo."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semio_jax.errors import (
    ArchitectureMismatchError,
    CheckpointError,
    ChecksumMismatchError,
    ReportWriteError,
    StateSpaceTooLargeError,
    UnknownModelError,
    UnknownTokenError,
)
from semio_models import checkpoint
from semio_models.sources import (
    CoinSource,
    DyckSource,
    MarkovSource,
    entropy,
    parse_source,
    source_from_spec,
)
from semio_models.train import exact_loss, train
from semio_models.transformer import TransformerConfig, TransformerModel

TINY = TransformerConfig(n_tokens=3, context_length=5, n_layers=1, d_model=8, n_heads=2)


@pytest.fixture
def x64():
    """Switch jax_enable_x64 on for one test (as the engine does), then restore it."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture(scope="module")
def tiny_model():
    return TransformerModel.random(TINY, seed=1)


def window_index(x: np.ndarray, n_tokens: int) -> np.ndarray:
    k = x.shape[1]
    return (x.astype(np.int64) * n_tokens ** np.arange(k - 1, -1, -1)).sum(1)


SOURCES = [
    CoinSource(0.5),
    CoinSource(0.7),
    MarkovSource(n_tokens=3, order=1, seed=4, concentration=0.5),
    MarkovSource(n_tokens=4, order=2, seed=0, concentration=0.3),
    DyckSource(max_depth=3),
    DyckSource(max_depth=2, p_open=0.3),
]


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_round_trip():
    c = TransformerConfig(n_tokens=4, context_length=6, d_model=16, n_heads=4)
    assert c.d_ff == 64 and c.d_head == 4
    assert TransformerConfig.from_dict(c.to_dict()) == c
    assert json.loads(json.dumps(c.to_dict())) == c.to_dict()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_tokens=1, context_length=4), "n_tokens"),
        (dict(n_tokens=2, context_length=0), "context_length"),
        (dict(n_tokens=2, context_length=4, d_model=10, n_heads=3), "divide"),
        (dict(n_tokens=2, context_length=4, n_layers=True), "int"),
        (dict(n_tokens=2.0, context_length=4), "int"),
        (dict(n_tokens=2, context_length=4, d_ff=-1), "d_ff"),
        (dict(n_tokens=2, context_length=4, layer_norm_eps=0.0), "layer_norm_eps"),
        (dict(n_tokens=2, context_length=4, activation="swish"), "activation"),
        (dict(n_tokens=2, context_length=4, bias="yes"), "bias"),
        (dict(n_tokens=2, context_length=4, tie_embeddings=1), "tie_embeddings"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerConfig(**kwargs)


def test_config_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match="unknown.*dropout"):
        TransformerConfig.from_dict({"n_tokens": 2, "context_length": 3, "dropout": 0.1})
    with pytest.raises(ValueError, match="context_length"):
        TransformerConfig.from_dict({"n_tokens": 2})
    with pytest.raises(ValueError):
        TransformerConfig.from_dict([2, 3])


# ----------------------------------------------------------------------------- transformer


def test_shapes_dtype_and_call_is_last_position(tiny_model):
    x = np.array([[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]], dtype=np.int32)
    all_logits = tiny_model.logits_all(x)
    assert all_logits.shape == (2, 5, 3) and all_logits.dtype == jnp.float32
    last = tiny_model(x)
    assert last.shape == (2, 3) and last.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(last), np.asarray(all_logits[:, -1]))
    for k in range(1, 6):
        assert tiny_model(x[:, :k]).shape == (2, 3)
    assert tiny_model.n_tokens == 3 and tiny_model.context_length == 5
    assert "params=" in repr(tiny_model) and "d_model=8" in repr(tiny_model)
    assert tiny_model.param_count == sum(a.size for a in jax.tree_util.tree_leaves(tiny_model.params))


# with the defaults (gelu_tanh, biases, untied, logit bias) every switch is seen both ways
GPT2_SWITCHES = [dict(activation="gelu", bias=False, tie_embeddings=True, unembed_bias=False),
                 dict(activation="relu", tie_embeddings=True)]


@pytest.mark.parametrize("switches", GPT2_SWITCHES)
def test_gpt2_switches_shape_the_tree_and_agree_across_the_three_forward_passes(switches):
    cfg = TransformerConfig(n_tokens=3, context_length=4, n_layers=2, d_model=8, n_heads=2, **switches)
    rng = np.random.default_rng(4)  # every parameter (zero-initialised biases too) moved: O(1) logits
    params = jax.tree_util.tree_map(lambda a: np.asarray(a) + rng.normal(0, 0.3, a.shape).astype(np.float32),
                                    TransformerModel.random(cfg, seed=4).params)
    model = TransformerModel(cfg, params)
    keys = {"/".join(k) for k in flax.traverse_util.flatten_dict(model.params)}
    assert ("block_0/attn/qkv/bias" in keys) == cfg.bias and ("ln_f/bias" in keys) == cfg.bias
    assert ("unembed/kernel" in keys) == (not cfg.tie_embeddings)
    assert ({"unembed/bias", "unembed_bias"} & keys != set()) == cfg.unembed_bias
    x = np.stack(np.unravel_index(np.arange(81), (3,) * 4), axis=1).astype(np.int32)  # every full context
    full = np.asarray(model.logits_all(x))  # [81, 4, 3], the Flax network
    assert np.abs(full).max() > 0.5
    tree = {}
    model.prefix_tree_logits(4, lambda k, start, lg: tree.update({(k, start + i): r for i, r in enumerate(lg)}),
                             chunk=8)
    for k in range(1, 5):
        walked = np.stack([tree[(k, i)] for i in range(3**k)])  # [3^k, 3], big-endian order
        np.testing.assert_allclose(walked, full[:: 3 ** (4 - k), k - 1], rtol=1e-5, atol=1e-5)
    step, _ = model.cached_step(model.prefill(x[:, :3]), x[:, 3], 3)  # [81, 3], the sampler's cache
    np.testing.assert_allclose(np.asarray(step), full[:, 3], rtol=1e-5, atol=1e-5)
    default = TransformerConfig(n_tokens=3, context_length=4, n_layers=2, d_model=8, n_heads=2)
    other = TransformerModel(default, TransformerModel.random(default, seed=4).params)
    assert repr(model) != repr(other) and all(f"{k}=" in repr(model) for k in switches)


def test_causality(tiny_model):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(16, 5)).astype(np.int32)
    base = np.asarray(tiny_model.logits_all(x))
    for j in range(5):
        y = x.copy()
        y[:, j] = (y[:, j] + 1) % 3
        changed = np.asarray(tiny_model.logits_all(y))
        np.testing.assert_array_equal(changed[:, :j], base[:, :j])  # earlier positions untouched
        assert np.abs(changed[:, j:] - base[:, j:]).max() > 0  # later ones do see it


def test_prefix_consistency_and_position_dependence(tiny_model):
    x = np.array([[1, 0, 2, 2, 1]], dtype=np.int32)
    full = np.asarray(tiny_model.logits_all(x))
    for k in range(1, 5):  # a shorter context sits at positions 0..k-1
        np.testing.assert_allclose(np.asarray(tiny_model.logits_all(x[:, :k])), full[:, :k], atol=1e-5)
    # with a constant context only the position embeddings tell positions apart
    same = np.asarray(tiny_model.logits_all(np.zeros((1, 5), dtype=np.int32)))[0]
    assert np.abs(same[0] - same[1]).max() > 1e-4 and np.abs(same[3] - same[4]).max() > 1e-4


def test_context_checks(tiny_model):
    with pytest.raises(ValueError, match="outside 1..L=5"):
        tiny_model(np.zeros((2, 6), dtype=np.int32))
    with pytest.raises(ValueError, match="outside 1..L"):
        tiny_model(np.zeros((2, 0), dtype=np.int32))
    with pytest.raises(ValueError, match=r"\[B, k\]"):
        tiny_model(np.zeros(3, dtype=np.int32))
    with pytest.raises(ValueError, match="integer"):
        tiny_model(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(UnknownTokenError, match="3"):
        tiny_model(np.array([[0, 3]]))
    with pytest.raises(UnknownTokenError):
        tiny_model([[0, -1]])


def test_out_of_range_tokens_inside_jit_give_nan_from_that_position_on(tiny_model):
    f = jax.jit(tiny_model.logits_all)
    out = np.asarray(f(jnp.array([[0, 1, 7, 2], [0, 1, -1, 2], [0, 1, 2, 2]], dtype=jnp.int32)))
    assert np.isfinite(out[:, :2]).all() and np.isnan(out[:2, 2:]).all() and np.isfinite(out[2]).all()
    np.testing.assert_array_equal(out[0, :2], out[2, :2])


def test_random_is_deterministic():
    a, b = TransformerModel.random(TINY, 5), TransformerModel.random(TINY, 5)
    c = TransformerModel.random(TINY, 6)
    la, lb, lc = (jax.tree_util.tree_leaves(m.params) for m in (a, b, c))
    assert all(np.array_equal(u, v) for u, v in zip(la, lb))
    assert not all(np.array_equal(u, v) for u, v in zip(la, lc))


def test_float32_under_x64_and_jit_and_scan(x64, tiny_model):
    fresh = TransformerModel.random(TINY, seed=1)  # initialised with x64 on
    for leaf in jax.tree_util.tree_leaves(fresh.params):
        assert leaf.dtype == jnp.float32
    for a, b in zip(jax.tree_util.tree_leaves(fresh.params), jax.tree_util.tree_leaves(tiny_model.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = jnp.array([[0, 1, 2], [2, 1, 0]])  # int64 under x64
    assert x.dtype == jnp.int64
    out = jax.jit(lambda t: fresh(t))(x)
    assert out.dtype == jnp.float32 and out.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(out), np.asarray(fresh(np.asarray(x))), atol=1e-6)

    def body(ctx, _):  # greedy roll-out: the engine's use inside lax.scan
        y = jnp.argmax(fresh(ctx), axis=-1)  # [B]
        return jnp.concatenate([ctx[:, 1:], y[:, None].astype(ctx.dtype)], axis=1), y

    start = jnp.zeros((2, 5), dtype=jnp.int32)
    _, ys = jax.lax.scan(body, start, None, length=4)
    ctx, manual = np.zeros((2, 5), dtype=np.int32), []
    for _ in range(4):
        y = np.asarray(jnp.argmax(fresh(ctx), axis=-1))
        manual.append(y)
        ctx = np.concatenate([ctx[:, 1:], y[:, None].astype(np.int32)], axis=1)
    np.testing.assert_array_equal(np.asarray(ys), np.stack(manual))


# ----------------------------------------------------------------------------- sources


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_window_probs_normalised_and_consistent(source):
    N = source.n_tokens
    assert source.window_probs(0).tolist() == [1.0]
    for k in range(1, 7):
        w = source.window_probs(k)
        assert w.shape == (N**k,) and w.dtype == np.float64 and (w >= 0).all()
        assert abs(w.sum() - 1.0) < 1e-12
        longer = source.window_probs(k + 1)
        np.testing.assert_allclose(longer.reshape(-1, N).sum(1), w, atol=1e-14)  # drop newest token
        np.testing.assert_allclose(longer.reshape(N, -1).sum(0), w, atol=1e-14)  # drop oldest (stationarity)


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_window_probs_match_monte_carlo(source):
    k, n = 5, 200_000
    x = source.sample(np.random.default_rng(123), n, k)
    assert x.dtype == np.int32 and x.shape == (n, k)
    freq = np.bincount(window_index(x, source.n_tokens), minlength=source.n_tokens**k) / n
    p = source.window_probs(k)
    tol = 4.5 * np.sqrt(p * (1 - p) / n) + 1e-12  # 4.5 standard errors of a binomial frequency
    assert (np.abs(freq - p) <= tol).all(), np.abs(freq - p).max()
    assert (freq[p == 0] == 0).all()


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_next_token_probs_are_window_ratios(source):
    N = source.n_tokens
    assert np.allclose(source.next_token_probs(np.zeros((1, 0), dtype=int)), source.window_probs(1))
    for k in (1, 2, 4):
        ctx = np.array(np.unravel_index(np.arange(N**k), (N,) * k)).T  # every context, big-endian order
        joint = source.window_probs(k + 1).reshape(N**k, N)
        pc = joint.sum(1)
        cond = source.next_token_probs(ctx)
        live = pc > 0
        np.testing.assert_allclose(cond[live], joint[live] / pc[live, None], atol=1e-12)
        assert np.isnan(cond[~live]).all()


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_conditional_entropy_decreases_to_entropy_rate(source):
    h = [source.conditional_entropy(k) for k in range(1, 10)]
    assert all(a >= b - 1e-12 for a, b in zip(h, h[1:]))
    assert h[-1] >= source.entropy_rate - 1e-12


def test_coin_entropy_rate():
    assert CoinSource().entropy_rate == pytest.approx(math.log(2), abs=1e-15)
    assert CoinSource(0.7).entropy_rate == pytest.approx(-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)))
    assert CoinSource(0.7).conditional_entropy(4) == pytest.approx(CoinSource(0.7).entropy_rate, abs=1e-12)


def test_markov_entropy_rate_brute_force():
    src = MarkovSource(n_tokens=3, order=2, seed=7, concentration=0.4)
    N, m = 3, 2
    # explicit chain on pairs (a, b) -> (b, c), stationary law by power iteration
    states = [(a, b) for a in range(N) for b in range(N)]
    P = np.zeros((9, 9))
    for i, (a, b) in enumerate(states):
        for c in range(N):
            P[i, states.index((b, c))] += src.kernel[a, b, c]
    pi = np.full(9, 1 / 9)
    for _ in range(5000):
        pi = pi @ P
    h = sum(pi[i] * -sum(q * math.log(q) for q in src.kernel[a, b] if q > 0) for i, (a, b) in enumerate(states))
    assert src.entropy_rate == pytest.approx(h, abs=1e-10)
    for k in range(m + 1, 7):  # a Markov chain of order m has H(X_k | past) = h for k > m
        assert src.conditional_entropy(k) == pytest.approx(h, abs=1e-10)
    # the direct window formula agrees with the generic forward algorithm
    np.testing.assert_allclose(src.window_probs(6), src._forward_window_probs(6), atol=1e-15)


def test_markov_kernel_validation():
    with pytest.raises(ValueError, match="shape"):
        MarkovSource(n_tokens=2, order=1, kernel=[[0.5, 0.5]])
    with pytest.raises(ValueError, match="sum to 1"):
        MarkovSource(n_tokens=2, order=1, kernel=[[0.5, 0.6], [0.5, 0.5]])
    with pytest.raises(ValueError, match="reducible"):
        MarkovSource(n_tokens=2, order=1, kernel=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="not both"):
        MarkovSource(n_tokens=2, order=1, kernel=[[0.5, 0.5], [0.5, 0.5]], seed=1)
    with pytest.raises(ValueError, match="concentration"):
        MarkovSource(n_tokens=2, order=1, seed=1, concentration=0)
    with pytest.raises(StateSpaceTooLargeError):
        MarkovSource(n_tokens=10, order=5)
    src = MarkovSource(n_tokens=2, order=1, kernel=[[0.9, 0.1], [0.2, 0.8]])
    np.testing.assert_allclose(src.window_probs(1), [2 / 3, 1 / 3])
    assert src.entropy_rate == pytest.approx(2 / 3 * entropy([0.9, 0.1]) + 1 / 3 * entropy([0.2, 0.8]))


def test_dyck_stationary_law_and_words():
    src = DyckSource(max_depth=3, p_open=0.5)
    np.testing.assert_allclose(src.pi, np.array([2, 2, 2, 1]) / 7, atol=1e-12)
    assert src.entropy_rate == pytest.approx(6 / 7 * math.log(2), abs=1e-12)
    x = src.sample(0, 500, 40)
    for row in x:
        seps = np.flatnonzero(row == DyckSource.SEP)
        if len(seps) == 0:
            continue
        depth = 0
        for t in row[seps[0] + 1 :]:  # after a separator the depth is known to be 0
            if t == DyckSource.SEP:
                assert depth == 0
            depth += {0: 1, 1: -1, 2: 0}[int(t)]
            assert 0 <= depth <= 3


def test_sample_is_deterministic_and_accepts_generators():
    src = DyckSource()
    np.testing.assert_array_equal(src.sample(3, 10, 7), src.sample(np.random.default_rng(3), 10, 7))
    assert src.sample(0, 0, 5).shape == (0, 5)
    with pytest.raises(ValueError):
        src.sample(0.5, 2, 2)


def test_parse_and_spec_round_trip():
    assert parse_source("coin") == CoinSource(0.5)
    assert parse_source("coin:p=0.6") == CoinSource(0.6)
    assert parse_source(" markov:n_tokens=4,order=2,seed=0 ") == MarkovSource(4, 2, seed=0)
    assert parse_source("markov:n=4,order=2,seed=0,alpha=0.3").concentration == 0.3
    assert parse_source("dyck:max_depth=3") == DyckSource(3)
    explicit = MarkovSource(n_tokens=2, order=1, kernel=[[0.9, 0.1], [0.2, 0.8]])
    for src in SOURCES + [explicit]:
        spec = json.loads(json.dumps(src.spec()))
        again = source_from_spec(spec)
        assert again == src and again.name == src.name
        np.testing.assert_array_equal(again.window_probs(4), src.window_probs(4))
    for src in SOURCES:
        assert parse_source(src.cli_string()) == src
    with pytest.raises(ValueError, match="cli|table|CLI"):
        explicit.cli_string()


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "source string"),
        ("zipf", "unknown source kind"),
        ("coin:q=0.3", "unknown parameter"),
        ("coin:p", "key=value"),
        ("coin:p=abc", "bad value"),
        ("coin:p=1.5", r"\[0, 1\]"),
        ("dyck:p=0.5,p_open=0.4", "twice"),
        ("markov:n_tokens=4,order=0", "order"),
    ],
)
def test_parse_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_source(text)


def test_source_from_spec_errors():
    with pytest.raises(ValueError, match="kind"):
        source_from_spec({"p_heads": 0.5})
    with pytest.raises(ValueError, match="unknown parameter"):
        source_from_spec({"kind": "coin", "bias": 0.5})


def test_next_token_probs_checks_tokens():
    with pytest.raises(UnknownTokenError):
        DyckSource().next_token_probs([[0, 3]])


# ----------------------------------------------------------------------------- training and exact loss


class Oracle:
    """The source itself as a model: logits = log P(y | context)."""

    def __init__(self, source, L):
        self.source, self.n_tokens, self.context_length = source, source.n_tokens, L

    def logits_all(self, x):
        x = np.asarray(x)
        with np.errstate(divide="ignore"):
            cols = [np.log(self.source.next_token_probs(x[:, : i + 1])) for i in range(x.shape[1])]
        return np.nan_to_num(np.stack(cols, axis=1), nan=0.0)  # zero-probability contexts are skipped anyway


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_exact_loss_of_the_source_itself_is_the_conditional_entropy(source):
    e = exact_loss(Oracle(source, 4), source)
    np.testing.assert_allclose(e.per_position, [source.conditional_entropy(k) for k in range(2, 6)], atol=1e-12)
    assert abs(e.excess_last) < 1e-12 and abs(e.excess_mean) < 1e-12


def test_exact_loss_matches_monte_carlo(tiny_model):
    src = DyckSource(max_depth=2, p_open=0.4)
    e = exact_loss(tiny_model, src)
    x = src.sample(0, 40_000, 6)
    logits = np.asarray(tiny_model.logits_all(x[:, :5]), dtype=np.float64)
    logq = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logq, x[:, 1:, None], axis=-1)[..., 0]  # [n, 5]
    se = ce.std(0) / np.sqrt(len(ce))
    assert (np.abs(ce.mean(0) - e.per_position) < 4.5 * se).all()
    assert e.last_position > e.conditional_entropy_last  # a random model is worse than optimal
    with pytest.raises(StateSpaceTooLargeError):
        exact_loss(tiny_model, src, max_windows=100)


def test_training_is_deterministic_and_learns():
    cfg = TransformerConfig(n_tokens=2, context_length=4, n_layers=1, d_model=8, n_heads=2)
    src = CoinSource(0.8)
    kw = dict(steps=60, batch_size=32, learning_rate=1e-2, weight_decay=0.01, progress=False)
    seen = []
    a = train(cfg, src, seed=3, callback=lambda step, loss, params: seen.append((step, loss)), **kw)
    b = train(cfg, src, seed=3, **kw)
    c = train(cfg, src, seed=4, **kw)
    for u, v in zip(jax.tree_util.tree_leaves(a.model.params), jax.tree_util.tree_leaves(b.model.params)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.array_equal(a.losses, c.losses)
    assert [s for s, _ in seen] == list(range(1, 61)) and seen[-1][1] == pytest.approx(float(a.losses[-1]))
    assert a.losses.shape == (60,) and a.losses.dtype == np.float32
    assert a.losses[-10:].mean() < a.losses[:10].mean()
    assert a.hyperparams["seed"] == 3 and a.hyperparams["steps"] == 60
    with pytest.raises(ValueError, match="n_tokens"):
        train(TINY, src, steps=1, progress=False)


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture
def saved(tmp_path, tiny_model):
    folder = tmp_path / "ckpt"
    checkpoint.save(folder, tiny_model, {"name": "tiny", "seed": 1})
    return folder


def test_checkpoint_round_trip(saved, tiny_model):
    assert sorted(p.name for p in saved.iterdir()) == ["card.json", "weights.msgpack"]  # no temp files left
    card = checkpoint.load_card(saved)
    assert card["name"] == "tiny" and card["format_version"] == checkpoint.FORMAT_VERSION
    assert card["config"] == TINY.to_dict() and card["n_params"] == tiny_model.param_count
    assert set(card["versions"]) >= {"jax", "flax", "optax"}
    model = checkpoint.load(saved)
    assert model.config == TINY and model.card["name"] == "tiny" and "tiny" in repr(model)
    x = np.array([[0, 1, 2, 1]])
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(tiny_model(x)))
    with pytest.raises(ValueError, match="config"):
        checkpoint.save(saved, tiny_model, {"config": {}})


def test_checkpoint_tampered_byte(saved):
    w = saved / "weights.msgpack"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="expected [0-9a-f]{64}.*found [0-9a-f]{64}"):
        checkpoint.load(saved)


def _rewrite(folder: Path, weights: bytes | None = None, **card_changes):
    card = json.loads((folder / "card.json").read_text())
    if weights is not None:
        (folder / "weights.msgpack").write_bytes(weights)
        card["weights_sha256"] = checkpoint.sha256_hex(weights)
    card.update(card_changes)
    (folder / "card.json").write_text(json.dumps(card))


def test_checkpoint_truncated_weights_with_matching_hash(saved):
    data = (saved / "weights.msgpack").read_bytes()
    _rewrite(saved, weights=data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="msgpack") as info:
        checkpoint.load(saved)
    assert type(info.value) is CheckpointError
    _rewrite(saved, weights=b"\xc1 garbage")
    with pytest.raises(CheckpointError):
        checkpoint.load(saved)


def test_checkpoint_wrong_architecture(saved, tiny_model):
    _rewrite(saved, config={**TINY.to_dict(), "d_model": 16, "d_ff": 32})
    with pytest.raises(ArchitectureMismatchError, match="block_0/attn/out/bias"):
        checkpoint.load(saved)
    _rewrite(saved, config={**TINY.to_dict(), "n_layers": 2})
    with pytest.raises(ArchitectureMismatchError, match="block_1"):
        checkpoint.load(saved)
    from flax import serialization

    extra = {**jax.tree_util.tree_map(np.asarray, tiny_model.params), "extra": {"w": np.zeros(2, np.float32)}}
    _rewrite(saved, weights=serialization.to_bytes(extra), config=TINY.to_dict())
    with pytest.raises(ArchitectureMismatchError, match="extra/w"):
        checkpoint.load(saved)


def test_checkpoint_damaged_cards(saved):
    (saved / "card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint.load(saved)
    (saved / "card.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        checkpoint.load(saved)
    (saved / "card.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version"):
        checkpoint.load(saved)
    (saved / "card.json").write_text(json.dumps({"format_version": 1, "config": {"n_tokens": 2}, "weights_sha256": "0"}))
    with pytest.raises(CheckpointError, match="invalid config"):
        checkpoint.load(saved)
    (saved / "card.json").unlink()
    with pytest.raises(CheckpointError, match="no card.json"):
        checkpoint.load(saved)


def test_checkpoint_missing_weights(saved):
    (saved / "weights.msgpack").unlink()
    with pytest.raises(CheckpointError, match="no weights.msgpack"):
        checkpoint.load(saved)


def test_unknown_model_lists_zoo_names(tmp_path):
    with pytest.raises(UnknownModelError) as info:
        checkpoint.load("no-such-model")
    assert "no-such-model" in str(info.value)
    for name in checkpoint.zoo_names():
        assert name in str(info.value)
    with pytest.raises(UnknownModelError):
        checkpoint.load(tmp_path / "missing")


def test_unwritable_folder(tmp_path, tiny_model):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "ckpt"  # a folder inside a regular file can never be created (even as root)
    with pytest.raises(ReportWriteError, match="a-file"):
        checkpoint.save(target, tiny_model, {})


# ----------------------------------------------------------------------------- the shipped zoo

ZOO = {"coin": 0.02, "markov2": 0.02, "dyck": None, "pydoc": 0.25}  # name -> bound on the last-position excess loss


def test_zoo_lists_the_shipped_models():
    assert set(ZOO) <= set(checkpoint.zoo_names())
    assert checkpoint.zoo_dir().name == "zoo"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_loads_and_reproduces_its_card(name):
    folder = checkpoint.zoo_dir() / name
    assert (folder / "weights.msgpack").stat().st_size < 1_000_000
    model = checkpoint.load(name)
    card = model.card
    assert card["weights_sha256"] == checkpoint.sha256_hex((folder / "weights.msgpack").read_bytes())
    assert card["name"] == name and card["retrain_command"].startswith("semio train ")
    if card["source"]["kind"] == "pydoc" and card["source"]["python"] != sys.version.split()[0]:
        pytest.skip(f"the pydoc corpus of Python {card['source']['python']} is not this Python's")
    source = source_from_spec(card["source"])
    assert source.n_tokens == model.n_tokens
    e = exact_loss(model, source)
    assert e.last_position == pytest.approx(card["exact_last_position_loss"], abs=1e-5)
    assert e.mean == pytest.approx(card["exact_mean_loss"], abs=1e-5)
    if source.exact_entropy_rate:
        assert card["source_entropy_rate"] == pytest.approx(source.entropy_rate, abs=1e-12)
    else:  # a corpus: no entropy rate, but its provenance and the alphabet its text is read in
        assert card["source_entropy_rate"] is None and card["corpus"]["sha256"] == card["source"]["sha256"]
        assert card["corpus"]["license"] and card["alphabet"] == card["source"]["alphabet"]
    assert card["source_conditional_entropy_last"] == pytest.approx(
        source.conditional_entropy(model.context_length + 1), abs=1e-12
    )
    assert e.excess_last == pytest.approx(card["excess_last_position_loss"], abs=1e-5)
    assert e.excess_last > -1e-6
    if ZOO[name] is not None:
        assert e.excess_last < ZOO[name]

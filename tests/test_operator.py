"""The exact operator: equal to a brute-force numpy build; products; errors."""

from __future__ import annotations

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.testing import references
from semio_jax import sampling as S
from semio_jax.build import evaluate_logits
from semio_jax.testing import ngram_models, operators, procedures

from helpers import brute_force, dense_reference

HAVE_TRANSFORMER = importlib.util.find_spec("semio_models") is not None and \
    importlib.util.find_spec("semio_models.transformer") is not None


def assert_matches_brute_force(model, space, procedure, tol=1e-12):
    op = sj.build_operator(model, space, procedure)
    probs, succ, logits = brute_force(model, space.n_tokens, space.length, space.prefixes, procedure)
    np.testing.assert_array_equal(op.successors, succ)
    np.testing.assert_allclose(op.probs, probs, rtol=0, atol=tol)
    np.testing.assert_array_equal(op.probs > 0, probs > 0)
    assert op.logits is not None
    np.testing.assert_array_equal(op.logits, logits)
    assert op.procedure == S.parse(procedure)
    return op


# ------------------------------------------------------------ model kinds
def test_ngram_model_matches_brute_force(ngram3):
    for space in (sj.StateSpace(3, 3), sj.StateSpace(3, 2, prefixes=False), sj.StateSpace(3, 1)):
        for proc in ("temperature=1", "temperature=0.7,top_k=2", "top_p=0.8,min_p=0.2", "greedy"):
            assert_matches_brute_force(ngram3, space, proc)


@pytest.mark.property
@given(ngram_models(max_tokens=3, max_order=2), st.integers(1, 3), st.data())
def test_random_ngram_models_match_brute_force(model, length, data):
    proc = data.draw(procedures(model.n_tokens))
    space = sj.StateSpace(model.n_tokens, length, data.draw(st.booleans()))
    op = sj.build_operator(model, space, proc)
    probs, succ, _ = brute_force(model, space.n_tokens, space.length, space.prefixes, proc)
    # the build decides every truncation exactly, so every row agrees with the decimal loop, boundaries included
    np.testing.assert_array_equal(op.successors, succ)
    np.testing.assert_allclose(op.probs, probs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(op.support, probs > 0)


def test_ngram_prefix_rule_is_the_average_over_missing_tokens():
    table = np.log(np.random.default_rng(3).dirichlet(np.ones(2), size=(2, 2)))  # order 2, N = 2
    m = sj.NGramModel(table)
    probs_full = np.exp(table)  # rows already normalised
    got = np.asarray(m(np.array([[1]], dtype=np.int32)))[0]
    np.testing.assert_allclose(np.exp(got), probs_full[:, 1].mean(axis=0), rtol=1e-6)


def test_numpy_function_model_matches_brute_force():
    rng = np.random.default_rng(11)
    w = rng.normal(size=(4, 3, 3))  # position x token -> logits

    def fn(contexts):
        c = np.asarray(contexts)
        k = c.shape[1]
        out = np.zeros((c.shape[0], 3))
        for pos in range(k):
            out += w[pos][c[:, pos]] / (1 + pos)
        out[c[:, -1] == 2, 0] = -np.inf  # token 0 never follows token 2
        return out

    model = sj.FunctionModel(fn, n_tokens=3, context_length=4, jittable=False, name="numpy")
    for proc in ("temperature=1.3", "top_k=2", "top_p=0.7", "greedy"):
        op = assert_matches_brute_force(model, sj.StateSpace(3, 3), proc)
    assert op.logits.dtype == np.float64  # a float64 model keeps float64 logits
    # batch size does not matter (padding of the last chunk)
    op7 = sj.build_operator(model, sj.StateSpace(3, 3), "greedy", batch_size=7)
    np.testing.assert_array_equal(op7.probs, op.probs)


def test_jittable_function_model_matches_brute_force():
    def fn(c):
        c = jnp.asarray(c)
        return jnp.stack([c.sum(axis=1) * 0.3, c[:, -1] * 0.7, -c[:, 0] * 0.2], axis=1).astype(jnp.float32)

    model = sj.FunctionModel(fn, n_tokens=3)
    assert_matches_brute_force(model, sj.StateSpace(3, 3), "temperature=0.9,top_k=2")


def _random_transformer(n_tokens=3, length=3, seed=0):
    from semio_models.transformer import TransformerConfig, TransformerModel
    cfg = TransformerConfig(n_tokens=n_tokens, context_length=length, n_layers=1, d_model=16, n_heads=2)
    return TransformerModel.random(cfg, seed)


@pytest.mark.skipif(not HAVE_TRANSFORMER, reason="semio_models.transformer is not available")
def test_random_transformer_matches_brute_force():
    model = _random_transformer()
    space = sj.StateSpace(3, 3)
    op = sj.build_operator(model, space, "temperature=0.8")
    probs, succ, logits = brute_force(model, 3, 3, True, "temperature=0.8")
    np.testing.assert_array_equal(op.successors, succ)
    # The reference calls the model eagerly, the engine under jax.jit. On this CPU backend the float32
    # logits come out bit-identical; another backend may fuse differently and change the last bits, so
    # only then is the comparison relaxed to float32 accuracy. The procedure is always exact (1e-12)
    # on the engine's own logits.
    np.testing.assert_allclose(op.probs, references.probabilities_reference(op.procedure, op.logits.astype(np.float64)),
                               rtol=0, atol=1e-12)
    if np.array_equal(op.logits, logits):
        np.testing.assert_allclose(op.probs, probs, rtol=0, atol=1e-12)
    else:  # pragma: no cover - backend dependent
        np.testing.assert_allclose(op.logits, logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(op.probs, probs, rtol=0, atol=1e-5)
    for proc in ("top_k=2", "greedy", "top_p=0.9,temperature=1.5"):
        op2 = op.with_procedure(proc)
        np.testing.assert_allclose(op2.probs, references.probabilities_reference(S.parse(proc), op.logits.astype(np.float64)),
                                   rtol=0, atol=1e-12)


# ------------------------------------------------------------ matrices
@pytest.mark.property
@given(operators())
def test_to_scipy_equals_dense_reference(op):
    dense = dense_reference(op)
    mat = op.to_scipy()
    assert mat.shape == (op.num_states, op.num_states)
    np.testing.assert_array_equal(mat.toarray(), dense)
    assert (mat.data != 0).all(), "explicit zeros must be dropped"
    np.testing.assert_array_equal(op.adjacency().toarray() != 0, dense > 0)
    assert op.to_scipy("csc").format == "csc"


@pytest.mark.property
@given(operators(), st.integers(0, 2**32 - 1))
def test_block_is_the_dense_matrix_restricted(op, seed):
    """op.block(states) = the hand-built dense matrix's rows and columns at ``states``, in their order
    (a random subset, shuffled), with no explicit zeros; and it never builds the whole CSR."""
    rng = np.random.default_rng(seed)
    states = rng.permutation(op.num_states)[: rng.integers(0, op.num_states + 1)]
    blk = op.block(states)
    assert "csr" not in op.__dict__
    np.testing.assert_array_equal(blk.toarray(), dense_reference(op)[np.ix_(states, states)])
    assert (blk.data != 0).all() and blk.has_sorted_indices


@pytest.mark.property
@given(operators(), st.integers(0, 2**32 - 1))
def test_rows_are_the_dense_rows_and_lose_their_diagonal_exactly(op, seed):
    """op.rows(states) = the hand-built dense matrix's rows at ``states`` over all columns; off_diagonal
    with the rows' own columns as diagonal removes exactly P[s, s] and sums the rest (no 1 - p_ss)."""
    from semio_jax.linalg.mmatrix import off_diagonal

    rng = np.random.default_rng(seed)
    states = rng.permutation(op.num_states)[: rng.integers(0, op.num_states + 1)]
    dense = dense_reference(op)
    got = op.rows(states)
    assert "csr" not in op.__dict__ and (got.data != 0).all()
    np.testing.assert_array_equal(got.toarray(), dense[states])
    off, exits = off_diagonal(got, states)
    want = dense[states].copy()
    want[np.arange(states.size), states] = 0.0
    np.testing.assert_array_equal(off.toarray(), want)
    np.testing.assert_allclose(exits, want.sum(axis=1), rtol=1e-15, atol=0)


def test_block_refuses_repeated_or_foreign_states(ngram3):
    op = sj.build_operator(ngram3, sj.StateSpace(3, 3), "temperature=1")
    with pytest.raises(ValueError, match="distinct"):
        op.block([1, 2, 1])
    with pytest.raises(IndexError):
        op.block([0, op.num_states])


@pytest.mark.property
@given(operators(), st.integers(0, 2**32 - 1))
def test_push_pull_equal_dense_products(op, seed):
    rng = np.random.default_rng(seed)
    dense = dense_reference(op)
    v = rng.random(op.num_states)
    f = rng.normal(size=op.num_states)
    np.testing.assert_allclose(op.push(v), v @ dense, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(op.pull(f), dense @ f, rtol=1e-13, atol=1e-14)
    vb = rng.random((op.num_states, 3))
    fb = rng.normal(size=(op.num_states, 3))
    np.testing.assert_allclose(op.push(vb), dense.T @ vb, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(op.pull(fb), dense @ fb, rtol=1e-13, atol=1e-14)
    # duality <push(v), f> = <v, pull(f)>, and push preserves mass
    assert abs(op.push(v) @ f - v @ op.pull(f)) <= 1e-12 * (1 + np.abs(v).sum() * np.abs(f).max())
    assert abs(op.push(v).sum() - v.sum()) <= 1e-12 * v.sum()
    # the products keep no successor table (successors are arithmetic; the property is computed on demand)
    assert not any("succ" in k for k in list(vars(op)) + list(vars(op.space)))


@pytest.mark.property
@given(operators())
def test_rows_stochastic(op):
    assert op.probs.shape == (op.num_states, op.n_tokens) and op.probs.dtype == np.float64
    assert (op.probs >= 0).all()
    assert op.max_row_error <= 1e-12
    assert not op.probs.flags.writeable
    assert op.is_deterministic == bool(np.all((op.probs > 0).sum(axis=1) == 1))


# ------------------------------------------------------------ errors
def _numpy_model(n, fn):
    return sj.FunctionModel(fn, n_tokens=n, jittable=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_posinf_logits(bad):
    def fn(c):
        out = np.zeros((c.shape[0], 3))
        out[(np.asarray(c)[:, -1] == 1), 2] = bad
        return out

    with pytest.raises(sj.NonFiniteLogitsError, match="NaN or \\+inf"):
        sj.build_operator(_numpy_model(3, fn), sj.StateSpace(3, 2))


def test_all_neg_inf_row():
    def fn(c):
        out = np.zeros((c.shape[0], 2))
        out[np.asarray(c)[:, 0] == 1] = -np.inf
        return out

    with pytest.raises(sj.NonFiniteLogitsError, match="every logit is -inf"):
        sj.build_operator(_numpy_model(2, fn), sj.StateSpace(2, 2))


def test_some_neg_inf_is_fine():
    def fn(c):
        out = np.zeros((c.shape[0], 2))
        out[:, 1] = -np.inf
        return out

    op = sj.build_operator(_numpy_model(2, fn), sj.StateSpace(2, 2))
    assert (op.probs[:, 1] == 0).all() and op.is_deterministic


def test_logits_width():
    model = _numpy_model(3, lambda c: np.zeros((np.asarray(c).shape[0], 4)))
    with pytest.raises(sj.LogitsShapeError, match="expected \\[B, N\\]"):
        sj.build_operator(model, sj.StateSpace(3, 2))
    model = _numpy_model(3, lambda c: np.zeros((np.asarray(c).shape[0], 2, 3)))
    with pytest.raises(sj.LogitsShapeError):
        sj.build_operator(model, sj.StateSpace(3, 2))
    with pytest.raises(sj.LogitsShapeError, match="N=4"):  # the model's declared alphabet differs
        sj.build_operator(sj.NGramModel(np.zeros((4, 4))), sj.StateSpace(3, 2))


def test_logits_batch_size():
    """A model returning more (or fewer) rows than contexts is an error, not silently sliced."""
    double = _numpy_model(2, lambda c: np.zeros((2 * np.asarray(c).shape[0], 2)))
    with pytest.raises(sj.LogitsShapeError, match="shape"):
        sj.build_operator(double, sj.StateSpace(2, 2))
    with pytest.raises(sj.LogitsShapeError):  # also when the last chunk is padded
        sj.build_operator(double, sj.StateSpace(2, 2), batch_size=3)
    short = _numpy_model(2, lambda c: np.zeros((1, 2)))
    with pytest.raises(sj.LogitsShapeError):
        sj.build_operator(short, sj.StateSpace(2, 2))


def test_context_length_checked():
    with pytest.raises(ValueError, match="context_length"):
        sj.build_operator(sj.NGramModel(np.zeros((2, 2)), context_length=2), sj.StateSpace(2, 3))


def test_not_stochastic_tables():
    space = sj.StateSpace(2, 1)
    with pytest.raises(sj.NotStochasticError, match="sums to"):
        sj.Operator(space, [[0.5, 0.4], [0.5, 0.5]])
    with pytest.raises(sj.NotStochasticError, match="negative"):
        sj.Operator(space, [[1.5, -0.5], [0.5, 0.5]])
    with pytest.raises(sj.NotStochasticError, match="NaN"):
        sj.Operator(space, [[np.nan, 1.0], [0.5, 0.5]])
    with pytest.raises(sj.LogitsShapeError):
        sj.Operator(space, [[1.0], [1.0]])
    sj.Operator(space, [[0.5, 0.5 + 1e-13], [0.5, 0.5]])  # within the 1e-12 tolerance
    op = sj.Operator(space, [[0.5, 0.4], [0.5, 0.5]], validate=False)
    with pytest.raises(sj.NotStochasticError):
        op.validate()


def test_space_too_large_before_any_model_call(recording_model):
    model = recording_model(3)
    space = sj.StateSpace(3, 4)
    need = sj.estimate_memory(space)["total"]
    with pytest.raises(sj.StateSpaceTooLargeError) as info:
        sj.build_operator(model, space, memory_limit=need // 2)
    assert model.calls == [], "the model must not be called before the size check"
    msg = str(info.value)
    assert "needs about" in msg and "KiB" in msg and "memory budget" in msg
    assert "reduce L or N" in msg
    assert issubclass(sj.StateSpaceTooLargeError, MemoryError)
    # with a sufficient budget the same call works and does call the model
    op = sj.build_operator(model, space, memory_limit=need)
    assert model.calls and op.num_states == space.num_states


def test_estimate_memory():
    space = sj.StateSpace(2, 3)
    est = sj.estimate_memory(space)
    s = space.num_states
    assert est["probs (float64)"] == 8 * s * 2 and not any("successor" in k for k in est)
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    assert sj.estimate_memory(space, keep_logits=False)["logits (float32)"] == 0


def test_invalid_procedure_before_model_call(recording_model):
    model = recording_model(2)
    with pytest.raises(sj.InvalidProcedureError):
        sj.build_operator(model, sj.StateSpace(2, 2), "top_k=3")
    assert model.calls == []


# ------------------------------------------------------------ variants
def test_with_procedure_equals_fresh_build(ngram3):
    space = sj.StateSpace(3, 3)
    base = sj.build_operator(ngram3, space, "temperature=1")
    for proc in ("temperature=0.5", "top_k=2", "top_p=0.6,min_p=0.1", "greedy", S.top_k(1)):
        fresh = sj.build_operator(ngram3, space, proc)
        derived = base.with_procedure(proc)
        np.testing.assert_array_equal(derived.probs, fresh.probs)
        assert derived.procedure == fresh.procedure and derived.fingerprint == fresh.fingerprint
    with pytest.raises(sj.InvalidProcedureError):
        base.with_procedure("top_k=9")
    bare = sj.build_operator(ngram3, space, keep_logits=False)
    assert bare.logits is None
    with pytest.raises(ValueError, match="keep_logits"):
        bare.with_procedure("greedy")


def test_fingerprint_and_summary(ngram3):
    a = sj.build_operator(ngram3, sj.StateSpace(3, 2), "temperature=1")
    b = sj.Operator(a.space, a.probs.copy())
    c = a.with_procedure("temperature=0.9")
    assert a.fingerprint == b.fingerprint != c.fingerprint
    summ = a.summary()
    assert summ["space"]["num_states"] == 12 and summ["procedure"] == "temperature=1"
    assert summ["model"]["class"] == "NGramModel"
    assert "Operator(" in repr(a)


def test_evaluate_logits_batches(ngram3):
    space = sj.StateSpace(3, 3)
    full = evaluate_logits(ngram3, space)
    for bs in (1, 5, 27, 10_000):
        np.testing.assert_array_equal(evaluate_logits(ngram3, space, batch_size=bs), full)


def test_operator_leaves_the_callers_arrays_writable():
    space = sj.StateSpace(2, 3)
    logits = np.zeros((space.num_states, 2), dtype=np.float32)
    probs = np.full((space.num_states, 2), 0.5)
    op = sj.Operator(space, probs, logits=logits)
    assert logits.flags.writeable and probs.flags.writeable  # the caller's arrays are untouched
    assert not op.logits.flags.writeable and not op.probs.flags.writeable  # ours cannot be written through
    with pytest.raises(ValueError):
        op.logits[0, 0] = 1.0


def test_push_full_is_push_restricted_to_full_states():
    rng = np.random.default_rng(3)
    space = sj.StateSpace(3, 4)
    p = rng.random((space.num_states, 3))
    op = sj.Operator(space, p / p.sum(axis=1, keepdims=True))
    x = np.zeros(space.num_states)
    x[: space.num_full] = rng.random(space.num_full)
    np.testing.assert_allclose(op.push_full(x[: space.num_full]), op.push(x)[: space.num_full], rtol=1e-14)
    assert op.push(x)[space.num_full:].sum() == 0.0  # full states never feed prefix states


def test_copy_false_takes_the_table_over():
    """copy=False shares the caller's float64 table and makes it read-only; the default copies it."""
    space = sj.StateSpace(2, 3)
    lp = np.log(np.full((space.num_states, 2), 0.5))
    op = sj.Operator(space, log_probs=lp, copy=False)
    assert np.shares_memory(op.log_probs, lp) and not lp.flags.writeable
    lp2 = np.log(np.full((space.num_states, 2), 0.5))
    op2 = sj.Operator(space, log_probs=lp2)
    assert not np.shares_memory(op2.log_probs, lp2) and lp2.flags.writeable
    p32 = np.full((space.num_states, 2), 0.5, dtype=np.float32)  # not float64: converted, the caller's untouched
    op3 = sj.Operator(space, p32, copy=False)
    assert op3.probs.dtype == np.float64 and p32.flags.writeable and not np.shares_memory(op3.probs, p32)
    assert sj.Operator(space, p32.tolist(), copy=False).probs.dtype == np.float64


def test_logit_rounding_without_copies_matches_the_masked_formula():
    """The bound reads the largest finite |log q| through masks, not a copy of the finite entries:
    the same value as the formula on the copied entries (a table with -inf off its support)."""
    from semio_jax.core.operator import EPS, logit_rounding

    lp = np.log(np.random.default_rng(3).dirichlet(np.ones(4), size=50))
    lp[::7, 1] = -np.inf
    lp[3, 2] = -700.0
    finite = lp[np.isfinite(lp)]
    delta = (4.0 * np.max(np.abs(finite)) + 4.0 * np.log(4) + 2 * 4 + 8) * EPS
    assert logit_rounding(lp) == np.expm1(delta) + EPS
    assert logit_rounding(np.full((2, 3), -np.inf)) == np.expm1((4.0 * np.log(3) + 14) * EPS) + EPS


def test_from_logits_holds_two_tables_at_its_peak():
    """From a float32 logit table: the log-probabilities and their exp, nothing a table's size beside
    them (the computed table is taken over, not copied; the rounding bound copies nothing)."""
    from helpers import traced_peak

    space = sj.StateSpace(2, 19, prefixes=False)  # 2^19 rows: the procedure's batches are an eighth of it
    logits = np.random.default_rng(0).normal(size=(space.num_states, 2)).astype(np.float32)
    proc = S.parse("temperature=0.7")
    sj.Operator.from_logits(space, proc, logits[:8].repeat(space.num_states // 8, axis=0))  # (first-call set-up)
    op, peak = traced_peak(sj.Operator.from_logits, space, proc, logits)
    table = op.probs.nbytes
    assert peak <= 2.5 * table, peak / table  # 2.2 now; 4.1 when the table was copied and its entries too


def test_validate_finds_bad_rows_past_the_first_block():
    """validate works in blocks of APPLY_BATCH rows: a bad row in the third block is found and named
    (its index counted from the table's start), for each kind of defect."""
    from semio_jax.core.operator import APPLY_BATCH

    space = sj.StateSpace(2, 18, prefixes=False)
    row = 2 * APPLY_BATCH + 12345
    assert row < space.num_states
    for value, msg in ((np.nan, "NaN"), (-0.25, "negative"), (0.75, "sums to")):
        probs = np.full((space.num_states, 2), 0.5)
        probs[row, 0] = value
        with pytest.raises(sj.NotStochasticError, match=rf"row {row} .*{msg}"):
            sj.Operator(space, probs)


@pytest.mark.parametrize("n,rows", [(2, 65536), (4, 65536), (16, 16384), (27, 9709), (32, 8192), (4096, 1024)])
def test_procedure_chunks_hold_a_bounded_number_of_bytes(n, rows, monkeypatch):
    """from_logits applies the procedure in chunks of APPLY_BYTES of float64 (at most APPLY_BATCH rows,
    at least 1024): at N = 27 a 65536-row chunk's temporaries kept the build ~110 MiB above its output."""
    import importlib

    opm = importlib.import_module("semio_jax.core.operator")
    seen = []
    monkeypatch.setattr(opm, "exact_log_probabilities", lambda proc, z, batch: seen.append(batch) or
                        np.log(np.full(np.shape(z), 1.0 / np.shape(z)[-1])))
    opm.apply_procedure(S.parse("temperature=1"), np.zeros((3, n), np.float32))
    assert seen == [rows]

"""Storm as an EXTERNAL ORACLE: our operators exported to DRN, solved by Storm, compared with ours.

Storm settings (see ``storm_environment``): a sound environment
(``force_soundness = True``) with the linear-equation solver type EIGEN. With
soundness required, Storm's Eigen solver switches to its direct method,
Eigen's SparseLU ("Selecting 'SparseLU' as the solution technique to
guarantee sound results"), instead of an iterative one (GMRES/value iteration
with a 1e-6 relative stopping criterion). The steady-state algorithm is left
on AUTOMATIC. On a nearly decomposable test chain (coupling 2^-30) these
settings reproduce the exact stationary distribution to 1.5e-16 in L1, while
the non-sound Eigen default (an iterative method) is off by 1e-8.

Checks, for a trained zoo model, a random-weight transformer and a
hand-written n-gram model:

(a) ergodic (temperature only, one attractor): Storm's steady-state
    distribution from a one-token prompt equals ``sj.stationary(op)[0]`` on the
    whole chain (zero on the transient states) to 1e-9 in L1;
(b) truncating procedure with several attractors: Storm's
    ``P=? [F "attractor_i"]`` for every state equals ``sj.basins(op)[:, i]`` to
    1e-9 (max over states and L1 per column).
"""

from __future__ import annotations

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest

stormpy = pytest.importorskip("stormpy")

import semio_jax as sj  # noqa: E402
from semio_jax.app.export import to_drn  # noqa: E402

pytestmark = pytest.mark.storm

TOL = 1e-9


def storm_environment():
    env = stormpy.Environment()
    env.solver().set_linear_equation_solver_type(stormpy.environments.EquationSolverType.EIGEN)
    env.solver().force_soundness = True  # -> Eigen SparseLU, a direct solver
    return env


def storm_model(op, path, initial=None):
    to_drn(op, path, initial=initial)
    model = stormpy.build_model_from_drn(str(path))
    assert model.nr_states == op.num_states
    assert model.nr_transitions == int((op.probs > 0).sum())
    return model


def check_ergodic(op, tmp_path):
    atts = sj.attractors(op)
    assert len(atts) == 1, "this check needs a single attractor"
    start = op.space.index([0]) if op.space.prefixes and op.space.length > 1 else 0
    model = storm_model(op, tmp_path / "ergodic.drn", initial=[start])
    result = stormpy.analysis.compute_steady_state_distribution(model, environment=storm_environment())
    storm_pi = np.array(result.get_value_vector())
    ours = sj.stationary(op)[0]
    assert storm_pi.shape == ours.shape
    assert np.abs(storm_pi - ours).sum() <= TOL, np.abs(storm_pi - ours).sum()
    # transient states (prefixes, and full states outside the attractor) have no long-run mass
    transient = sj.transient_states(op)
    assert np.abs(storm_pi[transient]).max(initial=0.0) <= TOL
    return storm_pi


def check_basins(op, tmp_path):
    atts = sj.attractors(op)
    assert len(atts) >= 2, "this check needs several attractors"
    model = storm_model(op, tmp_path / "basins.drn")
    env = storm_environment()
    h = sj.basins(op)
    for i in range(len(atts)):
        prop = stormpy.parse_properties(f'P=? [F "attractor_{i}"]')[0]
        res = stormpy.model_checking(model, prop, only_initial_states=False, environment=env)
        storm_h = np.array(res.get_value_vector())
        diff = np.abs(storm_h - h[:, i])
        assert diff.max() <= TOL, (i, diff.max())
        assert diff.sum() <= TOL, (i, diff.sum())
    return h


# ------------------------------------------------------------------ models
def _hub_logits(n=5):
    """Allowed next tokens: {0,1} -> {0,1}; {2,3} -> {2,3}; 4 -> anything (0 = allowed, -inf = not)."""
    mask = np.full((n, n), -np.inf)
    mask[:2, :2] = 0.0
    mask[2:4, 2:4] = 0.0
    mask[4] = 0.0
    return mask


def test_ngram_model(tmp_path):
    rng = np.random.default_rng(5)
    # (a) order-2 model over N = 3 with finite logits: ergodic on the 3^5 = 243 full states
    ergodic = sj.NGramModel(rng.normal(scale=1.5, size=(3, 3, 3)), name="ngram-ergodic")
    op = sj.build_operator(ergodic, sj.StateSpace(3, 5), "temperature=0.9")
    check_ergodic(op, tmp_path)
    # (b) order-2 model over N = 5 whose last token restricts the next (hub structure), top-k = 3
    table = rng.normal(size=(5, 5, 5)) + _hub_logits()[None, :, :]
    table[:, 4, :] = [1.0, -0.5, 0.8, 0.2, 0.5]  # after the hub: top 3 = {0, 2, 4}
    hub = sj.NGramModel(table, name="ngram-hub")
    op = sj.build_operator(hub, sj.StateSpace(5, 4), "top_k=3")
    assert sj.basins_result(op).n_solved > 0
    check_basins(op, tmp_path)


def _random_transformer(n_tokens, length, seed):
    from semio_models.transformer import TransformerConfig, TransformerModel
    cfg = TransformerConfig(n_tokens=n_tokens, context_length=length, n_layers=1, d_model=16, n_heads=2)
    return TransformerModel.random(cfg, seed)


@pytest.mark.skipif(importlib.util.find_spec("semio_models") is None
                    or importlib.util.find_spec("semio_models.transformer") is None,
                    reason="semio_models.transformer is not available")
def test_random_transformer(tmp_path):
    # (a) N = 3, L = 5: 243 full + 120 prefix states, temperature only
    model = _random_transformer(3, 5, seed=0)
    op = sj.build_operator(model, sj.StateSpace(3, 5), "temperature=1.3")
    check_ergodic(op, tmp_path)
    # (b) the transformer's logits behind a hub-structure mask, under top_p (several attractors)
    base = _random_transformer(5, 3, seed=1)
    mask = jnp.asarray(_hub_logits(), dtype=jnp.float32)

    def masked(contexts):
        c = jnp.asarray(contexts)
        return base(c) + mask[c[:, -1]]

    wrapped = sj.FunctionModel(masked, n_tokens=5, context_length=3, name="masked-transformer")
    op = sj.build_operator(wrapped, sj.StateSpace(5, 3), "top_p=0.8")
    assert len(sj.attractors(op)) >= 2 and sj.basins_result(op).n_solved > 0
    check_basins(op, tmp_path)


def _load_zoo(name):
    try:
        from semio_models import checkpoint
        return checkpoint.load(name)
    except Exception as e:  # noqa: BLE001 - any failure to load means: no trained model here
        pytest.skip(f"zoo model {name!r} not loadable: {type(e).__name__}: {e}")


def test_trained_zoo_model(tmp_path):
    model = _load_zoo("dyck")
    # the full context (L = 6): 729 full + 363 prefix states, built once
    op = sj.build_operator(model, sj.StateSpace(model.n_tokens, model.context_length), "temperature=1")
    check_ergodic(op, tmp_path)
    trunc = op.with_procedure("top_p=0.5")  # the demo's multi-attractor procedure
    assert len(sj.attractors(trunc)) >= 2 and sj.basins_result(trunc).n_solved > 0
    check_basins(trunc, tmp_path)


def test_coin_zoo_model_is_ergodic(tmp_path):
    model = _load_zoo("coin")
    op = sj.build_operator(model, sj.StateSpace(2, 6), "temperature=1")
    check_ergodic(op, tmp_path)


# --------------------------------------------------------------- hand-made chains
def test_nearly_decomposable_chain(tmp_path):
    """Storm and semio_jax agree on a chain whose two blocks are coupled by 2^-30."""
    n = 12
    p = np.zeros((n, n))
    for i in range(n):
        if i + 1 < n:
            p[i, i + 1] = 0.25
        if i > 0:
            p[i, i - 1] = 0.5
    p[5, 6] = 2.0**-30
    p[6, 5] = 2.0**-31
    for i in range(n):
        p[i, i] = 1.0 - p[i].sum()
    op = sj.Operator(sj.StateSpace(n, 1, prefixes=False), p)
    check_ergodic(op, tmp_path)


def test_absorbing_chain_reachability(tmp_path):
    """Gambler's ruin: P(F top) in closed form, from Storm and from semio_jax."""
    n, pu = 10, 0.375
    p = np.zeros((n, n))
    p[0, 0] = p[n - 1, n - 1] = 1.0
    for i in range(1, n - 1):
        p[i, i + 1] = pu
        p[i, i - 1] = 1 - pu
    op = sj.Operator(sj.StateSpace(n, 1, prefixes=False), p)
    h = check_basins(op, tmp_path)
    r = (1 - pu) / pu
    np.testing.assert_allclose(h[:, 1], [(1 - r**i) / (1 - r ** (n - 1)) for i in range(n)], rtol=1e-13, atol=1e-15)

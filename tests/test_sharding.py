"""semio_jax.sharding on 8 host devices equals the single-device engine.

JAX fixes its device count when it starts, so the multi-device checks run once
in a child process started with XLA_FLAGS=--xla_force_host_platform_device_count=8
(this file run as a script); it prints one JSON record of measured differences
and the tests below assert on it. Criteria:

* build: n-gram models (a table gather) give bitwise the same logits and
  probabilities on 8 devices; a 1-device mesh is bitwise the same for
  the transformer too. On 8 devices XLA compiles the transformer's per-device
  program differently, so its float32 logits agree to float32 round-off, checked
  as in test_prefix_build: |a - b| <= 1e-5 (1 + max_y |b_y|) per row.
* push / pull: max |sharded - Operator.push/pull| <= 1e-15 max |reference|.
* stationary: ||pi_sharded - pi_single||_1 <= the sum of both certified bounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

RTOL = 1e-5
DEVICES = 8


def _close(a, b):
    scale = 1.0 + np.max(np.abs(b), axis=1, keepdims=True)
    return float(np.max(np.abs(a - b) / scale))


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _checks() -> dict:  # runs in the child process, with DEVICES forced host devices
    import jax
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla
    from jax.sharding import Mesh

    import semio_jax as sj
    from semio_jax import sharding as sh
    from semio_jax.errors import ConvergenceError
    from semio_models.transformer import TransformerConfig, TransformerModel

    rec: dict = {"devices": len(jax.devices())}
    rng = np.random.default_rng(0)
    mesh = sh.device_mesh()
    mesh2d = Mesh(np.array(jax.devices()).reshape(2, 4), ("host", "local"))

    # --- (a) the build
    ngram = sj.NGramModel(rng.normal(size=(4, 4, 4)).astype(np.float32), context_length=3)
    space = sj.StateSpace(4, 3)  # 64 + 20 = 84 states: padded to 88 on 8 devices
    op_ng = sj.build_operator(ngram, space, "temperature=0.8")
    sh_ng = sh.build_operator_sharded(ngram, space, "temperature=0.8", mesh=mesh, batch_size=16)
    rec["ngram_logits_equal"] = bool(np.array_equal(op_ng.logits, sh_ng.logits))
    rec["ngram_probs_equal"] = bool(np.array_equal(op_ng.probs, sh_ng.probs))

    ngram2 = sj.NGramModel(rng.normal(size=(2, 2, 2, 2)).astype(np.float32), context_length=6)
    full = sj.StateSpace(2, 6, prefixes=False)  # 64 states: padded to 65 on 5 devices
    op_gr = sj.build_operator(ngram2, full, "greedy")  # two attractors (cycles of the greedy map)

    tf = TransformerModel.random(TransformerConfig(n_tokens=3, context_length=3, n_layers=1, d_model=16,
                                                   n_heads=2), seed=3)
    tspace = sj.StateSpace(3, 3)  # 27 + 12 = 39 states: padded to 40 on 8 devices
    op_tf = sj.build_operator(tf, tspace, "top_p=0.9", method="plain")
    sh_tf = sh.build_operator_sharded(tf, tspace, "top_p=0.9", mesh=mesh, method="plain")
    # the shared-prefix walk over the mesh: 3 subtrees padded to 8 here, 8 and more in the deeper tree
    tree_tf = sh.build_operator_sharded(tf, tspace, "top_p=0.9", mesh=mesh, batch_size=3)
    rec["tf_tree_close"] = _close(tree_tf.logits, op_tf.logits)
    deep = TransformerModel.random(TransformerConfig(n_tokens=2, context_length=8, n_layers=2, d_model=16,
                                                     n_heads=2), seed=4)
    dspace = sj.StateSpace(2, 8)
    one = sj.build_operator(deep, dspace, "temperature=0.7", method="prefix", batch_size=4)
    many = sj.build_operator(deep, dspace, "temperature=0.7", mesh=mesh, batch_size=4)  # via build_operator
    rec["deep_tree_close"] = _close(many.logits, one.logits)
    rec["deep_tree_probs_maxdiff"] = float(np.max(np.abs(many.probs - one.probs)))
    rec["tf_logits_close"] = _close(sh_tf.logits, op_tf.logits)
    rec["tf_probs_maxdiff"] = float(np.max(np.abs(sh_tf.probs - op_tf.probs)))
    tfull = sj.StateSpace(3, 3, prefixes=False)  # one group: one compilation each
    one_tf = sh.build_operator_sharded(tf, tfull, "top_p=0.9", mesh=sh.device_mesh(1))
    rec["tf_one_device_equal"] = bool(np.array_equal(one_tf.logits, op_tf.logits[:27])
                                      and np.array_equal(one_tf.probs, op_tf.probs[:27]))

    # --- (b) push / pull, vectors and batches, one- and two-axis meshes
    worst = 0.0
    for op, m in ((op_ng, mesh), (op_tf, mesh2d), (op_gr, sh.device_mesh(5))):
        sop = sh.shard_operator(op, m)
        s = op.num_states
        for x in (rng.random(s), rng.normal(size=s), rng.random((s, 3))):
            worst = max(worst, _rel(sop.push_numpy(x), op.push(x)), _rel(sop.pull_numpy(x), op.pull(x)))
    rec["push_pull_rel"] = worst
    rec["functional_rel"] = max(_rel(sh.sharded_push(op_ng, x, mesh), op_ng.push(x)) for x in [rng.random(op_ng.num_states)])

    # --- (c) stationary: power and gmres against the single-device results
    stat = []
    for op, m in ((op_ng, mesh), (op_tf, mesh2d), (op_gr, sh.device_mesh(5))):
        sop = sh.shard_operator(op, m)
        ref = sj.stationary_result(op)  # gth here
        ref_pow = sj.stationary_result(op, method="power")
        for method in ("power", "gmres") if op is op_ng else ("power",):  # gmres compiles slowly: once
            res = sh.stationary_sharded(sop, method=method)
            for i in range(len(ref.residuals)):
                stat.append({
                    "method": method, "attractors": [len(ref.residuals), len(res.residuals)],
                    "diff_auto": float(np.abs(res.distributions[i] - ref.distributions[i]).sum()),
                    "bound_auto": res.error_bounds[i] + ref.error_bounds[i],
                    "diff_power": float(np.abs(res.distributions[i] - ref_pow.distributions[i]).sum()),
                    "bound_power": res.error_bounds[i] + ref_pow.error_bounds[i],
                    "residual": res.residuals[i], "tol": 1e-12,
                })
    rec["stationary"] = stat
    try:
        sh.stationary_sharded(op_ng, mesh, max_iter=3)
        rec["nonconvergence_raises"] = False
    except ConvergenceError:
        rec["nonconvergence_raises"] = True

    # --- Krylov-ready: jax gmres on device vectors, scipy gmres on the LinearOperator
    from jax.scipy.sparse.linalg import gmres

    sop = sh.shard_operator(op_ng, mesh)
    b = rng.random(op_ng.num_states)
    exact = spla.spsolve((sp.identity(op_ng.num_states) - 0.5 * op_ng.csr).tocsc(), b)
    x, _ = jax.jit(lambda bb: gmres(lambda v: v - 0.5 * sop.pull(v), bb, tol=1e-14, atol=0.0))(sop.vector(b))
    rec["jax_gmres_rel"] = _rel(sop.to_numpy(x), exact)
    lin = sop.linear_operator()
    xs, info = spla.gmres(spla.LinearOperator(lin.shape, matvec=lambda v: v - 0.5 * lin.matvec(v)), b,
                          rtol=1e-14, atol=0.0)
    rec["scipy_gmres_rel"] = _rel(xs, exact)
    v = rng.random(op_ng.num_states)
    rec["linop_rel"] = max(_rel(lin.matvec(v), op_ng.csr @ v), _rel(lin.rmatvec(v), op_ng.csr.T @ v),
                           _rel(sop.linear_operator(transpose=True).matvec(v), op_ng.csr.T @ v))
    return rec


@pytest.fixture(scope="module")
def record():
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_child_sees_eight_devices(record):
    assert record["devices"] == DEVICES


def test_sharded_build_equals_single_device_build(record):
    assert record["ngram_logits_equal"] and record["ngram_probs_equal"]
    assert record["tf_one_device_equal"]
    assert record["tf_logits_close"] <= RTOL
    assert record["tf_probs_maxdiff"] < 1e-5


def test_shared_prefix_walk_over_the_mesh_equals_single_device(record):
    """Subtrees walked D at a time (vmapped, split over 8 devices) give the single-device logits."""
    assert record["tf_tree_close"] <= RTOL
    assert record["deep_tree_close"] <= RTOL
    assert record["deep_tree_probs_maxdiff"] < 1e-5


def test_sharded_push_pull_equal_operator(record):
    assert record["push_pull_rel"] <= 1e-15
    assert record["functional_rel"] <= 1e-15
    assert record["linop_rel"] <= 1e-15


def test_sharded_stationary_within_certified_bounds(record):
    assert len(record["stationary"]) >= 4
    for r in record["stationary"]:
        assert r["attractors"][0] == r["attractors"][1]
        assert r["residual"] <= r["tol"]
        assert r["diff_auto"] <= r["bound_auto"], r
        assert r["diff_power"] <= r["bound_power"], r
    assert record["nonconvergence_raises"]


def test_sharded_operator_is_krylov_ready(record):
    assert record["jax_gmres_rel"] < 1e-12
    assert record["scipy_gmres_rel"] < 1e-12


def test_one_device_mesh_in_process():
    """In the test process itself (one CPU device): the same code path on a mesh of one."""
    import semio_jax as sj
    from semio_jax import sharding as sh

    rng = np.random.default_rng(1)
    model = sj.NGramModel(rng.normal(size=(2, 2, 2)).astype(np.float32), context_length=4)
    space = sj.StateSpace(2, 4, prefixes=False)
    op = sj.build_operator(model, space)
    mesh = sh.device_mesh(1)
    assert np.array_equal(sh.build_operator_sharded(model, space, mesh=mesh).probs, op.probs)
    assert np.array_equal(sj.build_operator(model, space, mesh=mesh).probs, op.probs)  # the same, via mesh=
    with pytest.raises(ValueError, match="checkpoint"):
        sj.build_operator(model, space, mesh=mesh, checkpoint_dir="unused")
    sop = sh.shard_operator(op, mesh)
    x = rng.random(space.num_states)
    assert _rel(sop.push_numpy(x), op.push(x)) <= 1e-15 and _rel(sop.pull_numpy(x), op.pull(x)) <= 1e-15
    res, ref = sh.stationary_sharded(sop), sj.stationary_result(op)
    assert np.abs(res.distributions - ref.distributions).sum() <= res.error_bounds[0] + ref.error_bounds[0]
    with pytest.raises(ValueError, match="devices"):
        sh.device_mesh(10_000)


def test_sharded_build_reports_bad_models():
    """Shape and finiteness errors name the problem as the ordinary build does; numpy models fall back."""
    import jax.numpy as jnp

    import semio_jax as sj
    from semio_jax import sharding as sh
    from semio_jax.errors import LogitsShapeError, NonFiniteLogitsError

    space = sj.StateSpace(2, 2)
    wide = sj.FunctionModel(lambda c: jnp.zeros((c.shape[0], 3)), n_tokens=2)
    with pytest.raises(LogitsShapeError, match="expected"):
        sh.build_operator_sharded(wide, space)
    nan = sj.FunctionModel(lambda c: jnp.where(c[:, -1:] == 1, jnp.nan, 0.0) * jnp.ones((1, 2)), n_tokens=2)
    with pytest.raises(NonFiniteLogitsError, match=r"context \[0, 1\]"):
        sh.build_operator_sharded(nan, space)
    host = sj.FunctionModel(lambda c: np.zeros((np.shape(c)[0], 2)), n_tokens=2, jittable=False)
    assert np.allclose(sh.build_operator_sharded(host, space).probs, 0.5)


def _multihost(process_id: int, port: int) -> dict:  # one of 2 processes with 2 host devices each
    from semio_jax import sharding as sh

    sh.initialize_distributed(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    import jax

    import semio_jax as sj

    rng = np.random.default_rng(0)
    model = sj.NGramModel(rng.normal(size=(4, 4, 4)).astype(np.float32), context_length=3)
    space = sj.StateSpace(4, 3)
    mesh = sh.device_mesh()
    op = sj.build_operator(model, space, "temperature=0.8")
    built = sh.build_operator_sharded(model, space, "temperature=0.8", mesh=mesh)
    sop = sh.shard_operator(op, mesh)
    x = rng.random(space.num_states)
    res, ref = sh.stationary_sharded(sop), sj.stationary_result(op)
    return {"processes": jax.process_count(), "devices": jax.device_count(),
            "build_equal": bool(np.array_equal(built.probs, op.probs)),
            "push_pull_rel": max(_rel(sop.push_numpy(x), op.push(x)), _rel(sop.pull_numpy(x), op.pull(x))),
            "diff": float(np.abs(res.distributions - ref.distributions).sum()),
            "bound": res.error_bounds[0] + ref.error_bounds[0]}


@pytest.mark.slow
def test_two_processes_with_jax_distributed():
    """Multi-host path (jax.distributed, CPU collectives over gloo): 2 processes x 2 devices."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--multihost", str(i), str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
        rec = json.loads(out.strip().splitlines()[-1])
        assert rec["processes"] == 2 and rec["devices"] == 4
        assert rec["build_equal"]
        assert rec["push_pull_rel"] <= 1e-15
        assert rec["diff"] <= rec["bound"]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--multihost"]:
        print(json.dumps(_multihost(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        print(json.dumps(_checks()))

"""Stationary distributions and absorption probabilities: semio_jax vs Storm vs SciPy.

Question: on the same chains, how long does each solver take, how accurate is
the answer it returns (measured here, by us, in float64), and how much memory
does it need?

Chains (full windows only: StateSpace(N, L, prefixes=False); a size "L" on the command line means
2^L states, so the N = 4 chains use L/2 tokens of context):

  fast    order-L n-gram (NGramModel) with i.i.d. N(0, 1) logits for every window
          (seed 0), temperature=1: one attractor, mixes within a few L steps.
  slow    order-4 n-gram with N(0, 1) logits, seed 27 (the first seed 0, 1, 2, ... whose
          16-state 4-gram chain has relaxation time 1/(1 - |lambda_2|) >= 1000; it is 2.5e3),
          temperature=0.25: one attractor, slowly mixing.
  absorb  the slow chain's 4-gram table with four contexts made deterministic by -inf
          logits (0000 -> 0, 1111 -> 1, 0101 -> 0, 1010 -> 1), temperature=0.25: three
          attractors (0^L, 1^L and the 2-cycle (01)^(L/2) <-> (10)^(L/2)); the expected
          absorption time reaches 2.6e3 steps.

  fast4   as fast with N = 4 (order-L/2 n-gram, N(0, 1) logits, seed 0, temperature 1).
  slow4   order-2 n-gram with N = 4 and N(0, 1) logits (seed 3), temperature 0.25 (exact reference from
          its 16-state chain, as for slow).
  tf2, tf4            a random 2-layer d_model=32 transformer (TransformerModel.random, seed 0; the zoo
                      architecture) with N = 2 or 4 at temperature 1;
  tf2-cold, tf4-cold  the same at temperature 0.2. No exact reference: Storm's error is bounded by
                      ||pi_storm - pi_auto||_1 + semio-auto's certified bound.

Peers, problem "pi" (stationary distribution; every chain but absorb):
  semio-<m>      sj.stationary_result(op, method=m), for every method its docstring lists
                 (found at run time; "auto", the default, dispatches to the others: see its row's
                 note for the method it chose; "krylov" is GMRES
                 preconditioned by the greedy functional graph, semio_jax.analysis.krylov). gth is run up
                 to 2^10 states only (dense, O(S^3); auto's own limit for it).
  semio-sharded-gmres
                 semio_jax.sharding.stationary_sharded(op, method="gmres") on the one CPU device:
                 restarted GMRES (jax.scipy) on x (I - Q_j) = r_j, then lazy power steps to residual
                 1e-12 (its JIT compilation is part of its solve time: each run is a fresh process).
  storm-lu       stormpy.analysis.compute_steady_state_distribution with stormpy.Environment(),
                 linear equation solver EIGEN and force_soundness=True: the steady-state
                 algorithm (AUTOMATIC) becomes expected visiting times, and Storm's Eigen
                 solver switches to the direct SparseLU to be sound (tests/test_storm.py's setting).
  storm-sound    stormpy.environments.sound() (stormpy's default environment for model
                 checking): force_soundness, TOPOLOGICAL solver, native method optimistic value
                 iteration, relative precision 1e-6, algorithm EXPECTED_VISITING_TIMES.
  storm-iter     stormpy.Environment() as constructed: not sound, TOPOLOGICAL solver over Storm's
                 default gmm++ (GMRES with ILU preconditioner), relative precision 1e-6,
                 algorithm AUTOMATIC -> EQUATION_SYSTEM.
  storm-evt      storm-iter with steady_state_distribution_algorithm = EXPECTED_VISITING_TIMES.
  storm-evt-gs, storm-evt-sor, storm-evt-jacobi, storm-eq-gs, storm-classic-power
                 Storm's NATIVE linear equation solver (Gauss-Seidel, SOR, Jacobi, power) at absolute
                 precision 1e-12 with steady-state algorithm EXPECTED_VISITING_TIMES, EQUATION_SYSTEM
                 or CLASSIC (see TIGHT): the settings that can land within 1e-10 of pi*.
  storm-evt-gmm8, storm-evt-gmm10, storm-evt-gmm12
                 storm-evt with gmm++'s precision (GMRES + ILU, relative residual) set to 1e-8, 1e-10,
                 1e-12 through Storm's settings (--gmm++:precision; stormpy's Environment has no
                 setter for it, so the environment is built from the settings: see GMM).
  scipy-spsolve  scipy.sparse.linalg.spsolve (SuperLU, COLAMD) on the reduced system: with j
                 the last state and Q_j = P without row/column j, x (I - Q_j) = P[j, others];
                 pi = (x, 1) / sum.
  scipy-eigs     scipy.sparse.linalg.eigs(P^T, k=1, which="LM", tol=0, v0=uniform) (ARPACK);
                 real part normalised to sum 1.

Peers, problem "h" (absorption probabilities into every attractor; absorb chain; the
attractors are labelled attractor_i as in semio_jax.app.export):
  semio-basins   sj.basins_result(op).probabilities (sparse LU while at most 8192 states are
                 undetermined, i.e. up to 2^12 here; preconditioned GMRES, semio_jax.analysis.krylov, above)
  storm-lu, storm-sound, storm-iter
                 stormpy.model_checking(P=? [F "attractor_i"], only_initial_states=False) for
                 each attractor i, with the environments above.
  scipy-spsolve  spsolve(I - Q_TT, P_TA 1_A) on all transient states T, every attractor at once.

Protocol. Each chain is built once per size in this process (model evaluation is not
timed for anyone) and saved as its float64 probability table. Each peer then runs in its own
subprocess (``bench_solve.py --worker ...``) that loads the table and builds its own data
structure, timed as "setup s" (semio: the validated Operator; Storm: the CSR matrix handed
to SparseMatrixBuilder.add_next_values, the labelling and the SparseDtmc; SciPy: the CSR
matrix), then solves, timed as "solve s" (wall clock) and "solve CPU s" (the process's CPU
time, all threads); graph analyses are included for everyone (semio's class decomposition,
Storm's BSCC / prob01 analyses). The machine's cores are shared with other jobs, so the
limit is on CPU time: the parent kills a solve that has used LIMIT CPU seconds (or
WALL_FACTOR x LIMIT wall seconds) ("DNF"), or a process whose RSS passes the memory cap
("OOM"), and skips a peer's larger sizes after a DNF, OOM or failure. It also does not start
a run whose linear extrapolation from the peer's previous size (CPU time x ratio of states)
already exceeds the limit: no peer here scales better than linearly, as each must at least
read every transition ("not run: predicted"; --no-predict runs them anyway). "peak MiB" is
the subprocess's peak RSS (VmHWM), "+MiB" how much of it the solve added.

Threads. Every worker subprocess runs with OPENBLAS_NUM_THREADS = OMP_NUM_THREADS =
MKL_NUM_THREADS = 1 (--threads K sets K; 0 leaves the environment as inherited): Storm is
single-threaded, the metric is the CPU time of all threads, and a threaded BLAS on these
memory-bound solves only adds CPU time.

Accuracy is measured here for every peer with the float64 operator (op.push / op.pull) on
the vector the peer returned (not renormalised):
  pi: residual ||pi P - pi||_1 and error ||pi - pi*||_1;
  h:  residual max_i ||P h_i - h_i||_inf and error max |h - h*|.
pi* and h* are exact references where the chain allows one: the slow and absorb chains
depend on the last 4 tokens only, so pi* (and h*) follow from the 16-state 4-gram chain,
solved in exact rational arithmetic (fractions) from the same float64 table and lifted to
T^L in float64 (relative error <= L eps). The fast chain has no such reference ("-"); there
semio's certified bound 4 tau_j ||pi P - pi||_1 is quoted in the notes column.

Numerical reference (problem pi, every chain): the parent computes once per chain and size
pi_ref = sj.stationary_result(op, method="krylov", tol=T) with the smallest T in REF_TOLS that
converges, and reports for every peer "dist to ref" = ||pi - pi_ref||_1. "within 1e-10" says
whether the peer's answer lands within 1e-10 (L1) of pi*: from the exact error where there is an
exact reference (slow, slow4), otherwise from "dist to ref" -- an estimate: pi_ref's residual is
~1e-15 but its certified bound is looser (both are listed per chain in the notes; on the exact
chains the notes also give pi_ref's exact error, a check of the estimate). The notes end with,
per chain, the fastest Storm setting (solve CPU s) that lands within 1e-10 and its CPU time
over semio-auto's ("speed-up").

Usage:
  python benchmarks/bench_solve.py            # L = 10, 12, ..., 20; 60 CPU s per solve
  python benchmarks/bench_solve.py --quick    # L = 10, 12, 14; 20 CPU s per solve
  python benchmarks/bench_solve.py --full     # every L = 10..20
  python benchmarks/bench_solve.py --sizes 16 --chains fast,slow --peers semio-lu,storm-lu,scipy-spsolve \
      --limit 400 --name solve_lu16           # the direct solvers at 2^16, past the default limit (~12 CPU min)
  options: --limit S, --mem-gib G, --sizes 10,16, --peers storm-lu,semio-lu, --chains fast,slow,absorb,
           --name OUT (results/OUT.md, OUT_raw.json, OUT.png; default "solve"), --threads K (BLAS/OpenMP
           threads of every worker, default 1; 0: inherited)
  python benchmarks/bench_solve.py --sizes 20 --chains fast,slow,fast4,slow4,tf2,tf2-cold,tf4,tf4-cold \
      --peers semio-auto,storm-evt,storm-iter,storm-evt-gs,storm-evt-sor,storm-evt-jacobi,storm-eq-gs,\
storm-classic-power --limit 60 --name storm_2e20   # which Storm settings land within 1e-10 at 2^20
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from solve_report import REF_TOLS, WITHIN, median_run, notes, reference_notes, row, summary, within  # noqa: E402

N_TOKENS = 2
SLOW_SEED = 27
FAST_SEED = 0
FORCED = [((0, 0, 0, 0), 0), ((1, 1, 1, 1), 1), ((0, 1, 0, 1), 0), ((1, 0, 1, 0), 1)]
GTH_MAX_STATES = 2**10  # semio's own GTH_MAX: auto uses gth up to 1024 states
#: tight Storm settings: name -> (steady-state algorithm, native method), precision 1e-12 absolute
TIGHT = {"evt-gs": ("EXPECTED_VISITING_TIMES", "GAUSS_SEIDEL"), "evt-sor": ("EXPECTED_VISITING_TIMES", "SOR"),
         "evt-jacobi": ("EXPECTED_VISITING_TIMES", "JACOBI"), "eq-gs": ("EQUATION_SYSTEM", "GAUSS_SEIDEL"),
         "classic-power": ("CLASSIC", "POWER")}
#: Storm's default stack (TOPOLOGICAL over gmm++ GMRES + ILU, expected visiting times) with gmm++'s precision
#: (relative residual) tightened through Storm's own settings (--gmm++:precision): name -> precision
GMM = {"evt-gmm8": 1e-8, "evt-gmm10": 1e-10, "evt-gmm12": 1e-12}
STORM_PI = (["storm-lu", "storm-sound", "storm-iter", "storm-evt"] + [f"storm-{k}" for k in GMM]
            + [f"storm-{k}" for k in TIGHT])
STORM_H = ["storm-lu", "storm-sound", "storm-iter"]
SCIPY_PI = ["scipy-spsolve", "scipy-eigs"]
SCIPY_H = ["scipy-spsolve"]
KNOWN_SEMIO_METHODS = ["gth", "lu", "power"]
WALL_FACTOR = 6  # a solve is also stopped after WALL_FACTOR x limit wall seconds (shared machine)
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ============================================================ chains (parent side)
#: chain -> (N, temperature, n-gram order of the exact reference or None). A size L on the command line
#: means 2^L states: N=4 chains use L/2 tokens of context.
CHAINS = {
    "fast": (2, 1.0, None), "slow": (2, 0.25, 4), "absorb": (2, 0.25, 4),
    "fast4": (4, 1.0, None), "slow4": (4, 0.25, 2),
    "tf2": (2, 1.0, None), "tf2-cold": (2, 0.2, None), "tf4": (4, 1.0, None), "tf4-cold": (4, 0.2, None),
}
SLOW4_SEED = 3


def chain_context(chain: str, size_exp: int) -> int:
    """Context length L giving 2^size_exp states for this chain's alphabet."""
    n = CHAINS[chain][0]
    length = round(size_exp / np.log2(n))
    if n**length != 2**size_exp:
        raise SystemExit(f"2^{size_exp} states are not a power of N={n} for chain {chain!r}")
    return length


def ngram4_table(absorbing: bool) -> np.ndarray:
    table = np.random.default_rng(SLOW_SEED).normal(size=(N_TOKENS,) * 5)
    if absorbing:
        for ctx, y in FORCED:
            table[ctx + (1 - y,)] = -np.inf
    return table


def build_chain(chain: str, size_exp: int):
    """The operator of ``chain`` with 2^size_exp full windows (StateSpace(N, L, prefixes=False))."""
    import semio_jax as sj

    n, temp, order = CHAINS[chain]
    length = chain_context(chain, size_exp)
    space = sj.StateSpace(n, length, prefixes=False)
    if chain in ("fast", "fast4"):
        table = np.random.default_rng(FAST_SEED).normal(size=(n,) * (length + 1))
        model = sj.NGramModel(table, name=f"random-order-{length}")
    elif chain == "slow4":
        model = sj.NGramModel(np.random.default_rng(SLOW4_SEED).normal(size=(n,) * (order + 1)), name="ngram2-N4")
    elif chain.startswith("tf"):
        from semio_models.transformer import TransformerConfig, TransformerModel

        cfg = TransformerConfig(n_tokens=n, context_length=length, n_layers=2, d_model=32, n_heads=2)
        model = TransformerModel.random(cfg, seed=0)
    else:
        model = sj.NGramModel(ngram4_table(chain == "absorb"), name=f"ngram4-{chain}")
    return sj.build_operator(model, space, f"temperature={temp:g}")


def _solve_exact(a: list[list[Fraction]], b: list[list[Fraction]]) -> list[list[Fraction]]:
    """Solve a x = b (b with several columns) by Gauss-Jordan elimination in exact rationals."""
    n, m = len(a), len(b[0])
    aug = [a[i][:] + b[i][:] for i in range(n)]
    for c in range(n):
        piv = next(r for r in range(c, n) if aug[r][c] != 0)
        aug[c], aug[piv] = aug[piv], aug[c]
        inv = 1 / aug[c][c]
        aug[c] = [v * inv for v in aug[c]]
        for r in range(n):
            if r != c and aug[r][c] != 0:
                f = aug[r][c]
                aug[r] = [vr - f * vc for vr, vc in zip(aug[r], aug[c])]
    return [row[n:] for row in aug]


def _lumped(op, order: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(q[N^k, N], succ[N^k, N]): the k-gram chain of an order-k model, from the operator's own table.

    State c < N^k of T^L is (0, ..., 0, c's k digits), so its row is the rule after context c.
    """
    n = op.n_tokens
    nk = n**order
    q = np.array(op.probs[:nk])
    succ = (np.arange(nk)[:, None] % n ** (order - 1)) * n + np.arange(n)[None, :]
    return q, succ


def _lift_to_windows(first: np.ndarray, q: np.ndarray, length: int, n: int = N_TOKENS, order: int = 4) -> np.ndarray:
    """pi over T^L from the law of the first k tokens and the k-gram rule: pi_{i+1}[x N + y] = pi_i[x] q[x mod N^k, y]."""
    pi = np.asarray(first, dtype=np.float64)
    for _ in range(order, length):
        ctx = np.arange(pi.size) % n**order
        pi = (pi[:, None] * q[ctx]).reshape(-1)
    return pi


def exact_stationary_ngram(op, order: int = 4) -> np.ndarray:
    """pi* of an order-k n-gram chain on T^L: GTH in exact rationals on the N^k-state chain, lifted to windows."""
    from semio_jax.testing.references import gth_rational

    q, succ = _lumped(op, order)
    nk, n = q.shape
    p = [[Fraction(0)] * nk for _ in range(nk)]
    for c in range(nk):
        for y in range(n):
            p[c][int(succ[c, y])] += Fraction(float(q[c, y]))
    pik = np.array([float(x) for x in gth_rational(p)])
    return _lift_to_windows(pik, q, op.space.length, n, order)


def exact_absorption_ngram4(op, attractors: list[np.ndarray]) -> np.ndarray:
    """h*[S, m]: absorption probabilities of the absorb chain; h(s) depends on the last 4 tokens of s only."""
    q4, succ4 = _lumped(op, 4)
    n4 = q4.shape[0]
    # the 4-gram class of each T^L attractor: the last-4-token contexts of its member windows
    cls = {}
    for a, members in enumerate(attractors):
        for s in members:
            cls[int(s) % n4] = a
    trans = [c for c in range(n4) if c not in cls]
    idx = {c: i for i, c in enumerate(trans)}
    m = len(attractors)
    a_mat = [[Fraction(int(i == j)) for j in range(len(trans))] for i in range(len(trans))]
    b = [[Fraction(0)] * m for _ in trans]
    for c in trans:
        for y in range(N_TOKENS):
            t, pr = int(succ4[c, y]), Fraction(float(q4[c, y]))
            if t in cls:
                b[idx[c]][cls[t]] += pr
            else:
                a_mat[idx[c]][idx[t]] -= pr
    x = _solve_exact(a_mat, b)
    h4 = np.zeros((n4, m))
    for c, a in cls.items():
        h4[c, a] = 1.0
    for c in trans:
        h4[c] = [float(v) for v in x[idx[c]]]
    return h4[np.arange(op.num_states) % n4]


# ============================================================ worker (child side)
def _rss_mib() -> float:
    """Peak RSS of this process (VmHWM; ru_maxrss would include the parent's peak from before exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _csr_from_table(probs: np.ndarray, length: int):
    """The transition matrix of the full-window space as scipy CSR (succ(s, y) = (s mod N^(L-1)) N + y)."""
    import scipy.sparse as sp

    s, n = probs.shape
    succ = (np.arange(s)[:, None] % (n ** (length - 1))) * n + np.arange(n)[None, :]
    mat = sp.csr_matrix((probs.ravel(), succ.ravel(), np.arange(0, s * n + 1, n)), shape=(s, s))
    mat.sum_duplicates()
    mat.eliminate_zeros()
    mat.sort_indices()
    return mat


def storm_environment(setting: str):
    import stormpy
    import stormpy.environments as E

    if setting == "lu":
        env = stormpy.Environment()
        env.solver().set_linear_equation_solver_type(E.EquationSolverType.EIGEN)
        env.solver().force_soundness = True
    elif setting == "sound":
        env = E.sound()
    elif setting == "iter":
        env = stormpy.Environment()
    elif setting == "evt":
        env = stormpy.Environment()
        env.modelchecker().steady_state_distribution_algorithm = E.SteadyStateDistributionAlgorithm.EXPECTED_VISITING_TIMES
    elif setting in GMM:
        # stormpy.Environment() ignores Storm's settings; EnvironmentBuilder builds one from them. This
        # changes the settings of the whole (worker) process, which runs this one peer only.
        import stormpy.developer as dev

        dev.set_from_exploded_string(["--gmm++:precision", f"{GMM[setting]:g}"])
        env = dev.EnvironmentBuilder.build_environment()
        env.modelchecker().steady_state_distribution_algorithm = E.SteadyStateDistributionAlgorithm.EXPECTED_VISITING_TIMES
    elif setting in TIGHT:
        # Storm's native solvers with an absolute precision of 1e-12 (stormpy exposes the precision
        # of the native solvers only): the settings that can land within 1e-10 of the answer
        algo, method = TIGHT[setting]
        env = stormpy.Environment()
        env.solver().set_linear_equation_solver_type(E.EquationSolverType.NATIVE)
        nat = env.solver().native()
        nat.method = getattr(E.NativeLinearEquationSolverMethod, method)
        nat.precision = stormpy.Rational(1e-12)
        nat.relative_termination_criterion = False
        nat.maximal_number_of_iterations = 10**9
        env.modelchecker().steady_state_distribution_algorithm = getattr(E.SteadyStateDistributionAlgorithm, algo)
    else:
        raise ValueError(setting)
    return env


def describe_environment(env) -> str:
    s = env.solver()
    nat = s.native()
    return (f"solver={s.get_linear_equation_solver_type().name}, force_soundness={s.force_soundness}, "
            f"native={nat.method.name}, precision={float(nat.precision):g} "
            f"({'relative' if nat.relative_termination_criterion else 'absolute'}), "
            f"steady_state_algorithm={env.modelchecker().steady_state_distribution_algorithm.name}")


def _storm_model(csr, attractor_of: np.ndarray | None):
    import stormpy.datastructures as D
    import stormpy.models as M

    s = csr.shape[0]
    builder = D.SparseMatrixBuilder[float](rows=s, columns=s, entries=csr.nnz)
    rows = np.repeat(np.arange(s), np.diff(csr.indptr))
    builder.add_next_values(rows.tolist(), csr.indices.tolist(), csr.data.tolist(), [])
    labels = M.StateLabeling(s)
    labels.add_label("init")
    labels.set_states("init", D.BitVector(s, [0]))
    if attractor_of is not None:
        for a in range(int(attractor_of.max()) + 1):
            labels.add_label(f"attractor_{a}")
            labels.set_states(f"attractor_{a}", D.BitVector(s, np.flatnonzero(attractor_of == a).tolist()))
    return M.SparseDtmc(M.SparseModelComponents(transition_matrix=builder.build(), state_labeling=labels,
                                                rate_transitions=False))


def worker(peer: str, problem: str, data: str, out: str) -> int:
    # imports first: interpreter start-up and imports are not part of anyone's setup time
    if peer.startswith("semio-"):
        import semio_jax as sj
        from semio_jax.linalg import compiled

        compiled.warm_up()  # load the compiled loops now, as Storm's are loaded by its import
    elif peer.startswith("storm-"):
        import stormpy
    else:
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla
    arrays = np.load(data)
    probs, length = arrays["probs"], int(arrays["length"])
    attractor_of = arrays["attractor_of"] if "attractor_of" in arrays else None
    info = ""
    extra = {}
    t0 = time.perf_counter()
    if peer.startswith("semio-"):
        op = sj.Operator(sj.StateSpace(probs.shape[1], length, prefixes=False), probs)
    elif peer.startswith("storm-"):
        csr = _csr_from_table(probs, length)
        model = _storm_model(csr, attractor_of if problem == "h" else None)
        env = storm_environment(peer.split("-", 1)[1])
        info = describe_environment(env)
        if peer.split("-", 1)[1] in GMM:
            info += f", gmm++ precision={GMM[peer.split('-', 1)[1]]:g} (relative residual; --gmm++:precision)"
    else:
        csr = _csr_from_table(probs, length)
    setup = time.perf_counter() - t0
    rss_setup = _rss_mib()
    Path(out + ".started").write_text(str(time.time()))
    t0, c0 = time.perf_counter(), time.process_time()
    if peer.startswith("semio-"):
        if problem == "pi":
            if peer.startswith("semio-sharded-"):
                from semio_jax.sharding import stationary_sharded

                res = stationary_sharded(op, method=peer.rsplit("-", 1)[1])
            else:
                res = sj.stationary_result(op, method=peer.split("-", 1)[1])
            result = res.distribution(0)
            bound = res.error_bounds[0]
            extra = {"matvecs": res.matvecs[0], "bound": bound}
            info = f"method={res.methods[0]}; certified L1 error bound " + (f"{bound:.1e}" if bound is not None else "none")
        else:
            res = sj.basins_result(op)
            result = res.probabilities
            info = f"n_solved={res.n_solved}; certified max error bound {res.error_bound:.1e}"
    elif peer.startswith("storm-"):
        if problem == "pi":
            r = stormpy.analysis.compute_steady_state_distribution(model, environment=env)
            result = np.array(r.get_value_vector())
        else:
            cols = []
            for a in range(int(attractor_of.max()) + 1):
                prop = stormpy.parse_properties(f'P=? [F "attractor_{a}"]')[0]
                r = stormpy.model_checking(model, prop, only_initial_states=False, environment=env)
                cols.append(np.array(r.get_value_vector()))
            result = np.stack(cols, axis=1)
    elif peer == "scipy-spsolve" and problem == "pi":
        s = csr.shape[0]
        j = s - 1
        others = np.arange(s - 1)
        m = (sp.identity(s, format="csr") - csr)[others][:, others]
        r = np.asarray(csr[j, others].todense()).ravel()
        x = spla.spsolve(m.T.tocsc(), r)
        result = np.append(x, 1.0)
        result /= result.sum()
    elif peer == "scipy-eigs":
        s = csr.shape[0]
        vals, vecs = spla.eigs(csr.T.tocsr(), k=1, which="LM", tol=0, v0=np.full(s, 1.0 / s))
        v = vecs[:, 0].real
        result = v / v.sum()
        info = f"eigenvalue {complex(vals[0]).real:.15f}{complex(vals[0]).imag:+.1e}j"
    elif peer == "scipy-spsolve" and problem == "h":
        s = csr.shape[0]
        trans = np.flatnonzero(attractor_of < 0)
        m_att = int(attractor_of.max()) + 1
        ind = np.zeros((s, m_att))
        ind[attractor_of >= 0, attractor_of[attractor_of >= 0]] = 1.0
        a_mat = (sp.identity(trans.size, format="csr") - csr[trans][:, trans]).tocsc()
        rhs = csr[trans] @ ind  # = P_TA 1_A: ind is zero on the transient states
        x = spla.spsolve(a_mat, rhs)
        result = ind.copy()
        result[trans] = x.reshape(trans.size, m_att)
    else:
        raise SystemExit(f"unknown peer {peer!r} for problem {problem!r}")
    solve, solve_cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(out + ".npy", np.asarray(result, dtype=np.float64))
    Path(out + ".json").write_text(json.dumps({
        "status": "ok", "setup_s": setup, "solve_s": solve, "solve_cpu_s": solve_cpu, "rss_setup_mib": rss_setup,
        "rss_peak_mib": _rss_mib(), "info": info, **extra}))
    return 0


# ============================================================ runner (parent side)
def semio_methods() -> list[str]:
    """The explicit methods listed in stationary_result's docstring that run on a tiny chain."""
    import semio_jax as sj

    doc = sj.stationary_result.__doc__ or ""
    line = re.search(r"method:(.*?)(?:\n\s*\w+:|\Z)", doc, re.S)
    names = re.findall(r'"([A-Za-z_][\w-]*)"', line.group(1)) if line else []
    names = list(dict.fromkeys(names + KNOWN_SEMIO_METHODS))
    tiny = sj.Operator(sj.StateSpace(2, 3, prefixes=False),
                       np.tile([[0.3, 0.7], [0.6, 0.4]], (4, 1)))
    ok = []
    for n in names:
        try:
            sj.stationary_result(tiny, method=n)
            ok.append(n)
        except ValueError as e:
            if "unknown" not in str(e).lower():
                ok.append(n)
        except Exception:  # noqa: BLE001 - a method that exists but fails on this chain is still a peer
            ok.append(n)
    return ok


def sharded_methods() -> list[str]:
    """semio's Krylov solver outside stationary_result: semio_jax.sharding.stationary_sharded(method="gmres")."""
    try:
        from semio_jax.sharding import stationary_sharded  # noqa: F401
    except ImportError:
        return []
    return ["semio-sharded-gmres"]


def _proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return out


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of a running process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def worker_env(threads: int) -> dict:
    """The environment of a worker: this one with BLAS / OpenMP limited to ``threads`` (0: unchanged)."""
    env = dict(os.environ)
    if threads > 0:
        env.update({v: str(threads) for v in THREAD_VARS})
    return env


def run_peer(peer: str, problem: str, data: Path, work: Path, limit: float, mem_mib: float,
             threads: int = 1) -> dict:
    """Run one peer in a subprocess (BLAS / OpenMP threads: ``threads``, see :func:`worker_env`); kill it
    when its solve has used ``limit`` CPU seconds (or WALL_FACTOR x limit wall seconds) or its RSS
    exceeds ``mem_mib``."""
    out = str(work / f"{problem}-{data.stem}-{peer}")
    log = open(out + ".log", "w")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", peer, problem, str(data), out],
                            stdout=log, stderr=subprocess.STDOUT, env=worker_env(threads))
    t_start = time.time()
    started = cpu_start = None
    hwm = 0.0
    status = None
    while proc.poll() is None:
        st = _proc_status(proc.pid)
        hwm = max(hwm, st.get("VmHWM", 0.0))
        if st.get("VmRSS", 0.0) > mem_mib:
            status = "OOM"
        if started is None and os.path.exists(out + ".started"):
            started, cpu_start = time.time(), _cpu_seconds(proc.pid)
        if started is not None and (_cpu_seconds(proc.pid) - cpu_start > limit
                                    or time.time() - started > WALL_FACTOR * limit):
            status = status or "DNF"
        elif started is None and time.time() - t_start > 600:
            status = status or "failed"
        if status:
            proc.kill()
            proc.wait()
            break
        time.sleep(0.05)
    log.close()
    if status:
        return {"status": status, "rss_peak_mib": hwm, "solve_s": None, "error": "start-up took over 600 s"}
    if proc.returncode != 0 or not os.path.exists(out + ".json"):
        tail = Path(out + ".log").read_text().strip().splitlines()
        err = next((t for t in reversed(tail) if "Error" in t or "error" in t), tail[-1] if tail else "no output")
        return {"status": "failed", "error": err.strip()[:160], "solve_s": None}
    rec = json.loads(Path(out + ".json").read_text())
    rec["result"] = np.load(out + ".npy")
    bad = int(np.size(rec["result"]) - np.count_nonzero(np.isfinite(rec["result"])))
    if bad:  # NaN / inf is a failure, never an answer
        rec.update(status="failed", error=f"returned a non-finite vector ({bad} of {np.size(rec['result'])} entries)")
    return rec


def numerical_reference(op) -> dict:
    """pi_ref of the (ergodic) chain by sj.stationary_result(method="krylov") at the smallest tol of REF_TOLS
    that converges: {"pi", "tol", "residual", "bound", "cpu_s"}; {"error": ...} if none does."""
    import semio_jax as sj

    errors = []
    for tol in REF_TOLS:
        c0 = time.process_time()
        try:
            res = sj.stationary_result(op, method="krylov", tol=tol)
        except sj.errors.ConvergenceError as e:
            errors.append(f"tol {tol:g}: {e}")
            continue
        pi = res.distribution(0)
        return {"pi": pi, "tol": tol, "residual": float(np.abs(op.push(pi) - pi).sum()),
                "bound": res.error_bounds[0], "cpu_s": time.process_time() - c0}
    return {"error": "; ".join(errors)[:300]}


def accuracy(problem: str, op, result: np.ndarray, ref: np.ndarray | None) -> tuple[float, float | None]:
    if problem == "pi":
        resid = float(np.abs(op.push(result) - result).sum())
        err = None if ref is None else float(np.abs(result - ref).sum())
    else:
        resid = float(np.abs(op.pull(result) - result).max())
        err = None if ref is None else float(np.abs(result - ref).max())
    return resid, err


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=4, metavar=("PEER", "PROBLEM", "DATA", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="L = 10, 12, 14 and a 20 s limit (development)")
    ap.add_argument("--full", action="store_true", help="every L from 10 to 20")
    ap.add_argument("--sizes", help="comma-separated L values (overrides the grid)")
    ap.add_argument("--limit", type=float, help="CPU seconds per solve (default 60; 20 with --quick)")
    ap.add_argument("--mem-gib", type=float, default=8.0, help="memory cap per run in GiB (default 8)")
    ap.add_argument("--peers", help="comma-separated subset of peers")
    ap.add_argument("--chains", default="fast,slow,absorb",
                    help="comma-separated subset of " + ", ".join(CHAINS) + " (see CHAINS)")
    ap.add_argument("--no-predict", dest="predict", action="store_false",
                    help="run every size even when linear extrapolation of the previous size exceeds the limit")
    ap.add_argument("--name", default="solve", help="output name in benchmarks/results (default solve)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every peer this many times, in interleaved rounds; the table shows the median run "
                         "and its note all CPU times (default 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OPENBLAS/OMP/MKL_NUM_THREADS of every worker (default 1; 0: leave them as inherited)")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(*args.worker)

    import semio_jax as sj
    from _common import RESULTS, write_table
    from semio_jax._util.io import atomic_write_text
    from figures import solve_figure

    sizes = ([int(x) for x in args.sizes.split(",")] if args.sizes else
             [10, 12, 14] if args.quick else list(range(10, 21)) if args.full else list(range(10, 21, 2)))
    limit = args.limit if args.limit is not None else (20.0 if args.quick else 60.0)
    mem_mib = args.mem_gib * 1024
    methods = semio_methods()
    peers_pi = [f"semio-{m}" for m in methods] + sharded_methods() + STORM_PI + SCIPY_PI
    peers_h = ["semio-basins"] + STORM_H + SCIPY_H
    if args.peers:
        wanted = set(args.peers.split(","))
        peers_pi = [p for p in peers_pi if p in wanted]
        peers_h = [p for p in peers_h if p in wanted]
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1 (got {args.repeat})")
    chains = [c for c in args.chains.split(",") if c in CHAINS]
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth of this machine: {bandwidth / 1e9:.1f} GB/s (read + write)", flush=True)
    print(f"semio methods: {methods}; sizes L = {sizes}; limit {limit:g} CPU s; memory cap {args.mem_gib:g} GiB", flush=True)

    records, rows, env_desc, references = [], [], {}, []
    with tempfile.TemporaryDirectory(prefix="bench_solve_") as tmp:
        work = Path(tmp)
        for chain in chains:
            problem = "h" if chain == "absorb" else "pi"
            peers = peers_h if problem == "h" else peers_pi
            stopped: dict[str, str] = {}
            last_cpu: dict[str, tuple[int, float]] = {}
            for length in sizes:
                tb = time.process_time()
                op = build_chain(chain, length)
                print(f"{chain} 2^{length}: built in {time.process_time() - tb:.1f} CPU s", flush=True)
                s = op.num_states
                semio_ref = None  # (pi, certified bound) of semio-auto: Storm's error is bounded through it
                arrays = {"probs": op.probs, "length": np.array(op.space.length)}
                atts = sj.attractors(op)
                if problem == "h":
                    arrays["attractor_of"] = sj.class_structure(op).attractor_of.astype(np.int64)
                    ref = exact_absorption_ngram4(op, atts)
                else:
                    assert len(atts) == 1 and atts[0].size == s, "the stationary chains must be ergodic"
                    order = CHAINS[chain][2]
                    ref = exact_stationary_ngram(op, order) if order else None
                num_ref = None
                if problem == "pi":
                    num = numerical_reference(op)
                    num_ref = num.get("pi")
                    references.append({"chain": chain, "L": length, **{k: v for k, v in num.items() if k != "pi"},
                                       "exact_error": (float(np.abs(num_ref - ref).sum())
                                                       if num_ref is not None and ref is not None else None)})
                    print(f"{chain} 2^{length}: numerical reference {references[-1]}", flush=True)
                data = work / f"{chain}-L{length}.npz"
                np.savez(data, **arrays)
                recs, runs = {}, {}
                for peer in peers:
                    rec = {"problem": problem, "chain": chain, "L": length, "states": s, "peer": peer,
                           "n_tokens": op.n_tokens, "table_mib": op.probs.nbytes / 2**20}
                    recs[peer] = rec
                    if peer == "semio-gth" and s > GTH_MAX_STATES:
                        rec.update(status="not run", note=f"dense O(S^3): run up to {GTH_MAX_STATES} states")
                    elif peer in stopped:
                        rec.update(status="skipped", note=f"{stopped[peer]} at a smaller size")
                    elif args.predict and peer in last_cpu and last_cpu[peer][1] * s / last_cpu[peer][0] > limit:
                        prev_s, prev_t = last_cpu[peer]
                        rec.update(status="not run", note=f"predicted over the limit: {prev_t:.3g} CPU s at "
                                                          f"2^{int(np.log2(prev_s))} x {s // prev_s} states")
                        stopped[peer] = "predicted over the limit"
                    else:
                        runs[peer] = []
                # --repeat K: K rounds, each running every peer once in turn (a fresh process each), so
                # that all peers share the machine's slow and fast spells; a peer that fails stops
                for _ in range(args.repeat):
                    for peer in runs:
                        if not runs[peer] or runs[peer][-1]["status"] == "ok":
                            runs[peer].append(run_peer(peer, problem, data, work, limit, mem_mib, args.threads))
                for peer in peers:
                    rec = recs[peer]
                    if peer in runs:
                        r = median_run(runs[peer])
                        if len(runs[peer]) > 1:
                            rec["cpu_runs"] = [x["solve_cpu_s"] for x in runs[peer] if x["status"] == "ok"]
                            if r["status"] != "ok":  # failed in a later round: the row fails, and says when
                                rec["failed_round"] = len(runs[peer])
                        rec.update(status=r["status"], setup_s=r.get("setup_s"), solve_s=r.get("solve_s"),
                                   solve_cpu_s=r.get("solve_cpu_s"), rss_peak_mib=r.get("rss_peak_mib"), rss_setup_mib=r.get("rss_setup_mib"))
                        if r["status"] == "ok":
                            last_cpu[peer] = (s, r["solve_cpu_s"])
                            rec["residual"], rec["error"] = accuracy(problem, op, r["result"], ref)
                            if num_ref is not None:
                                rec["dist_ref"] = float(np.abs(r["result"] - num_ref).sum())
                            rec["within"] = within(rec) if problem == "pi" else None
                            rec["note"] = r.get("info", "")
                            if r.get("matvecs"):
                                rec["matvecs"] = int(r["matvecs"])
                                # least traffic of one product: the table once, one vector in, one out
                                rec["bw_bound_s"] = r["matvecs"] * 8 * (op.n_tokens + 2) * s / bandwidth
                            if peer == "semio-auto" and problem == "pi" and r.get("bound") is not None:
                                semio_ref = (r["result"], r["bound"])
                            if ref is None and semio_ref is not None and problem == "pi":
                                # ||x - pi*|| <= ||x - pi_auto|| + (certified bound of pi_auto)
                                rec["error_le"] = float(np.abs(r["result"] - semio_ref[0]).sum()) + semio_ref[1]
                            if peer.startswith("storm-"):
                                env_desc[peer] = r.get("info", "")
                                rec["note"] = ""
                            if rec.get("cpu_runs"):
                                runs_txt = ", ".join(f"{c:.3g}" for c in rec["cpu_runs"])
                                rec["note"] = (rec["note"] + "; " if rec["note"] else "") + f"CPU s of the runs: {runs_txt}"
                        else:
                            stopped[peer] = r["status"] if r["status"] != "failed" else "failed"
                            rec["note"] = {"DNF": f"did not finish in {limit:g} CPU s",
                                           "OOM": f"over the {args.mem_gib:g} GiB memory cap"}.get(
                                r["status"], r.get("error", ""))
                            if rec.get("failed_round"):
                                ok_txt = ", ".join(f"{c:.3g}" for c in rec["cpu_runs"])
                                rec["note"] += (f" (in round {rec['failed_round']} of {args.repeat}; "
                                                f"the rounds before: ok, CPU s {ok_txt})")
                    records.append(rec)
                    rows.append(row(rec))
                    print(rows[-1], flush=True)

    headers = ["problem", "chain", "N", "states", "peer", "status", "setup s", "solve s", "solve CPU s", "matvecs",
               "bw bound s", "of CPU s", "residual", "error vs exact", "dist to ref", f"within {WITHIN:.0e}",
               "peak MiB", "+MiB", "+MiB / table", "note"]
    RESULTS.mkdir(exist_ok=True)
    extra = RESULTS / "solve_lu16_raw.json"  # the supplementary run of the direct solvers (see Usage)
    extra = json.loads(extra.read_text()) if args.name == "solve" and extra.exists() else None
    raw = {"limit_s": limit, "mem_gib": args.mem_gib, "sizes": sizes, "semio_methods": methods, "threads": args.threads,
           "storm_settings": env_desc, "references": references, "records": records}
    atomic_write_text(RESULTS / f"{args.name}_raw.json", json.dumps(raw, indent=1, default=float))
    fig = solve_figure(records, limit, RESULTS / f"{args.name}.png", extra=extra["records"] if extra else None,
                       extra_label=f" (limit {extra['limit_s']:g} CPU s, solve_lu16.md)" if extra else "")
    text = notes(limit, args.mem_gib, methods, env_desc, fig, extra is not None, bandwidth, args.threads, WALL_FACTOR)
    if args.repeat > 1:
        text += (f"\n\nRepeats: every peer ran {args.repeat} times per chain, in {args.repeat} interleaved rounds "
                 "(each round runs each peer once, in a fresh process), so that all peers meet the same slow and "
                 "fast spells of the shared machine. Each row is the run of median solve CPU time (its setup, "
                 "memory and answer); its note lists the CPU times of all runs.")
    text += "\n\n" + reference_notes(references) + "\n\n" + summary(records)
    write_table(args.name, headers, rows, notes=text,
                title="Stationary distribution (pi) and absorption probabilities (h): semio_jax vs Storm vs SciPy "
                      f"(S=2^L full windows; limit {limit:g} CPU s per solve)")
    return 0


def copy_bandwidth(nbytes: int = 2**28, repeats: int = 5) -> float:
    """Bytes per second np.copyto moves on this machine (read + write counted), best of ``repeats``."""
    a = np.ones(nbytes // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


if __name__ == "__main__":
    raise SystemExit(main())

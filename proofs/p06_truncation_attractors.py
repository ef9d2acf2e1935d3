"""P6 truncation: several attractors possible; absorption probabilities sum to 1; the unabsorbed mass decays at rho."""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

import semio_jax as sj
from semio_jax.testing import strategies as S

from ._lib import Replay, Tracker, full_block, op_from_json, op_to_json, search, spectral_radius

NAME = "p06_truncation_attractors"
SLACK = ("min over 1 <= t <= t_max of log m(t) - t log rho (nats; rho^t <= m(t) is the rate statement; none when "
         "rho = 0), m(t) = max_s P_s(X_t transient); -1 if a pass/fail check fails: rows of h sum to 1, the basin "
         "sandwich P_s(X_t in A_a) <= h_a(s) <= P_s(X_t in A_a) + P_s(X_t transient) (tolerance = the engine's "
         "error bound + 1e-12), m(t) <= m(L)^floor(t/L) (log-space tolerance 1e-9 nats), or the rate m(t)^(1/t) -> rho "
         "(rate_check: |log of the rate over the horizon's second half - log rho| <= 2/(t2 - t1); m reaching 0 "
         "exactly iff the transient block's graph has no cycle)")
TOL_LOG = 1e-9  # nats: rounding of t <= 200 pulls and of the eigenvalue solve (~1e-12) with room to spare


RATE_K = 2.0  # the rate estimate may be off by RATE_K / (t2 - t1) in log: a prefactor varying by e^2
TINY = 1e-250  # m(t) below this is not used for the rate (float64 underflow ahead)


def has_cycle(Q: np.ndarray) -> bool:
    """Whether the graph of Q's positive entries has a cycle (a self-loop or a strong component of size > 1):
    read from the support alone, so it decides rho > 0 independently of the eigen-solve."""
    if Q.size == 0:
        return False
    n_comp, labels = connected_components(csr_matrix(Q > 0), directed=True, connection="strong")
    return bool((np.diag(Q) > 0).any() or np.bincount(labels).max() > 1)


def rate_check(m: np.ndarray, rho: float, L: int, n_transient: int, cyclic: bool) -> dict:
    """Statement 3 on the exact sequence m(0..t_max) against rho (computed independently, by an eigen-solve)
    and the support of the transient block (``cyclic``: does its graph have a cycle, i.e. is rho > 0).

    * rho^t <= m(t) for t >= 1 (slack_rho_lower, nats; inf when rho = 0);
    * m(t) <= m(L)^floor(t/L) (slack_submultiplicative, nats);
    * m(t)^(1/t) -> rho, at finite t:
      - no cycle: Q is nilpotent, so rho must be 0 and m(t) = 0 exactly for t >= the number of transient
        states (if t_max reaches it); a cycle: rho > 0 and m(t) > 0 for every t;
      - rho > 0: the rate over the second half of the horizon where m >= 1e-250,
        r = (m(t2)/m(t1))^(1/(t2 - t1)) with t1 = t2 // 2, satisfies |log r - log rho| <= 2/(t2 - t1).
        Writing m(t) = C(t) rho^t, the error is log(C(t2)/C(t1))/(t2 - t1): the tolerance lets the
        prefactor change by a factor e^2 over the window (a Jordan block of size k changes it by
        2^(k-1); a subdominant eigenvalue by its ratio^t1). Needs t2 >= 20, else not assessed.
    """
    t = np.arange(m.size)
    pos = m > 0
    slack_lower = math.inf
    if rho > 0:
        with np.errstate(divide="ignore"):
            gap = (np.log(m[pos]) - t[pos] * math.log(rho))[1:]  # t >= 1 (t = 0 is the identity 1 = 1)
        slack_lower = float(gap.min()) if gap.size else math.inf
    slack_upper = math.inf
    if m.size > L and m[L] > 0:
        k = t // L
        ok = pos & (k > 0)
        if ok.any():
            slack_upper = float((k[ok] * math.log(m[L]) - np.log(m[ok])).min())
    rate, err, tol, rate_ok = None, None, None, True
    if not cyclic:
        rate_ok = rho == 0 and (m.size <= n_transient or bool((m[n_transient:] == 0).all()))
    elif not (rho > 0 and pos.all()):
        rate_ok = False  # a cycle keeps mass in T forever, and its spectral radius is positive
    else:
        tail = np.flatnonzero(m >= TINY)
        t2 = int(tail[-1])
        t1 = t2 // 2
        if t2 >= 20:
            rate = float((m[t2] / m[t1]) ** (1.0 / (t2 - t1)))
            err = abs(math.log(m[t2] / m[t1]) / (t2 - t1) - math.log(rho))
            tol = RATE_K / (t2 - t1)
            rate_ok = err <= tol
    return {"slack_rho_lower": slack_lower, "slack_submultiplicative": slack_upper, "rate_estimate": rate,
            "rate_error": err, "rate_tolerance": tol, "rate_ok": rate_ok}


def analyse(op: sj.Operator, t_max: int) -> tuple[float, dict]:
    sp = op.space
    cs = sj.class_structure(op)
    A = cs.attractors
    transient = np.ones(op.num_states, dtype=bool)
    for a in A:
        transient[a] = False
    br = sj.basins_result(op)
    h = br.probabilities
    tol_h = (br.error_bound or 0.0) + 1e-12
    facts = {"attractors": len(A), "sizes": [len(a) for a in A], "transient": int(transient.sum()),
             "transient_full": int(transient[:sp.num_full].sum()), "max_row_error": float(br.max_row_error),
             "basin_error_bound": br.error_bound}
    ok_rows = float(br.max_row_error) <= tol_h + 1e-10  # rows of h sum to 1
    # (1) sandwich by exact t-step pulls of the indicators
    ind = np.zeros((op.num_states, len(A) + 1))
    for i, a in enumerate(A):
        ind[a, i] = 1.0
    ind[transient, -1] = 1.0
    g = ind.copy()
    m = np.zeros(t_max + 1)
    m[0] = g[:, -1].max()
    for t in range(1, t_max + 1):
        g = op.pull(g)
        m[t] = g[:, -1].max()
    lower = g[:, :-1]
    upper = lower + g[:, -1:]
    sandwich = float(min((h - lower).min(), (upper - h).min()))  # >= 0 up to the tolerance
    ok_sandwich = sandwich >= -tol_h
    # (2), (3): spectral radius of the transient block (prefix states are nilpotent: only full states matter)
    tf = np.flatnonzero(transient[:sp.num_full])
    Q = full_block(op)[np.ix_(tf, tf)]
    rho = spectral_radius(Q) if tf.size else 0.0
    rc = rate_check(m, rho, L=sp.length, n_transient=int(transient.sum()), cyclic=has_cycle(Q))
    slack_lower, slack_upper, rate = rc["slack_rho_lower"], rc["slack_submultiplicative"], rc["rate_estimate"]
    tol_log = TOL_LOG
    facts.update({"rho": rho, "m_t_max": float(m[-1]), "rate_estimate": rate, "rows_sum_to_1": ok_rows,
                  "sandwich_margin": sandwich, "sandwich_ok": ok_sandwich, "slack_rho_lower": slack_lower,
                  "slack_submultiplicative": slack_upper, "rate_error": rc["rate_error"],
                  "rate_tolerance": rc["rate_tolerance"], "rate_ok": rc["rate_ok"]})
    ok = ok_rows and ok_sandwich and slack_upper >= -tol_log and slack_lower >= -tol_log and rc["rate_ok"]
    if not ok:
        return -1.0, facts
    return (slack_lower if slack_lower != math.inf else math.inf), facts


def validate(ctx):
    tr = Tracker(tol=TOL_LOG)
    rows = []
    t_max = 80 if ctx.quick else 200
    most = 0

    def case(label, op, model):
        nonlocal most
        slack, f = analyse(op, t_max)
        most = max(most, f["attractors"])
        tr.add(label, slack, lambda: {"model": model, "procedure": op.procedure.spec, "facts": f}, size=op.num_states)
        rows.append([label, f["attractors"], " ".join(map(str, f["sizes"][:6])) + (" ..." if len(f["sizes"]) > 6 else ""),
                     f["transient_full"], f["max_row_error"], f["rho"], f["rate_estimate"], f["m_t_max"],
                     slack if slack != math.inf else "- (rho = 0)"])

    zoo_specs = ["top_p=0.5", "min_p=0.3"] if ctx.quick else \
        ["top_k=2", "top_p=0.5", "top_p=0.8", "min_p=0.1", "min_p=0.3", "temperature=0.5,top_k=2"]
    for name in ("coin", "markov2", "dyck") if not ctx.quick else ("coin", "dyck"):
        for spec in zoo_specs:
            case(f"zoo {name} {spec}", ctx.zoo_op(name, spec), {"kind": "zoo", "name": name})
    for spec in ctx.random_specs():
        for p in ["top_p=0.5", "min_p=0.2"]:
            case(f"{spec[0]} {p}", ctx.random_op(spec[0], p), ctx.random_model_spec(spec[0]))
    if most < 2:
        tr.add("existence of several attractors", -1.0, {"reason": "no case with two or more attractors"})
    for kind, k in (("multi", 0), ("any", 1)):
        strat = S.operators(kind=kind, spaces_strategy=S.spaces(min_tokens=2, max_tokens=3, max_length=3,
                                                                max_states=60))
        search(strat, lambda op: analyse(op, 40)[0], tracker=tr, label=repr,
               to_json=lambda op: {"operator": op_to_json(op), "facts": analyse(op, 40)[1]},
               size=lambda op: op.num_states, max_examples=ctx.examples(100, 20), seed=ctx.seed + k, tol=TOL_LOG)
    return tr.result(
        summary={"most attractors in one zoo/random case": most},
        table={"title": "truncated zoo and random-transformer chains",
               "columns": ["case", "attractors", "sizes", "transient full states", "max |sum_a h_a - 1|",
                           "rho (transient block)", "rate (m(t2)/m(t1))^(1/(t2 - t1)), t1 = t2/2, t2 = last t with "
                           "m >= 1e-250", f"m({t_max})", "slack (nats)"],
               "rows": rows})


def replay(cex: dict) -> Replay:
    op = op_from_json(cex["operator"])
    slack, facts = analyse(op, 40)
    return Replay(slack < 0, f"slack {slack}", facts)

"""F2 (expected false): convergence is at least as fast as the spectral gap says: d(n) <= SLEM^n for all n."""

from __future__ import annotations

import math

import numpy as np

import semio_jax as sj
from semio_jax.testing import strategies as S

from ._lib import Replay, Tracker, op_from_json, op_from_model_spec, op_to_json, search

NAME = "f02_tv_within_slem_power"
SLACK = "min over n of SLEM^n - d(n), d(n) = max over full-state starts of ||P^n(x, .) - pi||_TV (probability)"
RATE_TOL = 0.05


def curves(op: sj.Operator, n: int):
    d = sj.worst_case_tv(op, n)
    slem = float(sj.spectral_gap(op).classes[0].slem)
    return d, slem


def slack(op: sj.Operator, n: int) -> tuple[float, dict]:
    d, slem = curves(op, n)
    t = np.arange(n + 1)
    s = slem ** t - d
    k = int(np.argmin(s))
    bad = np.flatnonzero(s < -1e-12)
    first = int(bad[0]) if bad.size else None
    return float(s[k]), {"slem": slem, "n_first_violation": first,
                         "d_at_first": float(d[first]) if first is not None else None,
                         "slem_power_at_first": slem**first if first is not None else None,
                         "d": d.tolist()}


def corrected(op: sj.Operator, n: int, delta: float) -> dict:
    """Rigorous d(n) <= delta(P^L)^floor(n/L), and the fitted asymptotic rate of d vs log SLEM."""
    d, slem = curves(op, n)
    L = op.space.length
    t = np.arange(n + 1)
    dob = float((delta ** (t // L) - d).min())
    ok = np.flatnonzero(d > 1e-12)
    rate = None
    if ok.size >= 6:
        t2 = ok[-1]
        t1 = max(t2 // 2, ok[0])
        if t2 > t1:
            rate = float((math.log(d[t2]) - math.log(d[t1])) / (t2 - t1))
    return {"dobrushin_slack": dob, "rate": rate, "log_slem": math.log(slem) if slem > 0 else -math.inf,
            "delta": delta}


def validate(ctx):
    tr = Tracker(tol=1e-12)
    rows = []
    corrected_ok = True
    n = 30 if ctx.quick else 60
    zoo = ("coin", "dyck") if ctx.quick else ("coin", "markov2", "dyck")
    cases = [(f"zoo {m} temperature=1", ctx.zoo_op(m), {"kind": "zoo", "name": m}) for m in zoo]
    cases += [(f"{s[0]} temperature=1", ctx.random_op(s[0]), ctx.random_model_spec(s[0])) for s in ctx.random_specs()]
    for label, op, model in cases:
        s, f = slack(op, n)
        c = corrected(op, n, ctx.delta_L(op))
        tr.add(label, s, lambda: {"model": model, "procedure": "temperature=1", "n": n, **f}, size=10**6 + op.num_states)
        asym_ok = c["rate"] is None or c["rate"] <= c["log_slem"] + RATE_TOL
        if c["dobrushin_slack"] < -1e-12 or not asym_ok:
            corrected_ok = False
        rows.append([label, f["slem"], f["n_first_violation"], f["d_at_first"], f["slem_power_at_first"],
                     c["delta"], c["dobrushin_slack"], c["rate"], c["log_slem"]])
    zoo_example = tr.violation
    tr.violation = None
    strat = S.operators(kind="ergodic", spaces_strategy=S.spaces(min_tokens=2, max_tokens=3, max_length=3,
                                                                 max_states=40))
    search(strat, lambda op: slack(op, 12)[0], tracker=tr, label=repr,
           to_json=lambda op: {"operator": op_to_json(op), "n": 12, **{k: v for k, v in slack(op, 12)[1].items()}},
           size=lambda op: op.num_states, max_examples=ctx.examples(60, 20), seed=ctx.seed, tol=1e-12)
    if tr.violation is None:
        tr.violation = zoo_example
    elif zoo_example is not None:
        tr.violation["zoo_example"] = zoo_example
    return tr.result(
        corrected_holds=corrected_ok,
        table={"title": "worst-case d(n) vs SLEM^n; corrected: Dobrushin bound and fitted rate",
               "columns": ["case", "SLEM", "first n with d(n) > SLEM^n", "d(n)", "SLEM^n", "delta(P^L)",
                           "min_n delta^floor(n/L) - d(n)", "fitted rate of d", "log SLEM"], "rows": rows})


def replay(cex: dict) -> Replay:
    if "operator" in cex:
        op = op_from_json(cex["operator"])
    else:
        op = op_from_model_spec(cex["model"], cex["procedure"])
    s, f = slack(op, cex["n"])
    k = f["n_first_violation"]
    msg = (f"SLEM = {f['slem']:.6g}; at n = {k}: worst-case d(n) = {f['d_at_first']:.6g} > SLEM^n = "
           f"{f['slem_power_at_first']:.6g}" if k is not None else f"no violation (min slack {s})")
    out = Replay(k is not None, msg, {"slem": f["slem"], "n": k})
    if "zoo_example" in cex:
        z = cex["zoo_example"]
        zs, zf = slack(op_from_model_spec(z["model"], z["procedure"]), z["n"])
        out.numbers["zoo/random-model example"] = (f"{z['case']}: SLEM = {zf['slem']:.4g}, at n = {zf['n_first_violation']}: "
                                      f"d = {zf['d_at_first']:.4g} > SLEM^n = {zf['slem_power_at_first']:.4g}")
        out.violated = out.violated and zf["n_first_violation"] is not None
    return out

"""P1 uniqueness: temperature > 0 and no truncation => P^L > 0 on T^L, one closed class, unique pi."""

from __future__ import annotations

import numpy as np

import semio_jax as sj
from semio_jax.testing import strategies as S

from ._lib import (Replay, Tracker, doeblin_mass, fmt, full_powers, min_overlap, op_from_json, op_to_json,
                   reference_probs, search, window_powers)

NAME = "p01_uniqueness"
SLACK = ("eps = min_{x,y in T^L} P^L(x, y) (> 0 is the claim; reported as the smallest eps seen), with P^L by the "
         "product formula from the model's logits (numpy oracle of the procedure). A case also fails if the "
         "engine finds attractors other than T^L, a prefix state that is not transient, a stationary law not "
         "positive on T^L or not 0 on prefixes, or a Dobrushin overlap 1 - delta(P^L) of the engine's P^L "
         "(structured pushes of op.probs) below N^L eps.")
REL = 1e-9  # relative rounding allowed between the two computations of P^L

UNDERFLOW = 700.0  # exp(-x) for x > ~745 rounds to 0 in float64; stay well inside


def check(op: sj.Operator) -> tuple[float, dict]:
    """Return (slack, facts). slack = eps if every claim holds, else -1 (a failed structural claim).

    Two independent computations meet here: eps comes from the product formula on the model's own
    next-token laws (``reference_probs``: the procedure applied to the logits by the numpy oracle, then
    ``window_powers``), the overlap 1 - delta(P^L) from the engine's table by structured pushes
    (``full_powers``). Statement 4's inequality compares the two, so it fails if the engine's operator is
    not the chain the model defines (a wrong temperature, a wrong successor), as well as if the theorem did.
    """
    sp = op.space
    nf = sp.num_full
    facts = {}
    PL = full_powers(op, sp.length)
    PL_model = window_powers(reference_probs(op)[:nf], sp.n_tokens, sp.length)
    eps = float(PL_model.min())
    facts["eps"] = eps
    facts["eps_engine"] = float(PL.min())
    # statement 1's product formula: the engine's P^L equals the model's, entry by entry
    rel = np.abs(PL - PL_model) / np.maximum(PL_model, np.finfo(float).tiny)
    facts["max_rel_diff_PL"] = float(rel.max())
    same_PL = bool(rel.max() <= REL)
    A = sj.attractors(op)
    facts["attractors"] = len(A)
    one_class = len(A) == 1 and len(A[0]) == nf and np.array_equal(A[0], np.arange(nf))
    T = sj.transient_states(op)
    prefix_transient = np.array_equal(T, np.arange(nf, sp.num_states))
    # 1 - delta(P^L): the smallest overlap of two rows (exact for N^L <= 256, else the Doeblin mass,
    # a lower bound); computed directly, since 1 - delta rounds to 0 when delta is within 1e-16 of 1.
    overlap = min_overlap(PL) if nf <= 256 else doeblin_mass(PL)
    facts["overlap_PL"] = overlap
    facts["delta_PL"] = 1.0 - overlap
    facts["overlap_minus_NL_eps"] = overlap - nf * eps
    facts["dobrushin_ok"] = bool(overlap >= nf * eps * (1 - REL))
    ok = eps > 0 and same_PL and one_class and prefix_transient and facts["dobrushin_ok"]
    if one_class:
        pi = sj.stationary(op)[0]
        facts["pi_min_full"] = float(pi[:nf].min())
        facts["pi_prefix_mass"] = float(pi[nf:].sum())
        ok = ok and pi[:nf].min() > 0 and pi[nf:].sum() == 0
    return (eps if ok else -1.0), facts


def beyond_float64(op: sj.Operator, stationary: bool = True) -> dict:
    """Statements 2-4 where float64 probabilities underflow: from the logits (every one finite, so every
    transition is possible), the engine's support (decided from the logits), its attractors and transient
    states, and (``stationary``) the log-domain stationary values log pi, finite on every window."""
    sp = op.space
    nf = sp.num_full
    A = sj.attractors(op)
    facts = {"float64 zeros on T^L": int((op.probs[:nf] == 0).sum()), "entries on T^L": int(op.probs[:nf].size),
             "all logits finite": bool(np.isfinite(np.asarray(op.logits, dtype=np.float64)).all()),
             "engine support full": bool(op.support.all()), "attractors": len(A),
             "attractor sizes": [len(a) for a in A]}
    ok = (facts["all logits finite"] and facts["engine support full"] and len(A) == 1
          and np.array_equal(A[0], np.arange(nf))
          and np.array_equal(sj.transient_states(op), np.arange(nf, sp.num_states)))
    if stationary:
        res = sj.stationary_result(op)
        logpi = res.log_values[0]
        facts["min log pi on T^L"] = float(logpi.min())
        facts["float64 zeros of pi"] = int((res.values[0] == 0).sum())
        ok = ok and len(res.supports) == 1 and np.array_equal(res.supports[0], np.arange(nf)) \
            and bool(np.isfinite(logpi).all())
    facts["ok"] = bool(ok)
    return facts


def _within_assumptions(op: sj.Operator) -> bool:
    lg = np.asarray(op.logits, dtype=np.float64)
    t = op.procedure.temperature
    return np.isfinite(lg).all() and float(np.ptp(lg, axis=1).max()) / t < UNDERFLOW


def validate(ctx):
    tr = Tracker()
    rows = []

    def case(label, op, spec=None):
        if not _within_assumptions(op):
            tr.notes.append(f"{label}: skipped, logit range / t >= {UNDERFLOW} (float64 underflow, outside the assumptions)")
            return
        slack, f = check(op)
        tr.add(label, slack, lambda: {"operator": op_to_json(op), "facts": f} if op.num_states <= 200 else
               {"model": spec, "facts": f}, size=op.num_states)
        rows.append([label, op.n_tokens, op.space.length, f["eps"], f["overlap_PL"], f["attractors"],
                     f.get("pi_min_full", float("nan"))])

    temps = [1.0] if ctx.quick else [1.0, 0.5, 2.0]
    for name in ("coin", "markov2", "dyck"):
        for t in temps:
            case(f"zoo {name} temperature={t}", ctx.zoo_op(name, f"temperature={t}"), {"kind": "zoo", "name": name})
    for spec in ctx.random_specs():
        for t in ([1.0] if ctx.quick else [1.0, 0.3]):
            case(f"{spec[0]} temperature={t}", ctx.random_op(spec[0], f"temperature={t}"),
                 ctx.random_model_spec(spec[0]))
    n_zoo = tr.cases

    strat = S.operators(kind="ergodic", spaces_strategy=S.spaces(min_tokens=2, max_tokens=3, max_length=3,
                                                                 max_states=80))
    search(strat, lambda op: check(op)[0] if _within_assumptions(op) else 1.0, tracker=tr,
           label=lambda op: f"{op!r}", to_json=lambda op: {"operator": op_to_json(op), "facts": check(op)[1]},
           size=lambda op: op.num_states, max_examples=ctx.examples(120, 25), seed=ctx.seed)

    # Beyond float64's range: dyck at t = 0.01 (logit range / t > 745), where float64 probabilities underflow
    # to 0. The model still allows every transition (finite logits); the engine's support comes from the
    # logits, so the structural claims 2-4 are checked exactly (pi through its log-domain values).
    outside = beyond_float64(ctx.zoo_op("dyck", "temperature=0.01"), stationary=not ctx.quick)
    outside["case"] = "zoo dyck temperature=0.01"
    if outside["ok"]:
        tr.count()
    else:
        tr.add("zoo dyck temperature=0.01 (beyond float64: support, attractor, transient prefixes, log pi)", -1.0,
               {"model": {"kind": "zoo", "name": "dyck"}, "procedure": "temperature=0.01", "facts": outside})
    return tr.result(
        summary={"zoo/random cases": n_zoo, "smallest eps (zoo/random)": fmt(min(r[3] for r in rows)),
                 "beyond float64 (dyck, t = 0.01)": {k: v for k, v in outside.items() if k != "ok"}},
        table={"title": "zoo and random-transformer cases", "columns": ["case", "N", "L", "eps = min P^L",
               "1 - delta(P^L) (exact, or Doeblin mass)", "attractors", "min pi on T^L"], "rows": rows})


def replay(cex: dict) -> Replay:
    op = op_from_json(cex["operator"])
    slack, facts = check(op)
    return Replay(slack < 0, f"slack {slack}", facts)

"""P1 uniqueness: temperature > 0 and no truncation => P^L > 0 on T^L, one closed class, unique pi."""

from __future__ import annotations

import numpy as np

import semio_jax as sj
from semio_jax.testing import strategies as S

from ._lib import Replay, Tracker, doeblin_mass, fmt, min_overlap, full_powers, op_from_json, op_to_json, search

NAME = "p01_uniqueness"
SLACK = ("eps = min_{x,y in T^L} P^L(x, y) (> 0 is the claim; reported as the smallest eps seen). A case also "
         "fails if the engine finds attractors other than T^L, a prefix state that is not transient, or a "
         "Dobrushin overlap 1 - delta(P^L) below N^L eps.")

UNDERFLOW = 700.0  # exp(-x) for x > ~745 rounds to 0 in float64; stay well inside


def check(op: sj.Operator) -> tuple[float, dict]:
    """Return (slack, facts). slack = eps if every claim holds, else -1 (a failed structural claim)."""
    sp = op.space
    nf = sp.num_full
    facts = {}
    PL = full_powers(op, sp.length)
    eps = float(PL.min())
    facts["eps"] = eps
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
    ok = eps > 0 and one_class and prefix_transient and overlap >= nf * eps * (1 - 1e-9)
    if one_class:
        pi = sj.stationary(op)[0]
        facts["pi_min_full"] = float(pi[:nf].min())
        facts["pi_prefix_mass"] = float(pi[nf:].sum())
        ok = ok and pi[:nf].min() > 0 and pi[nf:].sum() == 0
    return (eps if ok else -1.0), facts


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

    # Outside the assumptions: the float64 operator of a real model at a tiny temperature.
    op = ctx.zoo_op("dyck", "temperature=0.01")
    nf = op.space.num_full
    st = sj.stationary_result(op)
    outside = {"case": "zoo dyck temperature=0.01 (logit range / t > 745)",
               "zero entries on T^L": int((op.probs[:nf] == 0).sum()),
               "impossible moves on T^L (support from the logits)": int((~op.support[:nf]).sum()),
               "attractor sizes": [int(a.size) for a in sj.attractors(op)],
               "min log pi on T^L": float(min(v.min() for v in st.log_values))}
    tr.notes.append(f"outside the assumptions (float64 underflow): {outside}")
    return tr.result(
        summary={"zoo/random cases": n_zoo, "smallest eps (zoo/random)": fmt(min(r[3] for r in rows)),
                 "float64 caveat": outside},
        table={"title": "zoo and random-transformer cases", "columns": ["case", "N", "L", "eps = min P^L",
               "1 - delta(P^L) (exact, or Doeblin mass)", "attractors", "min pi on T^L"], "rows": rows})


def replay(cex: dict) -> Replay:
    op = op_from_json(cex["operator"])
    slack, facts = check(op)
    return Replay(slack < 0, f"slack {slack}", facts)

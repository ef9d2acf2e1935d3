"""P10 sensitivity: one-token perturbations of a prompt are forgotten at rate <= log max(SLEM, rho_transient)."""

from __future__ import annotations

import math

import numpy as np

import semio_jax as sj
from semio_jax.analysis import limit_distribution
from semio_jax.testing import strategies as S

from ._lib import Replay, Tracker, delta_L, least, op_from_json, op_to_json, search

NAME = "p10_sensitivity"
SLACK = ("min over prompts, perturbations and t (where the bound is < 1 and D(t) > 1e-13) of log(bound) - log D(t) "
         "(nats) for the two finite-t bounds "
         "D(t) <= d_s(t) + d_s'(t) + ||pi_s - pi_s'||_TV and D(t) <= delta(P^L)^floor((t - L + k)/L); the asymptotic "
         "margin log max(SLEM, rho_T) - rate of D over t in [200, 400] is reported separately (violation below -0.03)")
RATE_TOL = 0.03  # finite-window error of the long-horizon rate estimate (see the .md)
LONG_T = 400     # horizon of the Perron-projected difference pushes (rate fitted over [LONG_T/2, LONG_T])
REL = 1e-9
ABS = 1e-15    # absolute rounding of a TV distance between pushed vectors
FLOOR = 1e-13  # below this D(t) is rounding noise


def long_rates(op: sj.Operator, a: int, bs, pi: np.ndarray, T: int = LONG_T) -> np.ndarray:
    """Rates of D(t) over [T/2, T] for the differences e_a - e_b (b in bs), Perron part removed each step.

    The Perron component of any vector w is (w . 1) pi. The exact difference has none (it sums to 0), but
    rounding adds ~1e-16 |w| of it every step and that part never decays, which is why D(t) computed from
    two separately pushed laws stalls near 1e-13. Removing (w . 1) pi after every push keeps the rounding
    error in the decaying subspace, so D(t) stays accurate relative to itself down to ~1e-300.
    """
    bs = np.asarray(bs, dtype=np.int64)
    V = np.zeros((op.num_states, len(bs)))
    V[a, :] = 1.0
    V[bs, np.arange(len(bs))] -= 1.0
    D = np.zeros((T, len(bs)))
    for t in range(T):
        V = op.push(V)
        V -= pi[:, None] * V.sum(0)[None, :]
        D[t] = 0.5 * np.abs(V).sum(0)
    rates = np.full(len(bs), -np.inf)
    for j in range(len(bs)):
        ok = np.flatnonzero(D[:, j] > 1e-280)
        if ok.size >= 20 and ok[-1] == ok.size - 1:
            t2 = ok[-1]
            t1 = t2 // 2
            rates[j] = (math.log(D[t2, j]) - math.log(D[t1, j])) / (t2 - t1)
    return rates


def analyse(op: sj.Operator, prompt, n: int, delta: float, long_t: int = LONG_T):
    sp = op.space
    r = sj.prompt_sensitivity(op, prompt, n=n)
    k = sp.length_of(r.prompt)
    t = np.arange(1, n + 1)
    d_s = sj.tv_distance(op, r.prompt, n)[1:]
    worst = math.inf
    margins = []
    same = np.flatnonzero(r.limit_tv == 0)
    if same.size and r.log_rate_bound is not None:
        A = int(sj.class_structure(op).attractor_of[limit_distribution(op, r.prompt).argmax()])
        if sj.periods(op)[A] == 1:
            rates = long_rates(op, int(r.prompt), r.perturbed[same], sj.stationary(op)[A], T=long_t)
            margins = [r.log_rate_bound - x for x in rates if np.isfinite(x)]
    for i, b in enumerate(r.perturbed):
        D = r.state_tv[i]
        d_b = sj.tv_distance(op, int(b), n)[1:]
        b1 = d_s + d_b + r.limit_tv[i]
        b2 = delta ** np.floor(np.maximum(t - (sp.length - k), 0) / sp.length)
        for bound in (b1, b2):
            # informative points only: the bound is below 1 and D is above the float64 rounding floor
            # (TV of two pushed vectors carries an absolute error of ~S * 1e-16)
            pos = (D > FLOOR) & (bound < 1.0)
            if pos.any():
                worst = least(worst, float((np.log(bound[pos] + ABS) - np.log(D[pos])).min()))
    return worst, margins, r


def validate(ctx):
    tr = Tracker(tol=1e-9)
    n = 48 if ctx.quick else 64
    rows = []
    all_margins = []

    def case(label, op, model):
        delta = ctx.delta_L(op)
        sp = op.space
        prompts = [[0], [1, 0] if sp.length > 1 else [1], [0] * sp.length]
        if ctx.quick:
            prompts = prompts[1:]
        for p in prompts:
            worst, margins, r = analyse(op, p, n, delta, 200 if ctx.quick else LONG_T)
            all_margins.extend(margins)
            m = min(margins) if margins else math.inf
            tr.add(f"{label} prompt {p}", worst,
                   lambda: {"model": model, "procedure": op.procedure.spec, "prompt": p}, size=op.num_states)
            if margins and m < -RATE_TOL:
                tr.add(f"{label} prompt {p} (asymptotic rate)", -1.0,
                       {"model": model, "procedure": op.procedure.spec, "prompt": p, "margin": m})
            fin = r.rates[np.isfinite(r.rates)]
            rows.append([label, "".join(map(str, p)), len(r.perturbed), float(fin.max()) if fin.size else "-inf",
                         r.log_slem, r.log_rate_bound, m if margins else "-", len(margins),
                         float(r.limit_tv.max()), worst])

    specs = ["temperature=1"] if ctx.quick else ["temperature=1", "top_p=0.9"]
    for name in ("coin", "dyck") if ctx.quick else ("coin", "markov2", "dyck"):
        for spec in specs:
            case(f"zoo {name} {spec}", ctx.zoo_op(name, spec), {"kind": "zoo", "name": name})
    for spec in ctx.random_specs():
        case(f"{spec[0]} temperature=1", ctx.random_op(spec[0]), ctx.random_model_spec(spec[0]))

    def hcheck(op):
        sp = op.space
        p = [0] if sp.prefixes and sp.length > 1 else [0] * sp.length
        return analyse(op, p, 24, delta_L(op))[0]

    strat = S.operators(kind="ergodic", spaces_strategy=S.spaces(min_tokens=2, max_tokens=3, max_length=3,
                                                                 max_states=60))
    search(strat, hcheck, tracker=tr, label=repr, to_json=lambda op: {"operator": op_to_json(op)},
           size=lambda op: op.num_states, max_examples=ctx.examples(60, 15), seed=ctx.seed, tol=1e-9)
    return tr.result(
        summary={"asymptotic margin log max(SLEM, rho_T) - long-horizon rate: min over perturbations":
                 min(all_margins) if all_margins else None,
                 "perturbations with a long-horizon rate (same aperiodic attractor)": len(all_margins),
                 "reading": "prompt_sensitivity's least-squares rates stop where D(t) reaches ~1e-12 (t ~ 30-60) "
                            "and can sit up to ~0.07 nats above log SLEM (polynomial Jordan factors, close "
                            "subdominant eigenvalues); the Perron-projected pushes reach t = 400 and the rate "
                            "over [200, 400] is within a few 1e-3 of log max(SLEM, rho_T)"},
        table={"title": f"one-token perturbations of prompts, t = 1..{n}",
               "columns": ["case", "prompt", "perturbations", "largest rate fitted by prompt_sensitivity (t <= n)", "log SLEM",
                           "log max(SLEM, rho_T)", f"min margin, rate over t in [{LONG_T // 2}, {LONG_T}]", "long-horizon rates", "max limit TV",
                           "finite-t slack (nats)"], "rows": rows})


def replay(cex: dict) -> Replay:
    op = op_from_json(cex["operator"])
    sp = op.space
    p = [0] if sp.prefixes and sp.length > 1 else [0] * sp.length
    worst = analyse(op, p, 24, delta_L(op))[0]
    return Replay(worst < -1e-9, f"finite-t slack {worst}", {"slack": worst})

"""P8 (expected false): (1/n) log P(at least a n heads) is governed by the single most likely such sequence."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

import semio_jax as sj
from semio_jax.testing import strategies as S

from ._lib import Replay, Tracker, ngram_op, op_from_model_spec, search

NAME = "p08_large_deviations"
SLACK = ("DELTA - gap_n at the largest n, where gap_n = (1/n)[log P(E_n) - log max_{w in E_n} P(w)] (nats per "
         "token) and DELTA = 0.05; negative = the event's probability is NOT governed by its most likely sequence")
DELTA = 0.05
HEADS = 1
A_VALUES = (0.6, 0.75, 0.9)


def dp(op: sj.Operator, n: int):
    """Backward DP over (state, heads still needed): log P, log max P and log #strings of 'at least r heads in t steps'.

    Returns three arrays [n + 1, S, n + 1] indexed [t, s, r] (r = 0..n; r <= 0 means the event already holds).
    """
    S_, N = op.num_states, op.n_tokens
    with np.errstate(divide="ignore"):
        logq = np.log(op.probs)  # [S, N]
    succ = op.successors
    R = n + 1
    base = np.full((S_, R), -np.inf)
    base[:, 0] = 0.0
    LS, LM, LC = [base], [base], [base]
    cols = np.arange(R)
    for t in range(1, n + 1):
        ps, pm, pc = LS[-1], LM[-1], LC[-1]
        terms_s, terms_m, terms_c = [], [], []
        for y in range(N):
            need = np.maximum(cols - (1 if y == HEADS else 0), 0)  # heads still needed after emitting y
            nxt = succ[:, y]
            ly = logq[:, y][:, None]
            terms_s.append(ly + ps[nxt][:, need])
            terms_m.append(ly + pm[nxt][:, need])
            alive = np.isfinite(ly)
            terms_c.append(np.where(alive, pc[nxt][:, need], -np.inf))
        LS.append(logsumexp(np.stack(terms_s), axis=0))
        LM.append(np.max(np.stack(terms_m), axis=0))
        LC.append(logsumexp(np.stack(terms_c), axis=0))
    return np.stack(LS), np.stack(LM), np.stack(LC)


def table(op: sj.Operator, start: int, ns, a_values=A_VALUES):
    LS, LM, LC = dp(op, max(ns))
    out = []
    for n in ns:
        for a in a_values:
            r = math.ceil(a * n - 1e-12)
            lp, lm, lc = LS[n, start, r], LM[n, start, r], LC[n, start, r]
            out.append({"n": n, "a": a, "log_P_E": float(lp), "log_max": float(lm), "log_count": float(lc),
                        "rate_P": float(lp / n), "rate_max": float(lm / n), "gap": float((lp - lm) / n),
                        "count_rate": float(lc / n)})
    return out


def binary_entropy(a: float) -> float:
    return 0.0 if a in (0.0, 1.0) else -(a * math.log(a) + (1 - a) * math.log(1 - a))


MODELS = [
    # (label, n-gram logits (order 0 or 1), context length)
    ("fair i.i.d. coin", [0.0, 0.0], 3),
    ("biased i.i.d. coin p(heads) = 0.3", list(np.log([0.7, 0.3])), 3),
    ("sticky coin (repeat w.p. 0.8)", np.log([[0.8, 0.2], [0.2, 0.8]]).tolist(), 3),
    ("low-entropy sticky coin (repeat w.p. 0.99)", np.log([[0.99, 0.01], [0.01, 0.99]]).tolist(), 3),
    ("near-deterministic alternation (switch w.p. 0.99)", np.log([[0.01, 0.99], [0.99, 0.01]]).tolist(), 3),
]


def validate(ctx):
    tr = Tracker()
    ns = (25, 64) if ctx.quick else (25, 50, 100, 200)
    n_last = ns[-1]
    rows = []
    corrected_ok = True
    worst_corr = math.inf

    def case(label, op, start, model, procedure):
        nonlocal corrected_ok, worst_corr
        res = table(op, start, ns)
        for r in res:
            # corrected statement: 0 <= gap_n <= (1/n) log |E_n|
            c = min(r["gap"], r["count_rate"] - r["gap"])
            worst_corr = min(worst_corr, c)
            if c < -1e-9:
                corrected_ok = False
                tr.notes.append(f"CORRECTED BOUND FAILED: {label} {r}")
            if r["n"] == n_last:
                rows.append([label, r["a"], r["n"], r["rate_P"], r["rate_max"], r["gap"], r["count_rate"]])
                cex = {"model": model, "procedure": procedure, "start_tokens": op.space.tokens(start).tolist(),
                       "length": op.space.length, "a": r["a"], "n": r["n"], "numbers": r}
                tr.add(f"{label}, a = {r['a']}", DELTA - r["gap"], cex, size=_size(model, op))

    for label, logits, L in MODELS:
        op = ngram_op(logits, L)
        case(label, op, op.space.index([0]), {"kind": "ngram", "logits": logits, "context_length": L}, "temperature=1")
    for t in ([1.0] if ctx.quick else [1.0, 0.5]):
        op = ctx.zoo_op("coin", f"temperature={t}")
        case(f"zoo coin temperature={t}", op, op.space.index([0]), {"kind": "zoo", "name": "coin"}, f"temperature={t}")
    for spec in ctx.random_specs():
        if spec[1] == 2:
            op = ctx.random_op(spec[0])
            case(spec[0], op, op.space.index([0]), ctx.random_model_spec(spec[0]), "temperature=1")
    zoo_example = tr.violation

    # hypothesis: an order-<=1 coin model, event "at least 60% heads in 48 tokens": shrink a violation
    n_h, a_h = 48, 0.6

    def hcheck(model):
        op = ngram_op(model.table, 2)
        r = table(op, op.space.index([0]), (n_h,), (a_h,))[0]
        return DELTA - r["gap"]

    def to_json(model):
        op = ngram_op(model.table, 2)
        r = table(op, op.space.index([0]), (n_h,), (a_h,))[0]
        return {"model": {"kind": "ngram", "logits": model.table.tolist(), "context_length": 2},
                "procedure": "temperature=1", "start_tokens": [0], "length": 2, "a": a_h, "n": n_h, "numbers": r}

    tr.violation = None  # the hypothesis-shrunk example replaces the zoo one as "the smallest"
    search(S.ngram_models(n_tokens=2, max_order=1, allow_neg_inf=False, scale=3.0), hcheck, tracker=tr,
           label=lambda m: f"n-gram order {m.order} logits {np.round(m.table, 3).tolist()}", to_json=to_json,
           size=lambda m: m.table.size, max_examples=ctx.examples(60, 15), seed=ctx.seed)
    if tr.violation is None:
        tr.violation = zoo_example
    elif zoo_example is not None:
        tr.violation["zoo_example"] = zoo_example
    fair = [r for r in rows if r[0] == "fair i.i.d. coin"]
    return tr.result(
        corrected_holds=corrected_ok,
        summary={"corrected statement 0 <= gap_n <= (1/n) log |E_n| (worst margin)": worst_corr,
                 "fair coin: gap_n vs H(a)": "; ".join(f"a = {r[1]}: gap {r[5]:.4f}, H(a) = {binary_entropy(r[1]):.4f}"
                                                      for r in fair)},
        table={"title": f"E_n = at least a n heads in n tokens after the prompt 0, n = {n_last} (rates in nats per token)",
               "columns": ["model", "a", "n", "(1/n) log P(E_n)", "(1/n) log max_{E_n} P(w)", "gap_n",
                           "(1/n) log |E_n|"], "rows": rows})


def _size(model, op):
    return op.num_states if model.get("kind") == "ngram" else 10**6 + op.num_states


def replay(cex: dict) -> Replay:
    model = cex["model"]
    if model["kind"] == "ngram":
        op = ngram_op(model["logits"], cex["length"])
    else:
        op = op_from_model_spec(model, cex["procedure"])
    start = op.space.index(cex["start_tokens"])
    r = table(op, start, (cex["n"],), (cex["a"],))[0]
    msg = (f"E = at least {cex['a']} n heads in n = {cex['n']} tokens after {cex['start_tokens']}: "
           f"(1/n) log P(E) = {r['rate_P']:.4f}, (1/n) log max_(w in E) P(w) = {r['rate_max']:.4f}, gap = "
           f"{r['gap']:.4f} nats/token > {DELTA} (the sequences in E number exp({r['count_rate']:.4f} n))")
    return Replay(r["gap"] > DELTA, msg, r)

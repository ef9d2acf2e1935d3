"""P7 next token vs most likely continuation: P(y|s) >= max P(w|s) over w starting with y; ratios; MAP vs greedy."""

from __future__ import annotations

import math

import numpy as np

import semio_jax as sj
from semio_jax.testing import strategies as S

from ._lib import Replay, Tracker, op_from_json, op_to_json, reference_probs, search
from .p03_trajectory_decay import bellman

NAME = "p07_next_token_vs_continuation"
SLACK = ("min over starts s, tokens y with q(y|s) > 0 and horizons n of log P(Y_1 = y | s) - log max_{w: w_1 = y, "
         "|w| = n} P(w | s) (nats; >= 0 is the claim), P(Y_1 = y | s) from the model's logits (numpy oracle of the "
         "procedure), the most likely continuation by max-product over the engine's table")
HORIZONS = (2, 3, 4, 6, 8)
TIE = 1e-12  # per-token tolerance for calling two log-probabilities equal


def continuation_table(op: sj.Operator, horizons=HORIZONS):
    """For each n: C[n][s, y] = log q(y|s) + V_{n-1}(succ(s, y)) = log of the best n-string from s starting with y."""
    with np.errstate(divide="ignore"):
        logq = np.log(op.probs)
    V = bellman(op, max(horizons))
    succ = op.successors
    return {n: logq + V[n - 1][succ] for n in horizons}, logq


def greedy_tokens(op: sj.Operator) -> np.ndarray:
    return np.argmax(op.probs, axis=1)  # ties to the lowest id


def disagreements(op: sj.Operator, horizons=HORIZONS):
    """Rows (s, n, greedy token, MAP first token, gap in nats) where the MAP's first token is strictly better.

    Only starts where the greedy token is the unique maximiser of q(. | s) count (a tie makes "the greedy
    token" a convention, not a claim)."""
    C, logq = continuation_table(op, horizons)
    g = greedy_tokens(op)
    srt = np.sort(op.probs, axis=1)
    unique = srt[:, -1] > srt[:, -2] * (1 + 1e-9) if op.n_tokens > 1 else np.ones(op.num_states, bool)
    out = []
    for n, c in C.items():
        best = c.max(axis=1)
        a = np.argmax(c, axis=1)
        gap = best - c[np.arange(op.num_states), g]
        bad = np.flatnonzero((gap > TIE * n) & unique)  # only starts whose greedy token is a strict maximum
        for s in bad:
            out.append((int(s), n, int(g[s]), int(a[s]), float(gap[s])))
    return out


def ratio_slack(op: sj.Operator, horizons=HORIZONS):
    """(min log ratio, max log ratio and where) over s, y with q > 0, n in horizons.

    The two sides are computed independently: log P(Y_1 = y | s) from the model's next-token laws (the
    procedure applied to the logits by the numpy oracle), log M_n(s, y) by max-product over the engine's
    table. The ratio is >= 1 for every table whose rows are the model's; a table that is not (built at
    another temperature, say) can make it fail.
    """
    C, _ = continuation_table(op, horizons)
    with np.errstate(divide="ignore"):
        logq = np.log(reference_probs(op))  # [S, N] the model's P(Y_1 = y | s)
    lo, hi, where = math.inf, -math.inf, None
    for n, c in C.items():
        with np.errstate(invalid="ignore"):
            r = logq - c  # = -V_{n-1}(succ) when the table is the model's; -inf where only the engine has y
        r = np.where(np.isfinite(c), r, np.nan)  # where the engine gives the string a probability
        lo = min(lo, float(np.nanmin(r)))
        k = int(np.nanargmax(r))
        if r.flat[k] > hi:
            s, y = divmod(k, op.n_tokens)
            hi, where = float(r.flat[k]), (s, y, n)
    return lo, hi, where


def describe(op: sj.Operator, s: int, n: int) -> dict:
    """The MAP and best greedy-first strings from s (engine map_trajectory / greedy_trajectory cross-checks)."""
    sp = op.space
    mp = sj.map_trajectory(op, s, n)
    C, logq = continuation_table(op, (n,))
    g = int(greedy_tokens(op)[s])
    # best string starting with the greedy token: greedy token, then MAP from its successor
    succ = int(op.successors[s, g])
    rest = sj.map_trajectory(op, succ, n - 1) if n > 1 else None
    best_g = [g] + (rest.tokens.tolist() if rest is not None else [])
    lp_g = float(logq[s, g] + (rest.log_prob if rest is not None else 0.0))
    return {"start": s, "start_tokens": sp.tokens(s).tolist(), "n": n, "q_start": op.probs[s].tolist(),
            "greedy_token": g, "map_tokens": mp.tokens.tolist(), "map_log_prob": float(mp.log_prob),
            "best_greedy_first_tokens": best_g, "best_greedy_first_log_prob": lp_g,
            "gap_nats": float(mp.log_prob) - lp_g, "dp_best": float(C[n][s].max())}


def validate(ctx):
    tr = Tracker(tol=1e-12)
    rows, dis_rows = [], []
    examples = []

    def case(label, op, model):
        lo, hi, where = ratio_slack(op)
        tr.add(label, lo, lambda: {"model": model, "procedure": op.procedure.spec}, size=op.num_states)
        d = disagreements(op)
        s, y, n = where
        rows.append([label, lo, hi, math.exp(hi), f"start {op.space.label(s)}, y = {y}, n = {n}",
                     len(d), len({x[0] for x in d})])
        if d:
            big = max(d, key=lambda x: x[4])
            first = min(d, key=lambda x: (x[1], -x[4]))
            for pick in (first, big):
                info = describe(op, pick[0], pick[1])
                tr.add(f"{label}: engine map_trajectory = DP at start {pick[0]}, n = {pick[1]}",
                       1e-9 - abs(info["map_log_prob"] - info["dp_best"]) + 1e-9, size=op.num_states)
                dis_rows.append([label, op.space.label(pick[0]), pick[1], pick[2],
                                 "".join(map(str, info["map_tokens"])), info["map_log_prob"],
                                 "".join(map(str, info["best_greedy_first_tokens"])),
                                 info["best_greedy_first_log_prob"], info["gap_nats"]])
            examples.append((label, model, op.procedure.spec, first))

    specs = ["temperature=1"] if ctx.quick else ["temperature=1", "temperature=0.7", "top_p=0.9"]
    for name in ("coin", "markov2", "dyck"):
        for spec in specs:
            case(f"zoo {name} {spec}", ctx.zoo_op(name, spec), {"kind": "zoo", "name": name})
    for spec in ctx.random_specs():
        case(f"{spec[0]} temperature=1", ctx.random_op(spec[0]), ctx.random_model_spec(spec[0]))
    strat = S.operators(kind="any", spaces_strategy=S.spaces(min_tokens=2, max_tokens=3, max_length=3,
                                                             max_states=60))
    search(strat, lambda op: ratio_slack(op, (2, 3, 5))[0], tracker=tr, label=repr,
           to_json=lambda op: {"operator": op_to_json(op)}, size=lambda op: op.num_states,
           max_examples=ctx.examples(100, 20), seed=ctx.seed, tol=1e-12)
    ctx._memo["p07_examples"] = examples
    return tr.result(
        summary={"greedy-vs-MAP disagreements": f"found on {sum(1 for r in rows if r[5])} of {len(rows)} "
                 "zoo/random cases (the counterexamples of f03_map_starts_greedy)"},
        ratios={"title": "P(y | s) / max P(w | s) over n-strings w starting with y (n in 2, 3, 4, 6, 8)",
                "columns": ["case", "min log ratio", "max log ratio", "max ratio", "where",
                            "(s, n) with MAP first token != greedy", "distinct starts"], "rows": rows},
        disagreements={"title": "examples: the most probable n-string does not start with the greedy token "
                       "(first found, and largest gap)",
                       "columns": ["case", "start", "n", "greedy token", "MAP string", "log P(MAP)",
                                   "best string starting greedy", "its log P", "gap (nats)"], "rows": dis_rows})


def replay(cex: dict) -> Replay:
    op = op_from_json(cex["operator"])
    lo, hi, where = ratio_slack(op, (2, 3, 5))
    return Replay(lo < -1e-12, f"min log ratio {lo}", {"min_log_ratio": lo})

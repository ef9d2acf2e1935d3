"""P3 trajectory decay (every n-string has probability <= p_max^n) and typicality (H_n / n -> h at rate 1/n)."""

from __future__ import annotations

import math

import numpy as np

import semio_jax as sj
from semio_jax.analysis.entropy import conditional_entropies
from semio_jax.testing import strategies as S

from ._lib import Replay, Tracker, least, op_from_json, op_to_json, reference_probs, search

NAME = "p03_trajectory_decay"
SLACK = ("(a) min over starts s and n <= n_max of (n log p_max - log max_w P(w | s)) / n (nats per token), p_max "
         "from the model's logits (numpy oracle of the procedure), max_w P(w | s) from the engine's table; "
         "(b) min over starts and n of B_n(s) - |H_n(s)/n - h| with B_n(s) = (H_max - H_min)/n * sum_{t<n} d_s(t). "
         "The case's slack is the smaller of the two.")
TOL_A = 1e-12  # per token, log-space rounding
TOL_B = 1e-10


def bellman(op: sj.Operator, n: int) -> np.ndarray:
    """V[t, s] = max over t-token strings w of log P(w | s), t = 0..n (exact max-product DP)."""
    with np.errstate(divide="ignore"):
        logq = np.log(op.probs)
    succ = op.successors
    V = np.zeros((n + 1, op.num_states))
    for t in range(1, n + 1):
        V[t] = np.max(logq + V[t - 1][succ], axis=1)
    return V


def decay_slack(op: sj.Operator, n: int = 24) -> tuple[float, dict]:
    """(a) with its two sides computed independently: p_max from the model's next-token laws (the
    procedure applied to the logits by the numpy oracle), max_w log P(w | s) by max-product over the
    engine's table. It fails if the table is more confident than the model allows (e.g. built at another
    temperature), not only if the inequality were false."""
    pmax = float(reference_probs(op).max())
    V = bellman(op, n)
    t = np.arange(n + 1)
    per_token = (t[1:] * math.log(pmax) - V[1:].max(axis=1)) / t[1:]
    slack = float(per_token.min())  # 0 whenever the bound is attained at n = 1 (it always is)
    # asymptotic decay rate of the most likely string: slope of max_s V_t(s) over the last half
    half = n // 2
    rate = float((V[n].max() - V[half].max()) / (n - half))
    return slack, {"p_max": pmax, "log_p_max": math.log(pmax), "map_rate": rate, "vacuous": pmax >= 1.0,
                   "slack_at_n_max": float(per_token[-1])}


def typicality(op: sj.Operator, starts, n: int) -> tuple[float, list]:
    """Slack of |H_n/n - h| <= B_n for each start, plus the 1/n constant n (H_n/n - h)."""
    h = float(sj.entropy_rate(op).nats[0])
    H = conditional_entropies(op)
    spread = float(H.max() - H.min())
    worst = math.inf
    rows = []
    for s in starts:
        pe = sj.path_entropy(op, int(s), n)
        Hn = np.cumsum(pe.per_step)  # H_1..H_n
        d = sj.tv_distance(op, int(s), n)  # d(0..n)
        nn = np.arange(1, n + 1)
        B = spread * np.cumsum(d[:n]) / nn
        err = np.abs(Hn / nn - h)
        worst = least(worst, float((B - err).min()))
        rows.append((op.space.label(int(s)), float(Hn[-1] / n), h, float(n * (Hn[-1] / n - h)), float(n * B[-1])))
    return worst, rows


def sample_check(op: sj.Operator, start: int, n: int, chains: int, seed: int) -> dict:
    """-1/n log P along sampled paths (numpy, from the exact table) vs the exact mean H_n / n."""
    rng = np.random.default_rng(seed)
    probs, succ = op.probs, op.successors
    cdf = np.cumsum(probs, axis=1)
    s = np.full(chains, start)
    logp = np.zeros(chains)
    for _ in range(n):
        u = rng.random(chains)
        y = np.minimum((u[:, None] >= cdf[s]).sum(1), op.n_tokens - 1)
        logp += np.log(probs[s, y])
        s = succ[s, y]
    x = -logp / n
    exact = sj.path_entropy(op, start, n).nats / n
    se = x.std(ddof=1) / math.sqrt(chains)
    return {"mean": float(x.mean()), "exact_mean": float(exact), "se": float(se),
            "z": float((x.mean() - exact) / se) if se > 0 else 0.0}


def _small_starts(op):
    sp = op.space
    return [sp.index([y]) for y in range(sp.n_tokens)] if sp.prefixes else [0]


def validate(ctx):
    tr = Tracker()
    rows_a, rows_b, rows_mc = [], [], []
    n_a = 16 if ctx.quick else 32
    n_b = 32 if ctx.quick else 96

    def case_a(label, op, model):
        slack, f = decay_slack(op, n_a)
        tr.add(label + " (decay)", slack, lambda: {"model": model, "procedure": op.procedure.spec, **f},
               size=op.num_states, tol=TOL_A)
        # the DP's most likely string against the engine's map_trajectory (its own max-product code)
        V = bellman(op, n_a)
        for s in _small_starts(op):
            mp = sj.map_trajectory(op, int(s), n_a)
            tr.add(f"{label}: engine map_trajectory = DP from {op.space.label(int(s))}",
                   1e-9 * n_a - abs(float(mp.log_prob) - V[n_a, s]), size=op.num_states)
        rows_a.append([label, f["p_max"], f["log_p_max"], f["map_rate"], f["slack_at_n_max"], "vacuous (p_max = 1)" if f["vacuous"] else ""])

    def case_b(label, op, model, mc_seed):
        sp = op.space
        starts = [sp.index([y]) for y in range(sp.n_tokens)] if sp.prefixes else []
        starts += [0, sp.num_full - 1]
        slack, rows = typicality(op, starts, n_b)
        tr.add(label + " (typicality)", slack, lambda: {"model": model, "procedure": op.procedure.spec},
               size=op.num_states, tol=TOL_B)
        for r in rows:
            rows_b.append([label, *r])
        # the stationary start: H_n = n h exactly for every n
        pi = sj.stationary(op)[0]
        h = float(sj.entropy_rate(op).nats[0])
        st = sj.path_entropy(op, pi, n_b).nats
        tr.add(label + " (stationary start)", 1e-9 * n_b - abs(st - n_b * h), size=op.num_states)
        mc = sample_check(op, starts[0], 256, 200 if ctx.quick else 400, mc_seed)
        rows_mc.append([label, sp.label(starts[0]), mc["mean"], mc["exact_mean"], h, mc["se"], mc["z"]])
        tr.add(label + " (sampled, |z| <= 5)", 5.0 - abs(mc["z"]), size=op.num_states)

    specs = ["temperature=1"] if ctx.quick else ["temperature=1", "temperature=0.5", "top_k=2", "top_p=0.9"]
    for i, name in enumerate(("coin", "markov2", "dyck")):
        for spec in specs:
            case_a(f"zoo {name} {spec}", ctx.zoo_op(name, spec), {"kind": "zoo", "name": name})
        case_b(f"zoo {name} temperature=1", ctx.zoo_op(name), {"kind": "zoo", "name": name}, ctx.seed + i)
    for j, spec in enumerate(ctx.random_specs()):
        for p in (["temperature=1"] if ctx.quick else ["temperature=1", "top_p=0.8"]):
            case_a(f"{spec[0]} {p}", ctx.random_op(spec[0], p), ctx.random_model_spec(spec[0]))
        case_b(f"{spec[0]} temperature=1", ctx.random_op(spec[0]), ctx.random_model_spec(spec[0]), ctx.seed + 10 + j)

    # hypothesis: any operator (truncation, greedy, -inf logits) for (a); ergodic ones for (b)
    small = S.spaces(min_tokens=2, max_tokens=3, max_length=3, max_states=60)
    search(S.operators(kind="any", spaces_strategy=small), lambda op: decay_slack(op, 12)[0], tracker=tr,
           label=repr, to_json=lambda op: {"operator": op_to_json(op), "part": "a"}, size=lambda op: op.num_states,
           max_examples=ctx.examples(150, 30), seed=ctx.seed, tol=TOL_A)

    def check_b(op):
        return typicality(op, _small_starts(op), 12)[0] + TOL_B

    search(S.operators(kind="ergodic", spaces_strategy=small), check_b, tracker=tr, label=repr,
           to_json=lambda op: {"operator": op_to_json(op), "part": "b"}, size=lambda op: op.num_states,
           max_examples=ctx.examples(80, 20), seed=ctx.seed + 1)
    return tr.result(
        summary={"most likely string rate vs log p_max": "the max-product rate (max mean log q over cycles) is "
                 "strictly below log p_max on every trained model: p_max^n is loose"},
        decay={"title": "(a) decay: log p_max vs the exact decay rate of the most likely string",
               "columns": ["case", "p_max", "log p_max", "rate of max_w log P(w)", f"slack at n = {n_a} (nats/token)", ""], "rows": rows_a},
        typ={"title": f"(b) typicality from prompts: exact H_n/n at n = {n_b}",
             "columns": ["case", "start", "H_n / n", "h", "n (H_n/n - h)", "n B_n (bound on its modulus)"], "rows": rows_b},
        sampled={"title": "(b) sampled paths (n = 256): mean of -1/n log P vs its exact expectation H_n/n",
                 "columns": ["case", "start", "sample mean", "exact H_n/n", "h", "std err", "z"], "rows": rows_mc})


def replay(cex: dict) -> Replay:
    op = op_from_json(cex["operator"])
    if cex.get("part") == "b":
        s = typicality(op, _small_starts(op), 12)[0] + TOL_B
    else:
        s = decay_slack(op, 12)[0]
    return Replay(s < 0, f"slack {s}", {"slack": s})

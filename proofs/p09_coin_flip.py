"""P9 the semiotic coin flip: exact P(heads | run) of the zoo coin model and loss-gap bounds on its distance from i.i.d."""

from __future__ import annotations

import math

import numpy as np

import semio_jax as sj

from ._lib import Replay, Tracker, full_powers, min_overlap

NAME = "p09_coin_flip"
SLACK = ("min over the three bounds of (bound - exact value), in probability: max_w |q_w(heads) - 1/2| <= "
         "sqrt(N^L e / 2); mean_w |q_w(heads) - 1/2| <= sqrt(e / 2); ||pi - uniform||_TV <= "
         "sqrt(k L e / 2) / (1 - delta(P^L)^k) for every k >= 1 (slack against the smallest over k); e = the "
         "model's excess loss (nats)")


def excess_uniform(q_full: np.ndarray) -> float:
    """E_{w uniform}[KL(uniform || q_w)]: the last-position excess loss on an i.i.d. fair coin source."""
    n = q_full.shape[1]
    u = 1.0 / n
    return float(np.mean(np.sum(u * (math.log(u) - np.log(q_full)), axis=1)))


def stationary_slack(tv: float, e: float, L: int, delta: float) -> tuple[float, float, int, int]:
    """Statement 3 for every k >= 1: min_k [sqrt(kLe/2)/(1 - delta^k)] - tv, with the minimiser.

    For k > K := ceil(2 tv^2 / (L e)) the bound exceeds tv without computing it: 1/(1 - delta^k) >= 1 and
    sqrt(kLe/2) > sqrt(KLe/2) >= tv. So the k <= max(K, 4) computed here decide the statement for all k.
    Returns (slack, the smallest bound, its k, the largest k computed).
    """
    if not (e > 0 and 0 <= delta < 1):
        return math.nan, math.nan, 0, 0  # outside the statement's assumptions: a NaN slack is a violation
    k_max = max(4, math.ceil(2 * tv * tv / (L * e)))
    bounds = [(math.sqrt(k * L * e / 2) / (1 - delta**k), k) for k in range(1, k_max + 1)]
    b, k = min(bounds)
    return b - tv, b, k, k_max


def run_table(op: sj.Operator, pi: np.ndarray) -> list:
    """P(heads | the window ends with a run of exactly k tokens b), under pi and over contexts (min, max)."""
    sp = op.space
    L, nf = sp.length, sp.num_full
    tokens = np.array([sp.tokens(i) for i in range(nf)])  # [nf, L]
    q1 = op.probs[:nf, 1]
    rows = []
    for b in (1, 0):
        for k in range(1, L + 1):
            tail = (tokens[:, L - k:] == b).all(1)
            exact = tail & ((tokens[:, L - k - 1] != b) if k < L else True)
            w = pi[:nf][exact]
            p = float((w * q1[exact]).sum() / w.sum())
            pre = None
            if k < L:
                pre = float(op.probs[sp.index([b] * k), 1])
            rows.append(["heads" if b == 1 else "tails", k, p, float(q1[exact].min()), float(q1[exact].max()), pre])
    return rows


def validate(ctx):
    tr = Tracker()
    op = ctx.zoo_op("coin")
    card = ctx.zoo_card("coin")
    sp = op.space
    nf, L, N = sp.num_full, sp.length, sp.n_tokens
    q = op.probs[:nf]
    e = excess_uniform(q)
    e_card = float(card["excess_last_position_loss"])
    dev = np.abs(q[:, 1] - 0.5)
    b_max = math.sqrt(N**L * e / 2)
    b_mean = math.sqrt(e / 2)
    tr.add("max_w |q_w(heads) - 1/2| <= sqrt(N^L e/2)", b_max - dev.max())
    tr.add("mean_w |q_w(heads) - 1/2| <= sqrt(e/2)", b_mean - dev.mean())
    pi = sj.stationary(op)[0]
    tv = 0.5 * np.abs(pi[:nf] - 1.0 / nf).sum()
    PL = full_powers(op, L)
    delta = 1.0 - min_overlap(PL)
    slack3, b_pi, k_best, k_max = stationary_slack(tv, e, L, delta)
    tr.add(f"||pi - uniform||_TV <= sqrt(kLe/2)/(1 - delta^k) for every k >= 1 (k <= {k_max} computed, "
           "larger k by monotonicity)", slack3)
    heads = float(pi[:nf] @ q[:, 1])  # stationary P(next token = heads)
    h = float(sj.entropy_rate(op).nats[0])
    if abs(e - e_card) > 1e-8:  # a pass/fail consistency check, not a slack
        tr.add("card excess vs exact recomputation (|diff| <= 1e-8)", -1.0, {"e": e, "e_card": e_card})
    rows = run_table(op, pi)
    return tr.result(
        summary={
            "excess loss e (recomputed from the operator, nats)": e,
            "excess loss on card.json (nats)": e_card,
            "max_w |q_w(heads) - 1/2| (exact)": float(dev.max()),
            "bound sqrt(N^L e / 2)": b_max,
            "mean_w |q_w(heads) - 1/2| (exact)": float(dev.mean()),
            "bound sqrt(e / 2)": b_mean,
            "stationary P(heads)": heads,
            "||pi - uniform||_TV on T^L (exact)": float(tv),
            f"bound sqrt(kLe/2)/(1 - delta^k), k = {k_best}": b_pi,
            "delta(P^L)": delta,
            "KL rate of the model from the fair coin, log 2 - h (nats/token)": math.log(2) - h,
            "entropy rate h (nats/token)": h,
        },
        runs={"title": "P(heads | the context ends with a run of exactly k equal tokens): stationary-weighted, "
                       "min and max over contexts, and after the prompt b^k (k < L)",
              "columns": ["run of", "k", "P(heads | run) under pi", "min over contexts", "max over contexts",
                          "after prompt b^k"], "rows": rows})


def replay(cex: dict) -> Replay:  # never violated (recorded as holds); kept for the runner's interface
    return Replay(False, "p09 has no counterexample")

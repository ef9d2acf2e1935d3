"""P4 greedy dynamics: eventually periodic orbits with pre-period + period <= #states; attractors = cycles."""

from __future__ import annotations

import numpy as np

import semio_jax as sj
from semio_jax.testing import strategies as S

from ._lib import Replay, Tracker, op_from_json, op_to_json, search

NAME = "p04_greedy_cycles"
SLACK = ("N^L + (L - k) - max over starts of length k of (pre-period + period), in states (the sharper "
         "bound; the statement's bound is |S|); -1 if the engine's attractors, periods, tails or cycle "
         "assignment differ from an orbit walk")


def walk(f: np.ndarray):
    """Orbit walk from every state: (pre-period mu[s], period lam[s], cycles as frozensets)."""
    S_ = len(f)
    mu = np.empty(S_, dtype=np.int64)
    lam = np.empty(S_, dtype=np.int64)
    cycles = set()
    for s in range(S_):
        seen = {}
        x, t = s, 0
        while x not in seen:
            seen[x] = t
            x, t = int(f[x]), t + 1
        mu[s] = seen[x]
        lam[s] = t - seen[x]
        if mu[s] == 0:
            pass
        # the cycle through x
        c, y = [x], int(f[x])
        while y != x:
            c.append(y)
            y = int(f[y])
        cycles.add(frozenset(c))
    return mu, lam, cycles


def check(op: sj.Operator) -> tuple[float, dict]:
    sp = op.space
    if not op.is_deterministic:
        raise ValueError("needs a deterministic operator")
    f = op.successors[np.arange(op.num_states), np.argmax(op.probs, axis=1)]
    mu, lam, cycles = walk(f)
    lengths = np.array([sp.length_of(s) for s in range(op.num_states)])
    sharp = sp.num_full + (sp.length - lengths)
    facts = {"max_pre_period_plus_period": int((mu + lam).max()), "states": op.num_states,
             "max_pre_period": int(mu.max()), "cycle_lengths": sorted(len(c) for c in cycles)}
    ok = bool(((mu + lam) <= op.num_states).all())
    # the engine's view: closed classes, periods, functional-graph structure
    A = [frozenset(a.tolist()) for a in sj.attractors(op)]
    ok &= set(A) == cycles and len(A) == len(cycles)
    per = sj.periods(op)
    ok &= sorted(per) == sorted(len(c) for c in cycles)
    g = sj.greedy_dynamics(op)
    ok &= bool(np.array_equal(g.map, f)) and bool(np.array_equal(g.tail, mu))
    ok &= all(frozenset(g.cycles[g.cycle_of[s]].tolist()) == _cycle_of(f, s, mu[s]) for s in range(op.num_states))
    facts["engine_agrees"] = bool(ok)
    slack = float((sharp - (mu + lam)).min()) if ok else -1.0
    return slack, facts


def _cycle_of(f, s, m):
    x = int(s)
    for _ in range(int(m)):
        x = int(f[x])
    c, y = {x}, int(f[x])
    while y != x:
        c.add(y)
        y = int(f[y])
    return frozenset(c)


def validate(ctx):
    tr = Tracker()
    rows = []

    def case(label, op, model):
        slack, f = check(op)
        tr.add(label, slack, lambda: {"model": model, "procedure": op.procedure.spec, "facts": f}, size=op.num_states)
        rows.append([label, op.num_states, op.space.num_full, f["max_pre_period"], f["max_pre_period_plus_period"],
                     " ".join(map(str, f["cycle_lengths"])), "yes" if f["engine_agrees"] else "NO"])

    for name in ("coin", "markov2", "dyck"):
        for spec in (["greedy"] if ctx.quick else ["greedy", "top_k=1", "temperature=0.5,top_k=1"]):
            case(f"zoo {name} {spec}", ctx.zoo_op(name, spec), {"kind": "zoo", "name": name})
    for spec in ctx.random_specs():
        case(f"{spec[0]} greedy", ctx.random_op(spec[0], "greedy"), ctx.random_model_spec(spec[0]))
    strat = S.operators(kind="deterministic", spaces_strategy=S.spaces(min_tokens=1, max_tokens=3, max_length=4,
                                                                       max_states=120))
    search(strat, lambda op: check(op)[0], tracker=tr, label=repr,
           to_json=lambda op: {"operator": op_to_json(op), "facts": check(op)[1]}, size=lambda op: op.num_states,
           max_examples=ctx.examples(200, 40), seed=ctx.seed)
    return tr.result(table={"title": "greedy maps of the zoo and random transformers",
                            "columns": ["case", "states", "N^L", "max pre-period", "max pre-period + period",
                                        "cycle lengths", "engine = orbit walk"], "rows": rows})


def replay(cex: dict) -> Replay:
    op = op_from_json(cex["operator"])
    slack, facts = check(op)
    return Replay(slack < 0, f"slack {slack}", facts)

"""F3 (expected false): the most probable n-token continuation always starts with the greedy token."""

from __future__ import annotations

import numpy as np

import semio_jax as sj
from semio_jax.testing import strategies as S

from ._lib import Replay, Tracker, op_from_json, op_from_model_spec, op_to_json, search
from .p07_next_token_vs_continuation import TIE, describe, disagreements

NAME = "f03_map_starts_greedy"
SLACK = ("minus the largest gap (nats) between the most probable n-string and the most probable n-string that "
         "starts with the greedy token, over starts and n in 2, 3, 4, 6, 8 (>= 0 if the claim held)")


def slack(op: sj.Operator, horizons=(2, 3, 4, 6, 8)) -> tuple[float, tuple | None]:
    d = disagreements(op, horizons)
    if not d:
        return 0.0, None
    # smallest horizon first, then the largest gap: the simplest witness
    w = min(d, key=lambda x: (x[1], -x[4]))
    return -max(x[4] for x in d), w


def validate(ctx):
    tr = Tracker(tol=0.0)
    zoo_witness = None
    for name in ("markov2", "dyck", "coin"):
        op = ctx.zoo_op(name)
        s, w = slack(op)
        tr.add(f"zoo {name} temperature=1", s,
               lambda: {"model": {"kind": "zoo", "name": name}, "procedure": "temperature=1",
                        "witness": describe(op, w[0], w[1])}, size=op.num_states)
        if w is not None and zoo_witness is None:
            zoo_witness = {"model": {"kind": "zoo", "name": name}, "procedure": "temperature=1",
                           "witness": describe(op, w[0], w[1])}
    for spec in ctx.random_specs():
        op = ctx.random_op(spec[0])
        s, w = slack(op)
        tr.add(f"{spec[0]} temperature=1", s, None, size=op.num_states)
    # hypothesis: shrink to a small operator table with a disagreement at a short horizon
    strat = S.operators(kind="ergodic", spaces_strategy=S.spaces(min_tokens=2, max_tokens=3, max_length=3,
                                                                 max_states=40))

    def to_json(op):
        _, w = slack(op, (2, 3))
        return {"operator": op_to_json(op), "witness": describe(op, w[0], w[1])}

    search(strat, lambda op: slack(op, (2, 3))[0], tracker=tr, label=repr, to_json=to_json,
           size=lambda op: op.num_states, max_examples=ctx.examples(200, 60), seed=ctx.seed)
    if tr.violation is not None and zoo_witness is not None:
        tr.violation["zoo_example"] = zoo_witness
    return tr.result()


def replay(cex: dict) -> Replay:
    w = cex["witness"]
    op = op_from_json(cex["operator"])
    info = describe(op, w["start"], w["n"])
    msg = (f"from start {info['start_tokens']} (state {info['start']}), n = {info['n']}: q(.|start) = "
           f"{np.round(info['q_start'], 6).tolist()}, greedy token {info['greedy_token']}; the MAP string "
           f"{info['map_tokens']} has log P = {info['map_log_prob']:.6f}, the best string starting with the greedy "
           f"token {info['best_greedy_first_tokens']} has log P = {info['best_greedy_first_log_prob']:.6f}")
    out = Replay(info["gap_nats"] > TIE * info["n"], msg, {"gap_nats": info["gap_nats"]})
    if "zoo_example" in cex:
        z = cex["zoo_example"]
        zop = op_from_model_spec(z["model"], z["procedure"])
        zi = describe(zop, z["witness"]["start"], z["witness"]["n"])
        out.numbers["zoo example"] = (f"{z['model']['name']}: start {zi['start_tokens']}, n = {zi['n']}, greedy "
                                      f"{zi['greedy_token']}, MAP {zi['map_tokens']} (log P {zi['map_log_prob']:.4f}) vs "
                                      f"{zi['best_greedy_first_tokens']} (log P {zi['best_greedy_first_log_prob']:.4f})")
        out.violated = out.violated and zi["gap_nats"] > TIE * zi["n"]
    return out

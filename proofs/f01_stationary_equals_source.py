"""F1 (expected false): a model trained on a source has the source's stationary distribution."""

from __future__ import annotations

import numpy as np

import semio_jax as sj
from semio_models.checkpoint import load_card
from semio_models.sources import source_from_spec

from ._lib import Replay, Tracker, op_from_model_spec
from .p11_simulation_fidelity import excess_loss, source_tables, stationary_bound

NAME = "f01_stationary_equals_source"
SLACK = ("certified error of the engine's pi (+1e-12) minus ||pi_model - w0||_TV on T^L (negative = the stationary "
         "laws differ by more than the numerical error)")


def compare(op: sj.Operator, source) -> dict:
    sp = op.space
    N, L, nf = sp.n_tokens, sp.length, sp.num_full
    res = sj.stationary_result(op)
    pi = res.distributions[0][:nf]
    err = res.error_bounds[0] if res.error_bounds[0] is not None else 1e-9
    w0, p = source_tables(source, N, L)
    diff = pi - w0
    i = int(np.argmax(np.abs(diff)))
    tok_model = pi.reshape(-1, N).sum(0)  # law of the newest token of the window
    tok_source = w0.reshape(-1, N).sum(0)
    return {"tv": 0.5 * float(np.abs(diff).sum()), "pi_error_bound": float(err),
            "window": sp.tokens(i).tolist(), "pi_model": float(pi[i]), "pi_source": float(w0[i]),
            "token_marginal_model": tok_model.tolist(), "token_marginal_source": tok_source.tolist(),
            "token_marginal_tv": 0.5 * float(np.abs(tok_model - tok_source).sum()),
            "excess": excess_loss(w0, p, op.probs[:nf])}


def validate(ctx):
    tr = Tracker()
    rows = []
    witnesses = {}
    corrected_ok = True
    for name in ("coin", "markov2", "dyck"):
        op = ctx.zoo_op(name)
        source = source_from_spec(ctx.zoo_card(name)["source"])
        c = compare(op, source)
        witnesses[name] = {"model": {"kind": "zoo", "name": name}, "procedure": "temperature=1", "numbers": c}
        tr.add(f"zoo {name} temperature=1", c["pi_error_bound"] + 1e-12 - c["tv"],
               lambda: dict(witnesses[name]), size=op.space.num_full)
        bound = "n/a (source not Markov within L)"
        if name != "dyck":  # the corrected statement needs a source of Markov order <= L (p11)
            delta = ctx.delta_L(op)
            b, _ = stationary_bound(c["excess"], op.space.length, delta)
            bound = b
            if c["tv"] > b:
                corrected_ok = False
        rows.append([f"zoo {name}", c["excess"], c["tv"], "".join(map(str, c["window"])), c["pi_model"],
                     c["pi_source"], c["token_marginal_tv"], bound])
    if tr.violation is not None:
        tr.violation["other_witnesses"] = {k: v for k, v in witnesses.items()
                                           if v["model"]["name"] not in tr.violation["case"]}
    return tr.result(
        corrected_holds=corrected_ok,
        table={"title": "stationary law of the model vs the source's window law (temperature 1)",
               "columns": ["model", "excess loss e", "TV(pi, w0)", "window of largest |diff|", "pi_model",
                           "pi_source", "TV of token marginals", "corrected bound (p11)"], "rows": rows})


def replay(cex: dict) -> Replay:
    def one(w):
        name = w["model"]["name"]
        op = op_from_model_spec(w["model"], w["procedure"])
        return compare(op, source_from_spec(load_card(name)["source"]))

    c = one(cex)
    name = cex["model"]["name"]
    msg = (f"zoo {name}: ||pi_model - source window law||_TV = {c['tv']:.6g} (certified error of pi "
           f"{c['pi_error_bound']:.2g}); window {c['window']}: pi_model = {c['pi_model']:.6g}, source = "
           f"{c['pi_source']:.6g}; token marginals {np.round(c['token_marginal_model'], 5).tolist()} vs "
           f"{np.round(c['token_marginal_source'], 5).tolist()}")
    out = Replay(c["tv"] > c["pi_error_bound"] + 1e-12, msg, {"tv": c["tv"]})
    for k, w in cex.get("other_witnesses", {}).items():
        o = one(w)
        out.numbers[f"zoo {k}"] = f"TV = {o['tv']:.6g}, worst window {o['window']}: {o['pi_model']:.6g} vs {o['pi_source']:.6g}"
        out.violated = out.violated and o["tv"] > o["pi_error_bound"] + 1e-12
    return out

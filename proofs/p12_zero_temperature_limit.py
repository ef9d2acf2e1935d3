"""P12 zero-temperature limit: t log pi_t(C) -> -potential(C) and t log E[escape from C's basin] -> R(C)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
import scipy.sparse as sp
from scipy.sparse import csgraph
from scipy.special import logsumexp

import semio_jax as sj
from semio_jax.errors import ConvergenceError
from semio_jax.core.procedure import compose, temperature, top_k
from semio_jax.analysis.zero_temperature import log_escape_time
from semio_jax.linalg.gth import gth
from semio_jax.testing import strategies as S
from semio_jax.testing.references import probabilities_reference

from ._lib import Replay, Tracker, op_from_json, op_to_json, search

NAME = "p12_zero_temperature_limit"
SLACK = ("DELTA - max over classes C of |(2 y(t) - y(2t)) - limit| at the smallest measured pair (t, 2t), for "
         "y = t log pi_t(C) (limit -potential(C)) and y = t log E_C[escape] (limit R(C)); logit units, DELTA = 0.1 on models, 0.01 on the grid models (gaps >= 0.5 >> t)")
TEMPS = (0.2, 0.1, 0.08, 0.05, 0.04, 0.025, 0.02)
TEMPS_QUICK = (0.08, 0.04)
TEMPS_GRID = (0.04, 0.02)
DELTA = 0.1
DELTA_GRID = 0.01  # grid logits: every non-zero resistance >= 0.5, so t = 0.02, 0.04 are deep in the limit
MAX_EXPONENT = 300.0  # the plain-GTH cross-check only where no transition (or product of two) leaves float64


def escape_time_gth(op: sj.Operator, start: int, target: np.ndarray) -> float:
    """E_start[steps to enter ``target``] (full states) by GTH on a regenerative chain, without subtractions.

    The states U reachable from ``start`` before the target, plus one state T for the whole target that
    jumps back to ``start``: one cycle T -> start -> ... -> T lasts 1 + tau steps, so pi(T) = 1 / (1 + E[tau]),
    and GTH computes pi(T) to high relative accuracy however small it is. +inf if some state of U cannot
    reach the target.
    """
    nf = op.space.num_full
    tgt = np.zeros(nf, dtype=bool)
    tgt[target] = True
    adj = op.csr[:nf][:, :nf].tocsr()
    inner = (sp.diags((~tgt).astype(np.float64)) @ adj).tocsr()  # no moves out of the target
    inner.eliminate_zeros()
    reach = np.zeros(nf, dtype=bool)
    reach[csgraph.breadth_first_order(inner, start, directed=True, return_predecessors=False)] = True
    u = np.flatnonzero(reach & ~tgt)
    # every state of U must reach the target: reverse BFS from the target inside U
    rev = inner.T.tocsr()
    hits = np.zeros(nf, dtype=bool)
    for s in np.flatnonzero(tgt):
        if not hits[s]:
            hits[csgraph.breadth_first_order(rev, int(s), directed=True, return_predecessors=False)] = True
    if not hits[u].all():
        return math.inf
    n = u.size
    block = np.zeros((n + 1, n + 1))
    sub = adj[u].tocsr()
    pos = np.full(nf, -1, dtype=np.int64)
    pos[u] = np.arange(n)
    coo = sub.tocoo()
    inside = pos[coo.col] >= 0
    np.add.at(block, (coo.row[inside], pos[coo.col[inside]]), coo.data[inside])
    np.add.at(block[:, n], coo.row[~inside & tgt[coo.col]], coo.data[~inside & tgt[coo.col]])
    block[n, pos[start]] = 1.0
    pi = gth(block)
    return 1.0 / pi[n] - 1.0


def measure(op1: sj.Operator, temps, build=None) -> dict:
    """The limit from op1 and, per temperature, y = t log pi_t(C) and t log E_C[escape] (None where not resolved)."""
    lim = sj.zero_temperature_limit(op1)
    build = build or (lambda t: op1.with_procedure(compose(temperature(t), top_k(op1.procedure.top_k))
                                                   if op1.procedure.top_k else temperature(t)))
    nf = op1.space.num_full
    z = np.asarray(op1.logits[:nf], dtype=np.float64)
    fin = np.where(np.isfinite(z), z, np.nan)
    spread = float(np.nanmax(np.nanmax(fin, 1) - np.nanmin(fin, 1)))
    n_att = len({int(a) for a in lim.attractor if a >= 0})
    points, notes, cross = [], [], []
    for t in temps:
        op = build(t)
        res = sj.stationary_result(op)  # log-domain GTH where transitions leave float64's range
        if len(res) != n_att:
            notes.append(f"t={t}: {len(res)} closed classes in the table, {n_att} from the logits; skipped")
            continue
        plain = spread / t <= MAX_EXPONENT  # the plain-GTH cross-check stays inside float64's range
        y_pi, y_esc, source = [], [], []
        for i, c in enumerate(lim.classes):
            a = int(lim.attractor[i])
            log_mass = -math.inf
            if a >= 0:
                k = next(j for j, sup in enumerate(res.supports) if np.isin(c[0], sup))
                log_mass = float(logsumexp(res.log_values[k][np.isin(res.supports[k], c)]))
            y_pi.append(t * log_mass if math.isfinite(log_mass) else None)
            if not math.isfinite(float(lim.escape[i])):
                y_esc.append(None)
                source.append(None)
                continue
            start, target = int(c[0]), lim.escape_targets(i)
            log_e = log_escape_time(op, start, lim.basin != i)  # the engine's log-domain GTH
            if not math.isfinite(log_e):
                notes.append(f"t={t}, class {i}: log-domain escape time not available ({log_e}); skipped")
                y_esc.append(None)
                source.append(None)
                continue
            checks = {"t": t, "class": i, "log_e": log_e}
            if plain:
                try:
                    checks["plain_gth"] = math.log(escape_time_gth(op, start, target))
                except ConvergenceError as err:
                    notes.append(f"t={t}, class {i}: plain GTH escape failed ({str(err)[:60]})")
            try:
                hr = sj.analysis.hitting_times_result(op, target)
                if hr.error_bound is not None and hr.error_bound <= 1e-6 * math.exp(min(log_e, 700.0)):
                    checks["hitting_times"] = math.log(float(hr.times[start]))
            except (RuntimeError, ConvergenceError) as err:  # splu: "Factor is exactly singular" (see notes)
                notes.append(f"t={t}, class {i}: hitting_times failed ({type(err).__name__}: {str(err)[:60]})")
            checks["agree"] = all(abs(checks[k] - log_e) <= 1e-6 for k in ("plain_gth", "hitting_times")
                                  if k in checks)
            cross.append(checks)
            source.append("log-domain GTH")
            y_esc.append(t * log_e)
        points.append({"t": t, "y_pi": y_pi, "y_escape": y_esc, "escape_source": source})
    return {"lim": lim, "points": points, "notes": notes, "cross": cross}


def slack_of(m: dict, delta: float = DELTA) -> tuple[float, list]:
    """delta - the worst extrapolated error; per class and quantity at its smallest measured pair (t, 2t)."""
    lim, pts = m["lim"], {p["t"]: p for p in m["points"]}
    errs = []
    for i in range(lim.n_classes):
        for key, limit in (("y_pi", -lim.potential[i]), ("y_escape", lim.escape[i])):
            pairs = [(t, u) for t in sorted(pts) for u in pts if math.isclose(2 * t, u)
                     and pts[t][key][i] is not None and pts[u][key][i] is not None]
            if not pairs:
                continue
            t, u = pairs[0]
            a, b = pts[t][key][i], pts[u][key][i]
            errs.append({"class": i, "what": "pi" if key == "y_pi" else "escape", "t": t, "limit": float(limit),
                         "y(t)": a, "y(2t)": b, "extrapolated": 2 * a - b, "error": abs(2 * a - b - limit),
                         "raw_error": abs(a - limit)})
    if not errs:
        return math.inf, []
    return delta - max(e["error"] for e in errs), errs


@st.composite
def grid_operators(draw):
    """Logits on the grid {0, 0.5, ..., 4} (ties everywhere) on small spaces, temperature(1) [+ top_k >= 2]."""
    space = draw(S.spaces(min_tokens=2, max_tokens=3, max_length=3, max_states=40))
    table = np.array(draw(st.lists(st.integers(0, 8), min_size=space.num_states * space.n_tokens,
                                   max_size=space.num_states * space.n_tokens)), dtype=np.float64)
    table = table.reshape(space.num_states, space.n_tokens) / 2.0
    k = draw(st.one_of(st.none(), st.integers(2, space.n_tokens)))
    proc = compose(temperature(1.0), top_k(k)) if k else temperature(1.0)
    return sj.Operator(space, probabilities_reference(proc, table), proc, logits=table)


def _build_reference(op1):
    k = op1.procedure.top_k

    def build(t):
        proc = compose(temperature(t), top_k(k)) if k else temperature(t)
        return sj.Operator(op1.space, probabilities_reference(proc, np.asarray(op1.logits)), proc, logits=op1.logits)

    return build


def check_grid(op1) -> float:
    return slack_of(measure(op1, TEMPS_GRID, build=_build_reference(op1)), DELTA_GRID)[0]


def validate(ctx):
    tr = Tracker()
    rows, curve, notes_all, cross = [], [], [], []
    temps = TEMPS_QUICK if ctx.quick else TEMPS

    def case(label, op1, model):
        m = measure(op1, temps)
        slack, errs = slack_of(m)
        lim = m["lim"]
        notes_all.extend(f"{label}: {n}" for n in m["notes"])
        cross.extend({"case": label, **c} for c in m["cross"])
        if not errs:
            tr.notes.append(f"{label}: no (t, 2t) pair resolved")
            return
        tr.add(label, slack, lambda: {"model": model, "errors": errs}, size=op1.num_states)
        for e in errs:
            rows.append([label, e["class"], lim.cycles[e["class"]].size, e["what"], e["limit"], e["t"], e["y(t)"],
                         e["y(2t)"], e["extrapolated"], e["error"]])
        for p in m["points"]:
            for i in range(lim.n_classes):
                curve.append([label, i, p["t"], -lim.potential[i], p["y_pi"][i], lim.escape[i], p["y_escape"][i]])

    for name in ("coin", "dyck") if ctx.quick else ("coin", "markov2", "dyck"):
        case(f"zoo {name}", ctx.zoo_op(name), {"kind": "zoo", "name": name})
    for spec in ctx.random_specs():
        case(spec[0], ctx.random_op(spec[0]), ctx.random_model_spec(spec[0]))
    search(grid_operators(), check_grid, tracker=tr, label=repr, to_json=lambda op: {"operator": op_to_json(op)},
           size=lambda op: op.num_states, max_examples=ctx.examples(60, 8), seed=ctx.seed)
    disagree = [c for c in cross if not c["agree"]]
    for c in disagree:  # the escape times are exact values: three solvers must agree to 1e-6 in log
        tr.add(f"{c['case']}: escape-time solvers disagree at t={c['t']}, class {c['class']}", -1.0, c)
    tr.notes.extend(notes_all)
    return tr.result(
        summary={"reading": "t log pi_t(C) and t log E[escape] approach -potential(C) and R(C) linearly in t (the "
                 "prefactor), so the two-temperature extrapolation 2 y(t) - y(2t) lands on the limit",
                 "escape_points": len(cross),
                 "cross_checked_by_plain_gth": sum("plain_gth" in c for c in cross),
                 "cross_checked_by_hitting_times": sum("hitting_times" in c for c in cross),
                 "disagreements": len(disagree)},
        table={"title": "extrapolated t -> 0 values against the limit (logit units)",
               "columns": ["case", "class", "size", "quantity", "limit", "t", "y(t)", "y(2t)", "2y(t)-y(2t)",
                           "error"], "rows": rows},
        curve={"title": "t log pi_t(C) and t log E[escape] against t",
               "columns": ["case", "class", "t", "-potential", "t log pi_t(C)", "R", "t log E[escape]"],
               "rows": curve})


def replay(cex: dict) -> Replay:
    op = op_from_json(cex["operator"])
    slack = check_grid(op)
    return Replay(slack < 0, f"slack {slack}", {"slack": slack})

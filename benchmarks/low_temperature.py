"""A zoo model from temperature 1 down to 0.01: attractors, stationary law, escape times, and the t -> 0 limit.

For each temperature t the exact operator is built (exact support from the logits: every
window stays possible, however small its probability), its attractors and stationary law are
computed (GTH, in the log domain once transitions fall below the float64 range) with their
certified bounds, and for each cycle of the greedy map (the t -> 0 dynamics when maxima are
unique) the exact expected time to leave its greedy basin is solved. Where
``semio_jax.zero_temperature_limit`` is available its escape resistances R give the predicted
escape time exp(R / t) beside the exact one, and its stochastic potentials the predicted
concentration of pi_t.

    python benchmarks/low_temperature.py [--model dyck] [--temperatures 1,0.5,0.2,0.1,0.05,0.02,0.01]

Prints a table and writes it, with the command, to benchmarks/results/low_temperature_<model>.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import semio_jax as sj
from semio_jax._util.io import atomic_write_text
from semio_models.checkpoint import load

RESULTS = Path(__file__).resolve().parent / "results"


def cycle_text(space, cycle) -> str:
    """A greedy cycle as the repeating token string (each window's newest token, in cycle order)."""
    return "".join(str(int(space.tokens(int(s))[-1])) for s in cycle)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dyck")
    ap.add_argument("--temperatures", default="1,0.5,0.2,0.1,0.05,0.02,0.01")
    args = ap.parse_args(argv)
    model = load(args.model)
    card = model.card
    space = sj.StateSpace(card["config"]["n_tokens"], card["config"]["context_length"])
    temps = [float(x) for x in args.temperatures.split(",")]
    greedy = sj.greedy_dynamics(sj.build_operator(model, space, "greedy"))
    cycles = [np.asarray(c) for c in greedy.cycles]  # the t -> 0 dynamics when maxima are unique
    lim = None
    rows = []
    for t in temps:
        t0 = time.perf_counter()
        op = sj.build_operator(model, space, f"temperature={t}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sj.UnrepresentableWarning)
            st = sj.stationary_result(op)
        atts = sj.attractors(op)
        if lim is None:
            lim = sj.zero_temperature_limit(op)  # does not depend on t: the argmax chain and the resistances
        mass = []
        for c in cycles:  # pi_t of each greedy cycle, in log form (it may be far below the float64 range)
            logs = []
            for i in range(len(st)):
                pos = np.searchsorted(st.supports[i], c)
                ok = (pos < st.supports[i].size) & (st.supports[i][np.minimum(pos, st.supports[i].size - 1)] == c)
                if ok.any():
                    logs.append(np.logaddexp.reduce(st.log_values[i][pos[ok]]))
            mass.append(float(np.logaddexp.reduce(logs)) if logs else -np.inf)
        # exact expected escape times from each P0 class's basin, by log-domain GTH (Kac's formula):
        # accurate where the escape takes e^300 steps and more
        escapes = list(np.exp(lim.log_escape_times(op))) if lim is not None else []
        rows.append((t, len(atts), [a.size for a in atts][:4], st.methods[0], st.error_bounds[0],
                     st.relative_bounds[0], mass, escapes, time.perf_counter() - t0))
    header = ["t", "attractors", "sizes", "method", "L1 bound", "rel. bound"]
    header += [f"log10 pi(C{k})" for k in range(len(cycles))]
    header += [f"E[escape {k}] exact / exp(R/t)" for k in range(lim.n_classes)]
    header += ["s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t, n, sizes, meth, b, rb, mass, esc, secs in rows:
        cells = [f"{t:g}", str(n), str(sizes), meth, "-" if b is None else f"{b:.1e}", "-" if rb is None else f"{rb:.1e}"]
        cells += [f"{m / math.log(10):.2f}" for m in mass]
        pred = lim.predicted_escape_times(t)
        cells += [f"{e:.4g} / {p:.4g}" if np.isfinite(e) else "inf" for e, p in zip(esc, pred)]
        cells.append(f"{secs:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    out = [f"# Low temperature: {args.model}", "", "Command: `python " + " ".join(["benchmarks/low_temperature.py", *sys.argv[1:]]) + "`", "",
           "Greedy cycles: " + ", ".join(f"C{k} = {cycle_text(space, c)} (period {c.size})" for k, c in enumerate(cycles)), ""]
    out += lines
    out += ["", "Zero-temperature limit (`sj.zero_temperature_limit`, stochastic stability): "
            + ", ".join(f"class {k} = {cycle_text(space, lim.cycles[k])}: potential {p:.3f}, escape resistance "
                        f"R = {r:.3f}" for k, (p, r) in enumerate(zip(lim.potential, lim.escape))),
            "Prediction: as t -> 0, t log pi_t(class) -> -potential and t log E[escape] -> R."]
    text = "\n".join(out) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / f"low_temperature_{args.model}.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The toolkit's "zero-temperature limit" section: stable cycles, potentials, escape resistances and times.

For an operator built with ``temperature(t)`` (optionally ``top_k``) it reports, per recurrent class
of the t -> 0 chain P0 (see :mod:`semio_jax.analysis.zero_temperature`):

* the class decoded as a token string: for a cycle of P0 (one greedy move per state), the window
  of its smallest state and the tokens the cycle repeats, ``0110 -> (01)*``; for a class with
  ties, its windows;
* its stochastic potential (0: stochastically stable) and its escape resistance R;
* the leading-order escape time exp(R / t) at the operator's temperature beside the exact expected
  number of steps to leave the class's P0 basin from its smallest state, by the hitting-time solver
  (with its certificate; the two differ by the prefactor, a constant factor as t -> 0).

Procedures without a temperature limit (greedy, top-p, min-p) and operators without logits get a
one-line note instead of the section.
"""

from __future__ import annotations

import numpy as np

from ..analysis import hitting_times_result, zero_temperature_limit
from ..errors import SemioError

__all__ = ["zero_temperature_section", "MAX_CLASSES_SHOWN"]

#: classes listed (the stable ones first, then by increasing potential); all are in the summary's counts
MAX_CLASSES_SHOWN = 12


def _token(space, s: int) -> str:
    return str(int(space.tokens(int(s))[-1]))


def decode_class(space, cycle: np.ndarray, is_cycle: bool) -> str:
    """``window -> (repeated tokens)*`` for a P0 cycle listed in orbit order; ``{w1, w2, ...}`` otherwise."""
    sep = "" if space.n_tokens <= 10 else ","
    if is_cycle:
        emitted = [_token(space, s) for s in np.roll(cycle, -1)]  # tokens written while going round once
        return f"{space.label(int(cycle[0]))} -> ({sep.join(emitted)})*"
    shown = ", ".join(space.label(int(s)) for s in cycle[:6])
    return "{" + shown + (", ..." if cycle.size > 6 else "") + "}"


def zero_temperature_section(op) -> tuple[dict, list[str]]:
    """(JSON-able summary, report lines) of the zero-temperature limit of ``op``."""
    try:
        lim = zero_temperature_limit(op)
    except SemioError as e:
        return {"applicable": False, "reason": str(e)}, [f"zero-temperature limit: not applicable ({e})"]
    space, t = op.space, lim.temperature
    order = sorted(range(lim.n_classes), key=lambda i: (lim.potential[i], i))
    predicted = lim.predicted_escape_times()
    rows, lines = [], [f"zero-temperature limit: {lim.n_classes} recurrent classes of the t -> 0 chain, "
                       f"{lim.stable.size} stochastically stable; escape times at t = {t:g}:"]
    for i in order[:MAX_CLASSES_SHOWN]:
        cyc = lim.cycles[i]
        exact, bound, note = None, None, None
        if np.isfinite(lim.escape[i]):
            try:
                hr = hitting_times_result(op, lim.escape_targets(i))
                exact, bound = float(hr.times[int(cyc[0])]), hr.error_bound
            except (SemioError, RuntimeError) as e:  # e.g. an LU that fails on a very stiff chain
                note = f"hitting-time solver failed: {type(e).__name__}: {str(e)[:80]}"
        row = {"class": i, "decoded": decode_class(space, cyc, bool(lim.is_cycle[i])), "size": int(cyc.size),
               "attractor": int(lim.attractor[i]), "potential": float(lim.potential[i]),
               "stable": bool(lim.potential[i] == 0.0), "escape_resistance": float(lim.escape[i]),
               "predicted_escape_time": float(predicted[i]), "exact_escape_time": exact,
               "exact_error_bound": bound}
        if note:
            row["note"] = note
        rows.append(row)
        if not np.isfinite(lim.escape[i]):
            esc = "R = inf (its basin is all the chain can reach)"
        else:
            cert = ("" if exact is None else " (not certified)" if bound is None else f" (+- {bound:.2g})")
            ex = note if exact is None else f"exact E = {exact:.4g}{cert}"
            esc = f"R = {lim.escape[i]:.4g}, exp(R/t) = {predicted[i]:.4g}, {ex}"
        lines.append(f"  {'*' if row['stable'] else ' '} {row['decoded']}  potential {lim.potential[i]:.4g}; {esc}")
    if lim.n_classes > MAX_CLASSES_SHOWN:
        lines.append(f"  ... {lim.n_classes - MAX_CLASSES_SHOWN} more classes (see results.json counts)")
    summary = {"applicable": True, **lim.summary(), "classes_shown": rows}
    return summary, lines


"""The toolkit's "zero-temperature limit" section: stable cycles, potentials, escape resistances and times.

For an operator built with ``temperature(t)`` (optionally ``top_k``) it reports, per recurrent class
of the t -> 0 chain P0 (see :mod:`semio_jax.analysis.zero_temperature`):

* the class decoded as a token string: for a cycle of P0 (one greedy move per state), the window
  of its smallest state and the tokens the cycle repeats, ``0110 -> (01)*``; for a class with
  ties, its windows;
* its stochastic potential (0: stochastically stable) and its escape resistance R;
* the leading-order escape time exp(R / t) at the operator's temperature beside the exact expected
  number of steps to leave the class's P0 basin from its smallest state (the two differ by the
  prefactor, a constant factor as t -> 0): by GTH in the log domain on the regenerative chain
  (:func:`~semio_jax.analysis.zero_temperature.log_escape_time`, accurate at any t, up to 1024
  states before the exit) and by the hitting-time solver with its certificate.

Procedures without a temperature limit (greedy, top-p, min-p) and operators without logits get a
one-line note instead of the section.
"""

from __future__ import annotations

import numpy as np

from ..analysis import hitting_times_result, zero_temperature_limit
from ..analysis.zero_temperature import log_escape_time
from ..errors import SemioError

__all__ = ["zero_temperature_section", "MAX_CLASSES_SHOWN"]

#: classes listed (the stable ones first, then by increasing potential); all are in the summary's counts
MAX_CLASSES_SHOWN = 12
#: classes (in that order) whose exact escape time is solved (each is one or two linear solves)
MAX_ESCAPE_SOLVES = 4


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


def _exp_str(log_x: float) -> str:
    """e^log_x as text, beyond float64's range too (1.2e+345)."""
    if log_x < 700:
        return f"{np.exp(log_x):.4g}"
    exp10 = log_x / np.log(10.0)
    return f"{10 ** (exp10 - np.floor(exp10)):.4g}e+{int(np.floor(exp10))}"


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
    for rank, i in enumerate(order[:MAX_CLASSES_SHOWN]):
        cyc = lim.cycles[i]
        row = {"class": i, "decoded": decode_class(space, cyc, bool(lim.is_cycle[i])), "size": int(cyc.size),
               "attractor": int(lim.attractor[i]), "potential": float(lim.potential[i]),
               "stable": bool(lim.potential[i] == 0.0), "escape_resistance": float(lim.escape[i]),
               "predicted_escape_time": float(predicted[i]), "log_exact_escape_time": None,
               "hitting_times_escape": None, "hitting_times_error_bound": None}
        rows.append(row)
        mark = "*" if row["stable"] else " "
        if not np.isfinite(lim.escape[i]):
            lines.append(f"  {mark} {row['decoded']}  potential {lim.potential[i]:.4g}; R = inf (its basin is all "
                         f"the chain can reach)")
            continue
        start, target = int(cyc[0]), lim.escape_targets(i)
        parts = [f"R = {lim.escape[i]:.4g}", f"exp(R/t) = {_exp_str(lim.escape[i] / t)}"]
        if rank >= MAX_ESCAPE_SOLVES:
            lines.append(f"  {mark} {row['decoded']}  potential {lim.potential[i]:.4g}; " + ", ".join(parts))
            continue
        log_e = log_escape_time(op, start, lim.basin != i)
        if np.isfinite(log_e):
            row["log_exact_escape_time"] = float(log_e)
            parts.append(f"exact E = {_exp_str(log_e)} (log-domain GTH)")
        try:
            hr = hitting_times_result(op, target)
            h, b = float(hr.times[start]), hr.error_bound
            row["hitting_times_escape"], row["hitting_times_error_bound"] = h, b
            parts.append(f"hitting-time solver {h:.4g} " + ("(not certified)" if b is None else f"(+- {b:.2g})"))
        except (SemioError, RuntimeError) as e:  # e.g. an LU that fails on a very stiff chain
            row["note"] = f"hitting-time solver failed: {type(e).__name__}: {str(e)[:80]}"
            parts.append(row["note"])
        lines.append(f"  {mark} {row['decoded']}  potential {lim.potential[i]:.4g}; " + ", ".join(parts))
    if lim.n_classes > MAX_CLASSES_SHOWN:
        lines.append(f"  ... {lim.n_classes - MAX_CLASSES_SHOWN} more classes (see results.json counts)")
    summary = {"applicable": True, **lim.summary(), "classes_shown": rows}
    return summary, lines


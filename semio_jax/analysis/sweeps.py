"""Parameter sweeps: how the dynamics change with the sampling procedure.

For a parameter (``temperature``, ``top_k``, ``top_p`` or ``min_p``) and a list
of values, :func:`sweep` re-derives the exact operator from the stored logits
(:meth:`Operator.with_procedure`; the other stages of the operator's procedure
are kept) and records for each value:

* ``attractors``: the number of attractors, their sizes and periods;
* ``entropy_rate``: per attractor a, h_a = sum_s pi_a(s) H(q(. | s)) in nats
  (H the Shannon entropy of the next-token law; the entropy rate of the
  stationary chain, since the state sequence is a function of the token
  sequence and vice versa), and the weighted rate sum_a w_a h_a;
* ``spectral_gap``: 1 - SLEM per attractor (:mod:`~semio_jax.analysis.mixing`)
  and the smallest one;
* ``top_states``: the most probable states of the long-run law
  pi_w = sum_a w_a pi_a and their total mass;
* ``greedy_mass``: the mass pi_w puts on the states of the greedy map's cycles.

The weights w_a are the absorption probabilities from a uniformly random
one-token prompt (the start of a generation) when the space has prefix
states, else from a uniformly random full state.

**Temperature -> 0.** As t -> 0, q_t(. | s) -> the point mass on argmax z(s)
when the argmax is unique, so P_t -> the greedy map G. Every limit point of
pi_t is stationary for G, hence supported on G's cycles: the mass of pi_w on the
greedy cycle states tends to 1 (the limit selects the stochastically stable
cycles, in the sense of Freidlin-Wentzell). :func:`temperature_limit` sweeps
decreasing temperatures and reports that mass in total and per cycle. (With
tied maximal logits the greedy map breaks ties to the lowest token, whereas
the t -> 0 limit splits the mass between the tied tokens; the result says so.)

:func:`sweep_figure` draws one panel per recorded quantity against the
parameter (matplotlib, Agg backend) and returns the Figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..core.procedure import Procedure
from .basins import basins_result
from .classes import class_structure
from .entropy import entropy_rate
from .greedy import greedy_dynamics
from .mixing import spectral_gap
from .stationary import stationary_result

__all__ = ["SweepPoint", "SweepResult", "sweep", "temperature_limit", "sweep_figure", "entropy_rates",
           "entropy_rates_inline",
           "start_weights", "SWEEP_PARAMETERS", "SWEEP_ANALYSES"]

SWEEP_PARAMETERS = ("temperature", "top_k", "top_p", "min_p")
SWEEP_ANALYSES = ("attractors", "entropy_rate", "spectral_gap", "top_states", "greedy_mass")


def entropy_rates(op) -> np.ndarray:
    """float64[n_attractors]: h_a = sum_s pi_a(s) H(q(. | s)) in nats.

    (:func:`semio_jax.analysis.entropy.entropy_rate`; :func:`entropy_rates_inline` is the same formula inline.)
    """
    return np.asarray(entropy_rate(op).nats, dtype=np.float64)


def entropy_rates_inline(op) -> np.ndarray:
    """float64[n_attractors]: sum_s pi_a(s) H(q(. | s)), computed here from the table."""
    p = op.probs
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)  # [S]
    return stationary_result(op).expectations(h)


def start_weights(op) -> np.ndarray:
    """float64[n_attractors]: absorption probabilities from a uniform one-token prompt (else uniform full state)."""
    sp_ = op.space
    rows = np.arange(sp_.group(1).start, sp_.group(1).stop) if sp_.prefixes and sp_.length > 1 \
        else np.arange(sp_.num_full)
    return basins_result(op).rows(rows).mean(axis=0)


@dataclass
class SweepPoint:
    """The recorded quantities at one parameter value (None where not requested)."""

    value: float
    procedure: str
    n_attractors: int
    attractor_sizes: list
    periods: list
    weights: np.ndarray
    entropy_rates: np.ndarray | None = None
    entropy_rate: float | None = None
    gaps: np.ndarray | None = None
    min_gap: float | None = None
    top_states: list | None = None
    top_mass: float | None = None
    greedy_mass: float | None = None
    greedy_cycle_mass: np.ndarray | None = None

    def summary(self) -> dict:
        out = {}
        for k, v in self.__dict__.items():
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


@dataclass
class SweepResult:
    """A sweep: the parameter, its values and one :class:`SweepPoint` per value.

    ``greedy_cycles`` holds the labels of the greedy map's cycles (each a list of
    state labels in orbit order) and ``note`` any caveat (ties in the argmax).
    """

    parameter: str
    values: list
    points: list
    base: str
    analyses: tuple
    greedy_cycles: list = field(default_factory=list)
    note: str = ""

    def column(self, name: str) -> np.ndarray:
        """float64[len(values)] of a scalar field of the points (NaN where missing)."""
        return np.array([np.nan if getattr(p, name) is None else float(getattr(p, name)) for p in self.points])

    def table(self) -> str:
        head = (f"{self.parameter:>11} {'attr':>4} {'entropy':>9} {'min gap':>10} {'top mass':>9} {'greedy':>8}"
                "  top states")
        lines = [f"sweep of {self.parameter} (base procedure {self.base})", head, "-" * len(head)]
        for p in self.points:
            def f(x, w=9, fmt=".4f"):
                return f"{'-':>{w}}" if x is None else f"{x:>{w}{fmt}}"
            tops = ", ".join(f"{lab}:{m:.3f}" for lab, m in (p.top_states or [])[:3])
            lines.append(f"{p.value:>11g} {p.n_attractors:>4d} {f(p.entropy_rate)} {f(p.min_gap, 10, '.3e')} "
                         f"{f(p.top_mass)} {f(p.greedy_mass, 8)}  {tops}")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def summary(self) -> dict:
        return {"parameter": self.parameter, "values": list(self.values), "base": self.base,
                "analyses": list(self.analyses), "greedy_cycles": self.greedy_cycles, "note": self.note,
                "points": [p.summary() for p in self.points]}


def _procedure_for(base: Procedure, parameter: str, value) -> Procedure:
    if parameter == "top_k":
        if float(value) != int(value):
            raise ValueError(f"top_k values must be integers, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    return replace(base, **{parameter: value})


def _point(op, value, analyses, top: int, cycle_states: list) -> SweepPoint:
    cs = class_structure(op)
    w = start_weights(op)
    pt = SweepPoint(value=value, procedure=op.procedure.spec, n_attractors=len(cs.attractors),
                    attractor_sizes=[int(a.size) for a in cs.attractors], periods=list(map(int, cs.periods)),
                    weights=w)
    if "entropy_rate" in analyses:
        pt.entropy_rates = entropy_rates(op)
        pt.entropy_rate = float(w @ pt.entropy_rates)
    if "spectral_gap" in analyses:
        pt.gaps = np.array(spectral_gap(op).gap)
        pt.min_gap = float(pt.gaps.min())
    pi_w = None
    if "top_states" in analyses or "greedy_mass" in analyses:
        pi_w = stationary_result(op).mixture(w)
    if "top_states" in analyses:
        idx = np.argsort(-pi_w, kind="stable")[:top]
        pt.top_states = [(op.space.label(int(s)), float(pi_w[s])) for s in idx if pi_w[s] > 0]
        pt.top_mass = float(pi_w[idx].sum())
    if "greedy_mass" in analyses:
        pt.greedy_cycle_mass = np.array([pi_w[c].sum() for c in cycle_states])
        pt.greedy_mass = float(pt.greedy_cycle_mass.sum())
    return pt


def _greedy_info(op):
    if op.logits is None:
        raise ValueError("sweeps re-derive the operator from its logits: build it with keep_logits=True")
    g = greedy_dynamics(op)  # the greedy map from the logits (ties to the lowest token)
    labels = [[op.space.label(int(s)) for s in c] for c in g.cycles]
    top = np.max(op.logits, axis=1, keepdims=True)
    ties = int(((op.logits == top).sum(axis=1) > 1).sum())
    note = (f"{ties} states have tied maximal logits: the t -> 0 limit splits their mass, "
            f"the greedy map breaks the tie to the lowest token") if ties else ""
    return g.cycles, labels, note


def sweep(op, parameter: str, values, analyses=("attractors", "entropy_rate", "spectral_gap", "top_states"),
          top: int = 5) -> SweepResult:
    """Re-derive the operator for each value of ``parameter`` and record ``analyses`` (see module docstring).

    Args:
      op: an Operator with stored logits (``keep_logits=True``, the default of build_operator).
      parameter: "temperature", "top_k", "top_p" or "min_p".
      values: the parameter values, in the order to report them.
      analyses: a subset of SWEEP_ANALYSES ("attractors" is always recorded).
      top: number of top states recorded.
    """
    if parameter not in SWEEP_PARAMETERS:
        raise ValueError(f"unknown sweep parameter {parameter!r}; use one of {', '.join(SWEEP_PARAMETERS)}")
    bad = [a for a in analyses if a not in SWEEP_ANALYSES]
    if bad:
        raise ValueError(f"unknown analyses {bad}; choose from {', '.join(SWEEP_ANALYSES)}")
    values = list(values)
    if not values:
        raise ValueError("a sweep needs at least one value")
    cycles, labels, note = _greedy_info(op)
    base = op.procedure if op.procedure is not None and not op.procedure.greedy else Procedure()
    points = []
    for v in values:
        proc = _procedure_for(base, parameter, v)
        sub = op if proc == op.procedure else op.with_procedure(proc)
        points.append(_point(sub, v, tuple(analyses), top, cycles))
    return SweepResult(parameter=parameter, values=values, points=points, base=base.spec,
                       analyses=tuple(analyses), greedy_cycles=labels, note=note if "greedy_mass" in analyses else "")


def temperature_limit(op, temperatures=(1.0, 0.5, 0.3, 0.2, 0.1, 0.05), top: int = 5) -> SweepResult:
    """A temperature sweep towards 0 with the stationary mass on the greedy cycles recorded.

    ``points[i].greedy_mass`` is the mass of pi_w on the union of the greedy cycles'
    states at temperature ``temperatures[i]``; ``greedy_cycle_mass`` splits it per cycle
    (in ``greedy_cycles`` order). It tends to 1 as t -> 0 (see module docstring).
    """
    temps = sorted((float(t) for t in temperatures), reverse=True)
    return sweep(op, "temperature", temps, analyses=("attractors", "entropy_rate", "top_states", "greedy_mass"),
                 top=top)


def sweep_figure(result: SweepResult, title: str = ""):
    """One panel per recorded quantity against the swept parameter; returns a matplotlib Figure (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([float(v) for v in result.values])
    panels = [("n_attractors", "attractors")]
    if "entropy_rate" in result.analyses:
        panels.append(("entropy_rate", "entropy rate (nats)"))
    if "spectral_gap" in result.analyses:
        panels.append(("min_gap", "spectral gap (min)"))
    if "top_states" in result.analyses:
        panels.append(("top_mass", f"mass of top {len(result.points[0].top_states or [])} states"))
    if "greedy_mass" in result.analyses:
        panels.append(("greedy_mass", "mass on greedy cycles"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for ax, (name, label) in zip(axes[0], panels):
        ax.plot(x, result.column(name), "o-", ms=4)
        ax.set_xlabel(result.parameter)
        ax.set_ylabel(label)
        if result.parameter == "temperature" and x.min() > 0 and x.max() / x.min() > 20:
            ax.set_xscale("log")
        if name == "n_attractors":
            ax.yaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title or f"sweep of {result.parameter} (base {result.base})", fontsize=10)
    fig.tight_layout()
    return fig

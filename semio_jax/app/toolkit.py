"""``semio analyze --all``: every analysis of the toolkit, each beside its sampled check.

For one operator (model x procedure) this runs, in order:

  entropy rate (+ Shannon-McMillan-Breiman check), evolution from a prompt
  (+ token-marginal check), mixing: spectral gap, d(n), t_mix, Dobrushin bound
  (+ check of the state law at chosen n), hitting times and a committor
  (+ hitting-time check), MAP vs greedy vs beam trajectories (+ MAP-frequency
  and log-probability check), sensitivity of a prompt to one-token
  perturbations (+ check of both futures), metastable sets of an ergodic chain
  (+ exit-time check), a temperature sweep with the t -> 0 limit, and the
  zero-temperature limit of temperature sampling: stable cycles decoded as token
  strings, stochastic potentials, escape resistances, exp(R/t) beside the exact
  escape time (no sampled check: escapes take exp(R/t) steps).

Choices made for the user (all recorded in results.json):
  * the prompt is the one-token prompt of the most frequent stationary token of
    attractor 0 (or the first ``--prompt``); the hitting target is the most
    probable state of attractor 0 (or the states that ``--target`` names);
    the committor runs from that state (A) to the rarest state of the same
    attractor (B);
  * sample sizes are modest so a zoo model finishes in about a minute; the
    tests in tests/ show each check's power against a wrong operator with
    larger budgets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import agreement
from .report import check_markdown
from .zero_temperature_section import zero_temperature_section
from ..analysis import (
    certified_mixing_time,
    class_structure,
    committor_result,
    compare_decoders,
    dobrushin,
    entropy_rate,
    hitting_times_result,
    metastable_sets,
    mixing_time,
    path_entropy,
    prompt_sensitivity,
    spectral_gap,
    stationary_result,
    sweep,
    sweep_figure,
    temperature_limit,
    token_marginals,
    tv_distance,
)

__all__ = ["run_toolkit", "SECTIONS", "Section", "ToolkitContext", "Finding"]


def _choose_prompt(op) -> tuple[int, int]:
    """(one-token prompt state, its token): the most frequent stationary token of attractor 0."""
    space = op.space
    pi = stationary_result(op).distribution(0)[: space.num_full]
    tok = int(np.argmax(pi.reshape(-1, space.n_tokens).sum(axis=0)))
    return (space.index([tok]) if space.prefixes else int(np.argmax(pi))), tok


def _curve_figure(curves: dict, title: str, ylabel: str, log: bool = True, first: int = 0,
                  xlabel: str = "steps n"):
    """One line per curve; curve values y[i] are plotted at x = first + i."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for label, y in curves.items():
        y = np.asarray(y, dtype=float)
        x = first + np.arange(y.size)
        if log:
            keep = y > 0
            ax.semilogy(x[keep], y[keep], label=label)
        else:
            ax.plot(x, y, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _membership_figure(space, meta, title: str):
    """Stacked bars: membership of the most probable states in each metastable set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pi = meta.pi if meta.pi is not None else np.ones(meta.states.size)
    order = np.argsort(-pi, kind="stable")[:32]
    fig, ax = plt.subplots(figsize=(8, 3))
    bottom = np.zeros(order.size)
    for j in range(meta.k):
        ax.bar(range(order.size), meta.memberships[order, j], bottom=bottom, label=f"set {j} (mass {meta.mass[j]:.3g})")
        bottom += meta.memberships[order, j]
    ax.set_xticks(range(order.size), [space.label(int(meta.states[i])) for i in order], rotation=70, fontsize=6)
    ax.set_xlabel("state (the 32 most probable, most probable first)")
    ax.set_ylabel("membership")
    ax.set_title(title + " (most probable states)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


@dataclass
class ToolkitContext:
    """What every section reads: the operator, the model and the choices made for the user."""

    op: Any
    model: Any
    model_name: str
    prompt: int       # the prompt's state (default: the one-token prompt of attractor 0's most frequent token)
    top_state: int    # most probable state of attractor 0 (committor's A)
    rare_state: int   # least probable state of attractor 0 (committor's B)
    target: np.ndarray  # the hitting target's states (default: [top_state])
    target_label: str
    ergodic: bool
    horizon: int
    seed: int
    level: float

    @property
    def space(self):
        return self.op.space

    @property
    def check_kw(self) -> dict:
        return {"seed": self.seed, "level": self.level}


@dataclass
class Finding:
    """What a section's exact analysis produced.

    out: JSON-able entries for results.json; line: the terminal/report line;
    figures: (name, matplotlib Figure); arrays: name -> array for arrays.npz;
    state: whatever the section's check needs from the analysis (None: nothing to check).
    """

    out: dict
    line: str
    figures: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)
    state: Any = None
    timed: str | None = None


@dataclass(frozen=True)
class Section:
    """One toolkit section, declared once: its exact analysis and its sampled check.

    exact(ctx) -> Finding | None (None: the section does not apply to this chain);
    check(ctx, finding) -> AgreementReport | None (None: nothing to sample).
    The rendering is shared (:func:`run_toolkit`): the finding's line and figures,
    then the check table through ``report.check_markdown``.
    """

    name: str
    exact: Callable[[ToolkitContext], Finding | None]
    check: Callable[[ToolkitContext, Finding], Any] | None = None


def _entropy_exact(ctx: ToolkitContext) -> Finding:
    op, space = ctx.op, ctx.space
    t0 = time.perf_counter()
    h = entropy_rate(op)
    t = time.perf_counter() - t0
    pe = path_entropy(op, ctx.prompt, ctx.horizon)
    line = ("entropy rate: " + ", ".join(f"A{i}: {n:.6f} nats = {b:.6f} bits" for i, (n, b) in enumerate(zip(h.nats, h.bits)))
            + f"; H(first {ctx.horizon} tokens | prompt {space.label(ctx.prompt)}) = {pe.nats:.6f} nats")
    return Finding({"entropy_rate": h.summary(), "path_entropy": pe.summary()}, line, timed=t)


def _entropy_check(ctx: ToolkitContext, f: Finding):
    return agreement.check_entropy_rate(ctx.op, ctx.model, n_chains=32, n_steps=300, **ctx.check_kw)


def _evolution_exact(ctx: ToolkitContext) -> Finding:
    space, prompt, horizon = ctx.space, ctx.prompt, ctx.horizon
    tm = token_marginals(ctx.op, prompt, horizon)  # [horizon, N]; row t-1 is the law of the t-th new token
    fig = _curve_figure({f"P(token {y})": tm[:, y] for y in range(space.n_tokens)},
                        f"{ctx.model_name}: next-token law after prompt {space.label(prompt)}",
                        "probability", log=False, first=1, xlabel="generated token t (t = 1 is the first after the prompt)")
    line = (f"P(token at step t | prompt {space.label(prompt)}), t=1..{horizon}: "
            + " ".join("[" + ",".join(f"{v:.3f}" for v in row) + "]" for row in tm[:4]) + (" ..." if horizon > 4 else ""))
    return Finding({"token_marginals": tm.tolist()}, line, [("token_marginals", fig)], {"token_marginals": tm})


def _evolution_check(ctx: ToolkitContext, f: Finding):
    return agreement.check_evolution(ctx.op, ctx.model, ctx.prompt, ctx.horizon, n_chains=1000, **ctx.check_kw)


def _mixing_exact(ctx: ToolkitContext) -> Finding:
    op, space, prompt = ctx.op, ctx.space, ctx.prompt
    out: dict = {}
    t0 = time.perf_counter()
    sg = spectral_gap(op)
    out["spectral_gap"] = sg.summary()
    d = tv_distance(op, prompt, 4 * space.length)
    out["tv_from_prompt"] = d.tolist()
    fig = _curve_figure({f"from {space.label(prompt)}": d}, f"{ctx.model_name}: d(n) to stationarity", "TV distance")
    try:
        tmix = mixing_time(op, start=prompt)
    except ValueError as e:  # periodic class
        tmix, out["mixing_time_note"] = None, str(e)
    out["mixing_time_from_prompt"] = tmix
    dob = dobrushin(op)
    cert = certified_mixing_time(op)
    out["dobrushin"] = dob.summary()
    out["certified_mixing_time"] = {"value": cert.value, "reason": cert.reason}
    line = ("mixing: " + "; ".join(f"A{c.attractor}: SLEM {c.slem:.6f}, gap {c.gap:.6f}, t_rel {c.relaxation_time:.3g}, period {c.period}"
                                   for c in sg.classes[:4])
            + f"; t_mix(0.25) from prompt = {tmix}; Dobrushin delta(P^{dob.steps}) = {dob.delta:.4g}, "
            + f"certified t_mix = {cert.value if cert.value is not None else 'none (' + cert.reason + ')'}")
    return Finding(out, line, [("tv", fig)], {"tv_from_prompt": d}, timed=time.perf_counter() - t0)


def _mixing_check(ctx: ToolkitContext, f: Finding):
    return agreement.check_tv(ctx.op, ctx.model, ctx.prompt, (1, 2, 4, 8), n_chains=1000, **ctx.check_kw)


def _hitting_exact(ctx: ToolkitContext) -> Finding:
    op, space, prompt, top, rare = ctx.op, ctx.space, ctx.prompt, ctx.top_state, ctx.rare_state
    t0 = time.perf_counter()
    hit = hitting_times_result(op, ctx.target)
    t = time.perf_counter() - t0
    out = {"hitting": {**hit.summary(), "from_prompt": float(hit.times[prompt])}}
    line = f"E[steps to hit {ctx.target_label} | prompt] = {hit.times[prompt]:.6g} (residual {hit.residual:.1e})"
    if rare != top:
        com = committor_result(op, [top], [rare])
        out["committor_result"] = {**com.summary(), "from_prompt": float(com.probabilities[prompt])}
        line += (f"; P(hit {space.label(rare)} before {space.label(top)} | prompt) = "
                 f"{com.probabilities[prompt]:.6g}")
    else:  # a single-state attractor: no second state to commit to
        out["committor_result"] = None
        line += "; no committor (attractor 0 is a single state)"
    return Finding(out, line, arrays={"hitting_times": hit.times}, state=hit, timed=t)


def _hitting_check(ctx: ToolkitContext, f: Finding):
    t = f.state.times[ctx.prompt]
    if not (np.isfinite(t) and t < 500):  # too long (or never) for a modest sample
        return None
    return agreement.check_hitting(ctx.op, ctx.model, ctx.target, ctx.prompt, n_chains=300, **ctx.check_kw)


def _trajectories_exact(ctx: ToolkitContext) -> Finding:
    t0 = time.perf_counter()
    dec = compare_decoders(ctx.op, ctx.prompt, ctx.horizon, width=3)
    return Finding({"decoders": dec.summary()}, "decoders from prompt " + ctx.space.label(ctx.prompt) + ":\n" + dec.table(),
                   timed=time.perf_counter() - t0)


def _trajectories_check(ctx: ToolkitContext, f: Finding):
    return agreement.check_trajectories(ctx.op, ctx.model, ctx.prompt, min(ctx.horizon, 6), n_chains=1000, **ctx.check_kw)


def _sensitivity_exact(ctx: ToolkitContext) -> Finding:
    t0 = time.perf_counter()
    sens = prompt_sensitivity(ctx.op, ctx.top_state, n=4 * ctx.space.length)
    t = time.perf_counter() - t0
    fig = _curve_figure({lab: sens.state_tv[i] for i, lab in enumerate(sens.labels[:8])},
                        f"{ctx.model_name}: futures of {sens.prompt_label} vs perturbations", "TV distance")
    rates = np.asarray(sens.rates, dtype=float)
    line = (f"sensitivity of {sens.prompt_label} to one-token perturbations: rates {np.round(rates[:6], 4).tolist()} "
            f"(log SLEM {sens.log_slem:.4f})")
    return Finding({"sensitivity": sens.summary()}, line, [("sensitivity", fig)],
                   {"sensitivity_state_tv": sens.state_tv}, state=sens, timed=t)


def _sensitivity_check(ctx: ToolkitContext, f: Finding):
    return agreement.check_sensitivity(ctx.op, ctx.model, f.state.prompt, t_values=(1, 2, 4), n_chains=1000, **ctx.check_kw)


def _metastable_exact(ctx: ToolkitContext) -> Finding | None:
    if not ctx.ergodic:  # metastability is defined here for ergodic chains only
        return None
    t0 = time.perf_counter()
    meta = metastable_sets(ctx.op)
    t = time.perf_counter() - t0
    figs = [("metastable", _membership_figure(ctx.space, meta, f"{ctx.model_name}: metastable sets"))] if meta.k >= 2 else []
    line = f"metastable sets: k={meta.k}, masses {np.round(meta.mass, 4).tolist()}, crispness {meta.crispness:.2f}"
    return Finding({"metastable": meta.summary()}, line, figs, state=meta, timed=t)


def _metastable_check(ctx: ToolkitContext, f: Finding):
    if f.state.k < 2:
        return None
    return agreement.check_metastable(ctx.op, ctx.model, result=f.state, n_chains=200, **ctx.check_kw)


def _sweep_exact(ctx: ToolkitContext) -> Finding:
    t0 = time.perf_counter()
    sw = sweep(ctx.op, "temperature", [0.25, 0.5, 1.0, 2.0])
    t = time.perf_counter() - t0
    tl = temperature_limit(ctx.op, (1.0, 0.5, 0.25, 0.1))
    line = "temperature sweep (attractors, entropy rate): " + ", ".join(
        f"t={p.value:g}: {p.n_attractors}, {p.entropy_rate if p.entropy_rate is None else round(p.entropy_rate, 4)}"
        for p in sw.points)
    return Finding({"sweep_temperature": [p.summary() for p in sw.points],
                    "temperature_limit": [p.summary() for p in tl.points]}, line,
                   [("sweep", sweep_figure(sw, title=f"{ctx.model_name}: temperature sweep"))], timed=t)


def _zero_temperature_exact(ctx: ToolkitContext) -> Finding:
    t0 = time.perf_counter()
    summary, lines = zero_temperature_section(ctx.op)  # a one-line note where the procedure has no t -> 0 limit
    return Finding({"zero_temperature": summary}, "\n".join(lines), timed=time.perf_counter() - t0)


#: The toolkit, in the order it runs. Each entry is the whole section: exact analysis and sampled check.
TOOLKIT = (
    Section("entropy", _entropy_exact, _entropy_check),
    Section("evolution", _evolution_exact, _evolution_check),
    Section("mixing", _mixing_exact, _mixing_check),
    Section("hitting", _hitting_exact, _hitting_check),
    Section("trajectories", _trajectories_exact, _trajectories_check),
    Section("sensitivity", _sensitivity_exact, _sensitivity_check),
    Section("metastable", _metastable_exact, _metastable_check),
    Section("sweep", _sweep_exact, None),
    Section("zero_temperature", _zero_temperature_exact, None),
)
SECTIONS = tuple(s.name for s in TOOLKIT)


def toolkit_context(op, model, *, model_name: str, seed: int = 0, level: float = 0.01, horizon: int = 8,
                    prompt: int | None = None, target=None) -> ToolkitContext:
    """The choices made for the user (module docstring) for ``op``; ``prompt`` (a state) and ``target``
    (states) replace the automatic prompt and hitting target."""
    cs = class_structure(op)
    if prompt is None:
        prompt, _tok = _choose_prompt(op)
    pi0 = stationary_result(op).distribution(0)
    members0 = cs.attractors[0]
    top, rare = int(members0[np.argmax(pi0[members0])]), int(members0[np.argmin(pi0[members0])])
    if target is None:
        tgt, tgt_label = np.array([top], dtype=np.int64), op.space.label(top)
    else:
        tgt = np.asarray(target, dtype=np.int64)
        tgt_label = (op.space.label(int(tgt[0])) if tgt.size == 1
                     else f"the target ({tgt.size} states, e.g. {op.space.label(int(tgt[0]))})")
    return ToolkitContext(op, model, model_name, int(prompt), top, rare, tgt, tgt_label,
                          len(cs.attractors) == 1, horizon, seed, level)


def run_toolkit(op, model, *, model_name: str, seed: int = 0, sample: bool = True, level: float = 0.01,
                report=None, echo: Callable[[str], None] = print, tag: str = "", horizon: int = 8,
                sections=SECTIONS, prompt: int | None = None, target=None) -> dict:
    """Run the toolkit sections named in ``sections`` (default all, see SECTIONS) on ``op``,
    each with its sampled check on ``model``; return a JSON-able dict. ``prompt`` (a state index)
    and ``target`` (state indices) replace the automatic choices."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown analyses {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    want = set(sections)
    ctx = toolkit_context(op, model, model_name=model_name, seed=seed, level=level, horizon=horizon,
                          prompt=prompt, target=target)
    space = op.space
    timings: dict = {}
    out: dict = {"prompt": space.label(ctx.prompt), "hitting_target": ctx.target_label,
                 "committor": {"A": space.label(ctx.top_state), "B": space.label(ctx.rare_state)}}
    checks: list = []
    body: list[str] = []
    figure_names: list[str] = []
    for section in TOOLKIT:
        if section.name not in want:
            continue
        found = section.exact(ctx)
        if found is None:
            continue
        if found.timed is not None:
            timings[section.name] = round(found.timed, 3)
        out.update(found.out)
        echo(found.line)
        body += ["```", found.line, "```", ""]
        check = None
        if sample and section.check is not None:
            t0 = time.perf_counter()
            check = section.check(ctx, found)
            if check is not None:
                timings[f"check_{section.name}"] = round(time.perf_counter() - t0, 2)
                checks.append(check)
                echo(check.table(max_rows=4))
                body += [check_markdown(check, max_rows=12), ""]
        if report is not None:
            figure_names += [report.figure(f"{tag}_{name}", fig) for name, fig in found.figures]
            for name, arr in found.arrays.items():
                report.array(f"{tag}/{name}", arr)
        else:
            _close(found.figures)
    out["checks"] = [c.to_dict() for c in checks]
    out["all_checks_passed"] = all(c.passed for c in checks)
    out["verdict"] = agreement.combined_verdict([c.verdict for c in checks])
    out["timings_s"] = timings
    if report is not None:
        body.append(" ".join(f"![{f}]({f})" for f in figure_names))
        report.section(f"{model_name} — toolkit ({op.procedure.spec if op.procedure else 'table'})", "\n".join(body))
    return out


def _close(figs) -> None:
    if figs:
        import matplotlib.pyplot as plt

        for _, fig in figs:
            plt.close(fig)

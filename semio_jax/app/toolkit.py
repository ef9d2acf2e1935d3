"""``semio analyze --all``: every analysis of the toolkit, each beside its sampled check.

For one operator (model x procedure) this runs, in order:

  entropy rate (+ Shannon-McMillan-Breiman check), evolution from a prompt
  (+ token-marginal check), mixing: spectral gap, d(n), t_mix, Dobrushin bound
  (+ check of the state law at chosen n), hitting times and a committor
  (+ hitting-time check), MAP vs greedy vs beam trajectories (+ MAP-frequency
  and log-probability check), sensitivity of a prompt to one-token
  perturbations (+ check of both futures), metastable sets of an ergodic chain
  (+ exit-time check), and a temperature sweep with the t -> 0 limit.

Choices made for the user (all recorded in results.json):
  * the prompt is the one-token prompt of the most frequent stationary token of
    attractor 0; the hitting target is the most probable state of attractor 0;
    the committor runs from that state (A) to the rarest state of the same
    attractor (B);
  * sample sizes are modest so a zoo model finishes in about a minute; the
    tests in tests/ show each check's power against a wrong operator with
    larger budgets.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .. import agreement
from .report import markdown_table
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

__all__ = ["run_toolkit", "SECTIONS"]

SECTIONS = ("entropy", "evolution", "mixing", "hitting", "trajectories", "sensitivity", "metastable", "sweep")


def _choose_prompt(op) -> tuple[int, int]:
    """(one-token prompt state, its token): the most frequent stationary token of attractor 0."""
    space = op.space
    pi = stationary_result(op).distribution(0)[: space.num_full]
    tok = int(np.argmax(pi.reshape(-1, space.n_tokens).sum(axis=0)))
    return (space.index([tok]) if space.prefixes else int(np.argmax(pi))), tok


def _timed(fn, timings: dict, key: str):
    t0 = time.perf_counter()
    out = fn()
    timings[key] = round(time.perf_counter() - t0, 3)
    return out


def _curve_figure(curves: dict, title: str, ylabel: str, log: bool = True):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for label, y in curves.items():
        y = np.asarray(y, dtype=float)
        x = np.arange(y.size)
        if log:
            keep = y > 0
            ax.semilogy(x[keep], y[keep], label=label)
        else:
            ax.plot(x, y, label=label)
    ax.set_xlabel("steps n")
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
    ax.set_ylabel("membership")
    ax.set_title(title + " (most probable states)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def run_toolkit(op, model, *, model_name: str, seed: int = 0, sample: bool = True, level: float = 0.01,
                report=None, echo: Callable[[str], None] = print, tag: str = "", horizon: int = 8,
                sections=SECTIONS) -> dict:
    """Run the toolkit analyses named in ``sections`` (default all, see SECTIONS) on ``op``,
    each with its sampled check on ``model``; return a JSON-able dict."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown analyses {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    want = set(sections)
    space = op.space
    cs = class_structure(op)
    prompt, tok = _choose_prompt(op)
    pi0 = stationary_result(op).distribution(0)
    members0 = cs.attractors[0]
    top_state = int(members0[np.argmax(pi0[members0])])
    rare_state = int(members0[np.argmin(pi0[members0])])
    ergodic = len(cs.attractors) == 1
    timings: dict = {}
    out: dict = {"prompt": space.label(prompt), "hitting_target": space.label(top_state),
                 "committor": {"A": space.label(top_state), "B": space.label(rare_state)}}
    checks: list = []
    lines: list[str] = []
    figs: list = []  # (name, matplotlib Figure)
    arrays: dict = {}

    def say(line: str) -> None:
        lines.append(line)
        echo(line)

    # 1. entropy rate and path entropy
    sens = meta = hit = None
    if "entropy" in want:
        h = _timed(lambda: entropy_rate(op), timings, "entropy_rate")
        pe = path_entropy(op, prompt, horizon)
        out["entropy_rate"] = h.summary()
        out["path_entropy"] = pe.summary()
        say("entropy rate: " + ", ".join(f"A{i}: {n:.6f} nats = {b:.6f} bits" for i, (n, b) in enumerate(zip(h.nats, h.bits)))
            + f"; H(first {horizon} tokens | prompt {space.label(prompt)}) = {pe.nats:.6f} nats")

    # 2. evolution
    if "evolution" in want:
        tm = token_marginals(op, prompt, horizon)
        out["token_marginals"] = tm.tolist()
        figs.append(("token_marginals", _curve_figure({f"P(token {y})": tm[:, y] for y in range(space.n_tokens)},
                                                      f"{model_name}: next-token law after prompt {space.label(prompt)}",
                                                      "probability", log=False)))
        arrays["token_marginals"] = tm
        say(f"P(token at step t | prompt {space.label(prompt)}), t=1..{horizon}: "
            + " ".join("[" + ",".join(f"{v:.3f}" for v in row) + "]" for row in tm[:4]) + (" ..." if horizon > 4 else ""))

    # 3. mixing and bounds
    if "mixing" in want:
        sg = _timed(lambda: spectral_gap(op), timings, "spectral_gap")
        out["spectral_gap"] = sg.summary()
        d = tv_distance(op, prompt, 4 * space.length)
        out["tv_from_prompt"] = d.tolist()
        arrays["tv_from_prompt"] = d
        figs.append(("tv", _curve_figure({f"from {space.label(prompt)}": d}, f"{model_name}: d(n) to stationarity",
                                         "TV distance")))
        try:
            tmix = mixing_time(op, start=prompt)
        except ValueError as e:  # periodic class
            tmix, out["mixing_time_note"] = None, str(e)
        out["mixing_time_from_prompt"] = tmix
        dob = _timed(lambda: dobrushin(op), timings, "dobrushin")
        cert = certified_mixing_time(op)
        out["dobrushin"] = dob.summary()
        out["certified_mixing_time"] = {"value": cert.value, "reason": cert.reason}
        say("mixing: " + "; ".join(f"A{c.attractor}: SLEM {c.slem:.6f}, gap {c.gap:.6f}, t_rel {c.relaxation_time:.3g}, period {c.period}"
                                   for c in sg.classes[:4])
            + f"; t_mix(0.25) from prompt = {tmix}; Dobrushin delta(P^{dob.steps}) = {dob.delta:.4g}, "
            + f"certified t_mix = {cert.value if cert.value is not None else 'none (' + cert.reason + ')'}")

    # 4. hitting and committor
    if "hitting" in want:
        hit = _timed(lambda: hitting_times_result(op, [top_state]), timings, "hitting")
        out["hitting"] = {**hit.summary(), "from_prompt": float(hit.times[prompt])}
        arrays["hitting_times"] = hit.times
        line = f"E[steps to hit {space.label(top_state)} | prompt] = {hit.times[prompt]:.6g} (residual {hit.residual:.1e})"
        if rare_state != top_state:
            com = committor_result(op, [top_state], [rare_state])
            out["committor_result"] = {**com.summary(), "from_prompt": float(com.probabilities[prompt])}
            line += (f"; P(hit {space.label(rare_state)} before {space.label(top_state)} | prompt) = "
                     f"{com.probabilities[prompt]:.6g}")
        else:  # a single-state attractor: no second state to commit to
            out["committor_result"] = None
            line += "; no committor (attractor 0 is a single state)"
        say(line)

    # 5. trajectories
    if "trajectories" in want:
        dec = _timed(lambda: compare_decoders(op, prompt, horizon, width=3), timings, "trajectories")
        out["decoders"] = dec.summary()
        say("decoders from prompt " + space.label(prompt) + ":\n" + dec.table())

    # 6. sensitivity
    if "sensitivity" in want:
        sens = _timed(lambda: prompt_sensitivity(op, top_state, n=4 * space.length), timings, "sensitivity")
        out["sensitivity"] = sens.summary()
        arrays["sensitivity_state_tv"] = sens.state_tv
        figs.append(("sensitivity", _curve_figure({lab: sens.state_tv[i] for i, lab in enumerate(sens.labels[:8])},
                                                  f"{model_name}: futures of {sens.prompt_label} vs perturbations",
                                                  "TV distance")))
        rates = np.asarray(sens.rates, dtype=float)
        say(f"sensitivity of {sens.prompt_label} to one-token perturbations: rates {np.round(rates[:6], 4).tolist()} "
            f"(log SLEM {sens.log_slem:.4f})")

    # 7. metastability (ergodic chains only)
    if "metastable" in want and ergodic:
        meta = _timed(lambda: metastable_sets(op), timings, "metastable")
        out["metastable"] = meta.summary()
        if meta.k >= 2:
            figs.append(("metastable", _membership_figure(space, meta, f"{model_name}: metastable sets")))
        say(f"metastable sets: k={meta.k}, masses {np.round(meta.mass, 4).tolist()}, crispness {meta.crispness:.2f}")

    # 8. sweep
    if "sweep" in want:
        sw = _timed(lambda: sweep(op, "temperature", [0.25, 0.5, 1.0, 2.0]), timings, "sweep")
        tl = temperature_limit(op, (1.0, 0.5, 0.25, 0.1))
        out["sweep_temperature"] = [p.summary() for p in sw.points]
        out["temperature_limit"] = [p.summary() for p in tl.points]
        figs.append(("sweep", sweep_figure(sw, title=f"{model_name}: temperature sweep")))
        say("temperature sweep (attractors, entropy rate): " + ", ".join(
            f"t={p.value:g}: {p.n_attractors}, {p.entropy_rate if p.entropy_rate is None else round(p.entropy_rate, 4)}"
            for p in sw.points))

    # sampled counterparts
    if sample:
        t0 = time.perf_counter()
        kw = dict(seed=seed, level=level)
        if "entropy" in want:
            checks.append(agreement.check_entropy_rate(op, model, n_chains=32, n_steps=300, **kw))
        if "evolution" in want:
            checks.append(agreement.check_evolution(op, model, prompt, horizon, n_chains=1000, **kw))
        if "mixing" in want:
            checks.append(agreement.check_tv(op, model, prompt, (1, 2, 4, 8), n_chains=1000, **kw))
        if hit is not None and np.isfinite(hit.times[prompt]) and hit.times[prompt] < 500:
            checks.append(agreement.check_hitting(op, model, [top_state], prompt, n_chains=300, **kw))
        if "trajectories" in want:
            checks.append(agreement.check_trajectories(op, model, prompt, min(horizon, 6), n_chains=1000, **kw))
        if sens is not None:
            checks.append(agreement.check_sensitivity(op, model, sens.prompt, t_values=(1, 2, 4), n_chains=1000, **kw))
        if meta is not None and meta.k >= 2:
            checks.append(agreement.check_metastable(op, model, result=meta, n_chains=200, **kw))
        timings["checks"] = round(time.perf_counter() - t0, 2)
        for c in checks:
            say(c.table(max_rows=4))
    out["checks"] = [c.to_dict() for c in checks]
    out["all_checks_passed"] = all(c.passed for c in checks)
    out["verdict"] = agreement.combined_verdict([c.verdict for c in checks])
    out["timings_s"] = timings

    if report is not None:

        names = [report.figure(f"{tag}_{name}", fig) for name, fig in figs]
        body = ["```", *lines, "```", ""]
        for c in checks:
            rows = [[r.quantity, r.exact, r.estimate, r.se, r.z, r.p_value] for r in c.rows]
            body += [f"**Check: {c.title}** — {c.verdict} ({c.n_tests} tests, min p = {c.min_p:.3g}, "
                     f"family-wise level {c.level}). {c.method}", "",
                     markdown_table(["quantity", "exact", "sampled", "s.e.", "z", "p"], rows[:12]), ""]
        body.append(" ".join(f"![{f}]({f})" for f in names))
        report.section(f"{model_name} — toolkit ({op.procedure.spec if op.procedure else 'table'})", "\n".join(body))
        for name, arr in arrays.items():
            report.array(f"{tag}/{name}", arr)
    else:
        import matplotlib.pyplot as plt

        for _, fig in figs:
            plt.close(fig)
    return out

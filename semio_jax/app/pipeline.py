"""The main job: model -> operator -> analyses -> sampling -> agreement -> report.

:func:`analyze` runs the whole data flow for one model and one procedure and
adds its tables, numbers, arrays and figures to a :class:`~semio_jax.app.report.Report`.
The CLI's ``analyze``, ``check`` and ``demo`` commands are thin wrappers.
"""

from __future__ import annotations

import re
import time
from typing import Callable

import numpy as np

from . import figures
from ..agreement import check_basins, check_stationary, combined_verdict
from ..analysis import basins_result, class_structure, greedy_dynamics, stationary_result
from ..build import build_operator
from .report import Report, markdown_table, text_table
from .toolkit import SECTIONS, run_toolkit
from ..core.procedure import parse
from ..core.space import StateSpace

__all__ = ["analyze", "tag_of"]


#: the report stores stationary laws ([n_attractors, S]) and basins ([S, m]) as dense arrays up to this size,
#: compactly above
DENSE_REPORT_BYTES = 64 * 2**20


def _dense_rows(st, k: int) -> np.ndarray:
    """float64[min(k, n_attractors), S]: the first k stationary laws as dense rows (for figures)."""
    return np.stack([st.distribution(a) for a in range(min(k, len(st)))]) if len(st) else np.zeros((0, st.num_states))


def tag_of(spec: str) -> str:
    """A file-name-safe tag for a procedure spec: 'temperature=0.8,top_k=3' -> 'temperature0.8_top_k3'."""
    return re.sub(r"[^A-Za-z0-9_.]+", "", spec.replace(",", "_").replace("=", ""))


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def analyze(model, procedure, *, length: int | None = None, sample: bool = True, seed: int = 0,
            n_chains: int = 64, n_steps: int = 2000, basin_chains: int = 2000, level: float = 0.01,
            report: Report | None = None, echo: Callable[[str], None] = print, model_name: str = "model",
            toolkit=None) -> dict:
    """Exact analysis of ``model`` under ``procedure``, checked against sampling.

    Returns a JSON-able summary; with ``report`` also records sections, arrays
    and figures under a tag derived from the procedure.
    """
    proc = parse(procedure)
    n = int(model.n_tokens)
    length = int(length or model.context_length)
    space = StateSpace(n, length)
    tag = tag_of(f"{model_name}_{proc.spec}")  # unique per (model, procedure) inside one report
    timings = {}

    t0 = time.perf_counter()
    op = build_operator(model, space, proc)
    timings["build_operator_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cs = class_structure(op)
    st = stationary_result(op)
    bs = basins_result(op)
    gd = greedy_dynamics(op)
    timings["exact_analyses_s"] = time.perf_counter() - t0

    att_rows = []
    for a, members in enumerate(cs.attractors):
        vals = st.values[a]  # pi on the attractor's own states (no dense row per attractor)
        k = int(np.argmax(vals))
        top = int(st.supports[a][k])
        att_rows.append([f"A{a}", int(members.size), int(cs.periods[a]), space.label(top), float(vals[k]),
                         _entropy(vals), st.methods[a], st.residuals[a],
                         st.error_bounds[a] if st.error_bounds[a] is not None else "n/a"])
    att_headers = ["attractor", "states", "period", "top state", "pi(top)", "H(pi) nats", "method",
                   "residual L1", "error bound L1"]
    prompts = list(space.group(1)) if space.prefixes else []
    basin_rows = [[space.label(s)] + [float(v) for v in bs.rows(s)] for s in prompts]
    basin_headers = ["prompt"] + [f"P(->A{a})" for a in range(len(cs.attractors))]

    echo("")
    echo(f"== {model_name} | N={n} L={length} | procedure {proc.spec} | {space.num_states} states "
         f"({space.num_full} full) | built in {timings['build_operator_s']:.2f}s, analysed in {timings['exact_analyses_s']:.2f}s")
    echo(text_table(att_headers, att_rows, title=f"attractors (closed classes): {len(cs.attractors)}; "
                    f"transient states: {cs.transient.size}"))
    if len(cs.attractors) > 1 and basin_rows:
        echo(text_table(basin_headers, basin_rows[:16], title="basins from one-token prompts (exact)"))
    echo(f"greedy map: {len(gd.cycles)} cycles, periods {sorted(set(gd.periods))}, "
         f"longest tail {int(gd.tail.max())}")

    checks = []
    if sample:
        t0 = time.perf_counter()
        if any(m.size > 1 for m in cs.attractors):  # single-state attractors have nothing to sample
            checks.append(check_stationary(op, model, n_chains=n_chains, n_steps=n_steps, seed=seed, level=level))
        if len(cs.attractors) > 1:
            checks.append(check_basins(op, model, n_chains=basin_chains, seed=seed, level=level))
        timings["sampling_and_checks_s"] = time.perf_counter() - t0
        for c in checks:
            echo(c.table(max_rows=8))

    tk = None
    if toolkit:  # True (everything) or a tuple of toolkit section names

        sections = SECTIONS if toolkit is True else tuple(toolkit)

        t0 = time.perf_counter()
        echo("-- toolkit --")
        tk = run_toolkit(op, model, model_name=model_name, seed=seed, sample=sample, level=level,
                         report=report, echo=echo, tag=tag, sections=sections)
        timings["toolkit_s"] = time.perf_counter() - t0

    summary = {
        "model": model_name, "procedure": proc.spec, "n_tokens": n, "context_length": length,
        "num_states": space.num_states, "num_full_states": space.num_full,
        "operator": op.summary(),
        "attractors": [{"index": a, "size": int(m.size), "period": int(cs.periods[a]),
                        "states_preview": [space.label(int(s)) for s in m[:8]]}
                       for a, m in enumerate(cs.attractors)],
        "n_transient": int(cs.transient.size),
        "stationary": st.summary(),
        "basins": bs.summary(),
        "greedy": {"n_cycles": len(gd.cycles), "periods": gd.periods[:50],
                   "cycles_preview": [[space.label(int(s)) for s in c] for c in gd.cycles[:10]],
                   "max_tail": int(gd.tail.max())},
        "checks": [c.to_dict() for c in checks],
        "toolkit": tk,
        "all_checks_passed": all(c.passed for c in checks) and (tk is None or tk["all_checks_passed"]),
        "verdict": (combined_verdict([c.verdict for c in checks] + ([tk["verdict"]] if tk and tk.get("checks") else []))
                    if sample else None),
        "timings": timings,
        "seed": seed,
    }

    if report is not None:
        report.result(tag, summary)
        report.array(f"{tag}/probs", op.probs)
        if 8 * len(st) * st.num_states <= DENSE_REPORT_BYTES:
            report.array(f"{tag}/stationary", st.distributions)
        else:  # per attractor: the states of attractor a are stationary_states[offsets[a]:offsets[a + 1]]
            report.array(f"{tag}/stationary_offsets", np.cumsum([0] + [s.size for s in st.supports]))
            report.array(f"{tag}/stationary_states", np.concatenate(st.supports))
            report.array(f"{tag}/stationary_values", np.concatenate(st.values))
        if 8 * bs.num_states * bs.n_attractors <= DENSE_REPORT_BYTES:
            report.array(f"{tag}/basins", bs.probabilities)
        else:  # compact: basins_owner[s] = the attractor s ends in surely, or -1; then the split rows
            report.array(f"{tag}/basins_owner", bs.owner)
            report.array(f"{tag}/basins_split_states", bs.split)
            report.array(f"{tag}/basins_split_rows", bs.split_probabilities)
        report.array(f"{tag}/attractor_of", cs.attractor_of)
        report.array(f"{tag}/greedy_map", gd.map)
        body = [f"Space: N={n}, L={length}, {space.num_states} states ({space.num_full} full). "
                f"Operator fingerprint `{op.fingerprint}`, max row error {op.max_row_error:.1e}.", "",
                f"**Attractors** ({len(cs.attractors)} closed classes, {cs.transient.size} transient states):", "",
                markdown_table(att_headers, att_rows[:30]), ""]
        fig_names = [report.figure(f"{tag}_stationary_states",
                                   figures.stationary_states_figure(space, _dense_rows(st, 6),
                                                                    title=f"{model_name}, {proc.spec}: top states")),
                     report.figure(f"{tag}_stationary_tokens",
                                   figures.stationary_tokens_figure(space, _dense_rows(st, 8),
                                                                    title=f"{model_name}, {proc.spec}: tokens"))]
        if len(cs.attractors) > 1 and basin_rows:
            body += ["**Basins** from one-token prompts:", "", markdown_table(basin_headers, basin_rows[:20]), ""]
            fig_states = prompts + list(range(min(space.num_full, 24)))
            fig_names.append(report.figure(f"{tag}_basins", figures.basins_figure(
                space, bs.rows(fig_states), fig_states,
                title=f"{model_name}, {proc.spec}: basins")))
        body += [f"Greedy map: {len(gd.cycles)} cycles with periods {sorted(set(gd.periods))}; longest tail {int(gd.tail.max())}.", ""]
        for c in checks:
            rows = [[r.quantity, r.exact, r.estimate, r.se, r.z, r.p_value] for r in c.rows]
            body += [f"**Check: {c.title}** — {c.verdict} ({c.n_tests} tests, "
                     f"min p = {c.min_p:.3g}, Bonferroni threshold {c.threshold:.2e} for family-wise level {c.level}). "
                     f"Method: {c.method}. Settings: `{c.settings}`", "",
                     markdown_table(["quantity", "exact", "sampled", "s.e.", "z", "p"], rows[:40]), ""]
        if checks:
            fig_names.append(report.figure(f"{tag}_exact_vs_sampled", figures.agreement_figure(
                checks, title=f"{model_name}, {proc.spec}: exact vs sampled")))
        body += [" ".join(f"![{f}]({f})" for f in fig_names), ""]
        report.section(f"{model_name} — {proc.spec}", "\n".join(body))
    return summary

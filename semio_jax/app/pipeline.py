"""The main job: model -> operator -> analyses -> sampling -> agreement -> report.

:func:`analyze` runs the whole data flow for one model and one procedure and
adds its tables, numbers, arrays and figures to a :class:`~semio_jax.app.report.Report`.
The CLI's ``analyze``, ``check`` and ``demo`` commands are thin wrappers;
docs/report-format.md documents every key it writes.

Prompts and targets (the CLI's ``--prompt`` and ``--target``) are token lists,
oldest first. A prompt is the state of its last L tokens (a shorter prompt is a
prefix state, which needs a space with prefixes). A target of m <= L tokens is
the set of states (full, and prefix states of at least m tokens) whose last m
tokens are the target ("the text ends with it"): its hitting time from a prompt
is the expected number of generated tokens until the target has just been
written (0 if the prompt already ends with it).
"""

from __future__ import annotations

import re
import sys
import time
from typing import Callable, Sequence

import numpy as np

from . import figures
from ..agreement import check_basins, check_stationary, combined_verdict
from ..analysis import basins_result, class_structure, greedy_dynamics, hitting_times_result, stationary_result
from ..build import build_operator
from ..errors import PromptError
from .prompts import format_tokens
from .report import Report, check_markdown, markdown_table, text_table
from .toolkit import SECTIONS, run_toolkit
from ..core.procedure import parse
from ..core.space import StateSpace

__all__ = ["analyze", "tag_of", "prompt_state", "target_states", "compare_table", "MEMBERS_INLINE", "TOP_STATES"]


#: the report stores stationary laws ([n_attractors, S]) and basins ([S, m]) as dense arrays up to this size,
#: compactly above
DENSE_REPORT_BYTES = 64 * 2**20
#: results.json lists an attractor's members up to this many states; above, only the pointer into arrays.npz
MEMBERS_INLINE = 64
#: results.json lists this many most probable states of each stationary law
TOP_STATES = 10
#: the basins figure shows the prompts and up to this many of the states whose absorption law is most split
BASIN_FIGURE_SPLIT = 16


def _dense_rows(st, k: int) -> np.ndarray:
    """float64[min(k, n_attractors), S]: the first k stationary laws as dense rows (for figures)."""
    return np.stack([st.distribution(a) for a in range(min(k, len(st)))]) if len(st) else np.zeros((0, st.num_states))


def tag_of(spec: str) -> str:
    """A file-name-safe tag for a procedure spec: 'temperature=0.8,top_k=3' -> 'temperature0.8_top_k3'."""
    return re.sub(r"[^A-Za-z0-9_.]+", "", spec.replace(",", "_").replace("=", ""))


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0: a point mass prints 0, not -0


def prompt_state(space: StateSpace, tokens: Sequence[int]) -> int:
    """The state a prompt leaves the model in: its last L tokens (a prefix state if shorter than L)."""
    toks = [int(t) for t in tokens]
    if not toks:
        raise PromptError("a prompt needs at least one token")
    bad = [t for t in toks if not 0 <= t < space.n_tokens]
    if bad:
        raise PromptError(f"prompt {toks} has tokens {bad} outside the alphabet 0..{space.n_tokens - 1}")
    toks = toks[-space.length:]
    if len(toks) < space.length and not space.prefixes:
        raise PromptError(f"prompt {toks} is shorter than L={space.length} and the space has no prefix states; "
                          f"give {space.length} tokens")
    return int(space.index(toks))


def target_states(space: StateSpace, tokens: Sequence[int]) -> np.ndarray:
    """int64[...]: the states (full, and prefix states of >= m tokens) whose last m = len(tokens) tokens are
    ``tokens`` (m <= L), sorted."""
    toks = [int(t) for t in tokens]
    if not toks or len(toks) > space.length:
        raise PromptError(f"a target has 1..L={space.length} tokens, got {toks}")
    bad = [t for t in toks if not 0 <= t < space.n_tokens]
    if bad:
        raise PromptError(f"target {toks} has tokens {bad} outside the alphabet 0..{space.n_tokens - 1}")
    m, n = len(toks), space.n_tokens
    value = 0
    for t in toks:
        value = value * n + t
    found = []
    for k, offset in space.iter_groups():  # every state (full or prefix) of at least m tokens ending with them
        if k >= m:
            found.append(offset + np.flatnonzero(np.arange(n**k, dtype=np.int64) % n**m == value))  # last m digits
    return np.sort(np.concatenate(found))


def _phase(enabled: bool, text: str) -> Callable[[], None]:
    """Announce a long step on stderr (when progress is on); the returned function prints its time."""
    if not enabled:
        return lambda: None
    t0 = time.perf_counter()
    print(f"semio: {text} ...", file=sys.stderr, flush=True)
    return lambda: print(f"semio: {text}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def analyze(model, procedure, *, length: int | None = None, sample: bool = True, seed: int = 0,
            n_chains: int = 64, n_steps: int = 2000, basin_chains: int = 2000, level: float = 0.01,
            report: Report | None = None, echo: Callable[[str], None] = print, model_name: str = "model",
            toolkit=None, prompts: Sequence[Sequence[int]] | None = None, target: Sequence[int] | None = None,
            prefixes: bool = True, progress: bool = False, alphabet: Sequence[str] | None = None) -> dict:
    """Exact analysis of ``model`` under ``procedure``, checked against sampling.

    Returns a JSON-able summary; with ``report`` also records sections, arrays
    and figures under a tag derived from the procedure. ``prompts`` (token
    lists; default the one-token prompts) give the basin table and the
    toolkit's prompt; ``target`` (tokens) adds hitting times from each prompt
    (module docstring). ``prefixes=False`` analyses full states only (a model
    that accepts only full-length contexts). ``progress`` shows a progress bar
    while the model is evaluated and announces each solve on stderr.
    ``alphabet`` prints states as text.
    """
    proc = parse(procedure)
    n = int(model.n_tokens)
    length = int(length or model.context_length)
    space = StateSpace(n, length, prefixes=prefixes)
    label = (lambda s: space.label(int(s), alphabet)) if alphabet is not None else (lambda s: space.label(int(s)))
    prompt_list = [list(map(int, p)) for p in prompts] if prompts else None
    prompt_idx = [prompt_state(space, p) for p in prompt_list] if prompt_list else None  # bad input: before work
    tgt = target_states(space, target) if target is not None else None
    tag = tag_of(f"{model_name}_{proc.spec}")  # unique per (model, procedure) inside one report
    timings = {}

    t0 = time.perf_counter()
    op = build_operator(model, space, proc, progress=progress)
    timings["build_operator_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    done = _phase(progress, f"closed classes, stationary laws, basins and greedy map of {space.num_states} states")
    cs = class_structure(op)
    st = stationary_result(op)
    bs = basins_result(op)
    gd = greedy_dynamics(op)
    done()
    timings["exact_analyses_s"] = time.perf_counter() - t0

    att_rows = []
    for a, members in enumerate(cs.attractors):
        vals = st.values[a]  # pi on the attractor's own states (no dense row per attractor)
        k = int(np.argmax(vals))
        top = int(st.supports[a][k])
        att_rows.append([f"A{a}", int(members.size), int(cs.periods[a]), label(top), float(vals[k]),
                         _entropy(vals), st.methods[a], st.residuals[a],
                         st.error_bounds[a] if st.error_bounds[a] is not None else "n/a"])
    att_headers = ["attractor", "states", "period", "top state", "pi(top)", "H(pi) nats", "method",
                   "residual L1", "error bound L1"]
    if prompt_idx is not None:
        prompts_used, prompt_reason = prompt_idx, "the prompts given"
    else:
        prompts_used, prompt_reason = (list(space.group(1)) if space.prefixes else []), "one-token prompts"
    basin_rows = [[label(s)] + [float(v) for v in bs.rows(s)] for s in prompts_used]
    basin_headers = ["prompt"] + [f"P(->A{a})" for a in range(len(cs.attractors))]

    echo("")
    echo(f"== {model_name} | N={n} L={length} | procedure {proc.spec} | {space.num_states} states "
         f"({space.num_full} full) | built in {timings['build_operator_s']:.2f}s, analysed in {timings['exact_analyses_s']:.2f}s")
    echo(text_table(att_headers, att_rows, title=f"attractors (closed classes): {len(cs.attractors)}; "
                    f"transient states: {cs.transient.size}"))
    if basin_rows and (len(cs.attractors) > 1 or prompt_idx is not None):
        echo(text_table(basin_headers, basin_rows[:16], title=f"basins from {prompt_reason} (exact)"))
    echo(f"greedy map: {len(gd.cycles)} cycles, periods {sorted(set(gd.periods))}, "
         f"longest tail {int(gd.tail.max())}")
    # what each greedy cycle keeps writing: the newest token of each state, in orbit order
    cycle_text = [("" if n <= 10 or alphabet is not None else ",").join(
        str(alphabet[t] if alphabet is not None else t) for t in (int(space.tokens(int(c))[-1]) for c in cyc))
        for cyc in gd.cycles[:10]]
    if alphabet is not None and cycle_text:  # a text model: the repetition loops, as text
        echo("greedy loops (the text each cycle repeats): " + ", ".join(repr(t) for t in cycle_text))

    hitting = None
    if tgt is not None:
        hit = hitting_times_result(op, tgt)
        target_label = ("".join(str(alphabet[t]) for t in target) if alphabet is not None
                        else format_tokens(target, n))
        starts = prompts_used or list(range(min(space.num_states, 16)))
        hitting = {"target": [int(t) for t in target], "label": target_label, "n_target_states": int(tgt.size),
                   "from": [{"state": int(s), "label": label(s), "expected_steps": float(hit.times[s])} for s in starts],
                   "certificate": hit.summary()}
        echo(text_table(["from", "E[steps to target]"], [[label(s), float(hit.times[s])] for s in starts[:16]],
                        title=f"hitting times of the target {target_label} ({tgt.size} states end with it; "
                              f"residual {hit.residual:.1e}, inf = not certain to happen)"))

    checks = []
    if sample:
        t0 = time.perf_counter()
        done = _phase(progress, "sampling checks")
        if any(m.size > 1 for m in cs.attractors):  # single-state attractors have nothing to sample
            checks.append(check_stationary(op, model, n_chains=n_chains, n_steps=n_steps, seed=seed, level=level))
        if len(cs.attractors) > 1:
            checks.append(check_basins(op, model, n_chains=basin_chains, seed=seed, level=level))
        done()
        timings["sampling_and_checks_s"] = time.perf_counter() - t0
        for c in checks:
            echo(c.table(max_rows=8))

    tk = None
    if toolkit:  # True (everything) or a tuple of toolkit section names
        sections = SECTIONS if toolkit is True else tuple(toolkit)
        t0 = time.perf_counter()
        echo("-- toolkit --")
        tk = run_toolkit(op, model, model_name=model_name, seed=seed, sample=sample, level=level,
                         report=report, echo=echo, tag=tag, sections=sections,
                         prompt=prompt_idx[0] if prompt_idx else None, target=tgt)
        timings["toolkit_s"] = time.perf_counter() - t0

    offsets = np.cumsum([0] + [int(m.size) for m in cs.attractors])
    attractors = []
    for a, m in enumerate(cs.attractors):
        entry = {"index": a, "size": int(m.size), "period": int(cs.periods[a]),
                 "members_npz": {"key": f"{tag}/attractor_members", "slice": [int(offsets[a]), int(offsets[a + 1])]}}
        if m.size <= MEMBERS_INLINE:
            entry["members"] = [int(s) for s in m]
            entry["member_labels"] = [label(s) for s in m]
        attractors.append(entry)
    top_states = []
    for a in range(len(cs.attractors)):
        order = np.argsort(-st.values[a], kind="stable")[:TOP_STATES]
        top_states.append([{"state": int(st.supports[a][i]), "label": label(st.supports[a][i]),
                            "pi": float(st.values[a][i])} for i in order])
    summary = {
        "model": model_name, "procedure": proc.spec, "n_tokens": n, "context_length": length,
        "num_states": space.num_states, "num_full_states": space.num_full, "prefixes": space.prefixes,
        "npz_prefix": tag,
        "operator": op.summary(),
        "attractors": attractors,
        "n_transient": int(cs.transient.size),
        "stationary": st.summary(),
        "stationary_top_states": top_states,
        "basins": bs.summary(),
        "basins_from_prompts": {"prompts": prompt_reason,
                                "rows": [{"state": int(s), "label": label(s), "P": [float(v) for v in bs.rows(s)]}
                                         for s in prompts_used]},
        "hitting_target": hitting,
        "greedy": {"n_cycles": len(gd.cycles), "periods": gd.periods[:50],
                   "cycles_preview": [[label(s) for s in c] for c in gd.cycles[:10]],
                   "cycles_text": cycle_text,
                   "max_tail": int(gd.tail.max())},
        "certificates": {
            "operator_max_row_error": op.max_row_error,
            "stationary": [{"attractor": r["attractor"], "method": r["method"], "residual_l1": r["residual_l1"],
                            "error_bound_l1": r["error_bound_l1"]} for r in st.summary()],
            "basins": {k: v for k, v in bs.summary().items() if k in ("residual_inf", "error_bound_inf", "max_row_error")},
            "hitting_target": hitting["certificate"] if hitting else None,
        },
        "checks": [c.to_dict() for c in checks],
        "toolkit": tk,
        "all_checks_passed": all(c.passed for c in checks) and (tk is None or tk["all_checks_passed"]),
        "verdict": (combined_verdict([c.verdict for c in checks] + ([tk["verdict"]] if tk and tk.get("checks") else []))
                    if sample else None),
        "timings": timings,
        "seed": seed,
    }

    if report is not None:
        _record(report, tag, summary, op, cs, st, bs, gd, space, checks, model_name, proc.spec, label,
                att_headers, att_rows, basin_headers, basin_rows, prompts_used, prompt_reason)
    return summary


def _record(report, tag, summary, op, cs, st, bs, gd, space, checks, model_name, spec, label,
            att_headers, att_rows, basin_headers, basin_rows, prompts_used, prompt_reason) -> None:
    """Add one procedure's numbers, arrays, figures and section to ``report`` (keys: docs/report-format.md)."""
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
    report.array(f"{tag}/attractor_members",
                 np.concatenate(cs.attractors) if cs.attractors else np.zeros(0, np.int64))
    report.array(f"{tag}/greedy_map", gd.map)
    n, length = space.n_tokens, space.length
    body = [f"Space: N={n}, L={length}, {space.num_states} states ({space.num_full} full). "
            f"Operator fingerprint `{op.fingerprint}`, max row error {op.max_row_error:.1e}.", "",
            f"**Attractors** ({len(cs.attractors)} closed classes, {cs.transient.size} transient states):", "",
            markdown_table(att_headers, att_rows[:30]), ""]
    fig_names = [report.figure(f"{tag}_stationary_states",
                               figures.stationary_states_figure(space, _dense_rows(st, 6),
                                                                title=f"{model_name}, {spec}: top states")),
                 report.figure(f"{tag}_stationary_tokens",
                               figures.stationary_tokens_figure(space, _dense_rows(st, 8),
                                                                title=f"{model_name}, {spec}: tokens"))]
    if len(cs.attractors) > 1 and basin_rows:
        body += [f"**Basins** from {prompt_reason}:", "", markdown_table(basin_headers, basin_rows[:20]), ""]
        # the prompts, then the states whose fate is most uncertain (largest entropy of the absorption law)
        split = bs.split
        ent = -np.where(bs.split_probabilities > 0, bs.split_probabilities * np.log(
            np.where(bs.split_probabilities > 0, bs.split_probabilities, 1.0)), 0.0).sum(axis=1) if split.size else split
        chosen = [int(s) for s in split[np.argsort(-ent, kind="stable")] if int(s) not in set(prompts_used)]
        fig_states = list(prompts_used[:24]) + chosen[:BASIN_FIGURE_SPLIT]
        fig_names.append(report.figure(f"{tag}_basins", figures.basins_figure(
            space, bs.rows(fig_states), fig_states, title=f"{model_name}, {spec}: basins",
            n_prompts=min(len(prompts_used), 24), prompt_reason=prompt_reason)))
    body += [f"Greedy map: {len(gd.cycles)} cycles with periods {sorted(set(gd.periods))}; longest tail {int(gd.tail.max())}.", ""]
    for c in checks:
        body += [check_markdown(c, max_rows=40), ""]
    if checks:
        fig_names.append(report.figure(f"{tag}_exact_vs_sampled", figures.agreement_figure(
            checks, title=f"{model_name}, {spec}: exact vs sampled")))
    body += [" ".join(f"![{f}]({f})" for f in fig_names), ""]
    report.section(f"{model_name} — {spec}", "\n".join(body))


def compare_table(summaries: Sequence[dict]) -> tuple[list[str], list[list]]:
    """(headers, rows): procedures side by side, one row per analysed procedure."""
    headers = ["procedure", "attractors", "sizes", "periods", "transient", "top state (A0)", "pi(top)",
               "greedy cycles", "checks"]
    rows = []
    for s in summaries:
        sizes = [a["size"] for a in s["attractors"]]
        periods = sorted({a["period"] for a in s["attractors"]})
        top = s["stationary_top_states"][0][0] if s["stationary_top_states"] else None
        rows.append([s["procedure"], len(sizes), " ".join(map(str, sizes[:6])) + (" ..." if len(sizes) > 6 else ""),
                     " ".join(map(str, periods[:6])), s["n_transient"], top["label"] if top else "-",
                     top["pi"] if top else "-", s["greedy"]["n_cycles"],
                     s["verdict"] if s.get("verdict") else "-"])
    return headers, rows

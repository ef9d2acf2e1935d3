"""Figures for reports (matplotlib, headless Agg backend). Each function returns a Figure."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["stationary_states_figure", "stationary_tokens_figure", "basins_figure", "agreement_figure",
           "is_probability_row"]


def stationary_states_figure(space, dists: np.ndarray, top: int = 16, title: str = ""):
    """Bar chart of the most probable states of each attractor's stationary distribution."""
    k = dists.shape[0]
    fig, axes = plt.subplots(k, 1, figsize=(8, 2.4 * k), squeeze=False)
    for a in range(k):
        ax = axes[a, 0]
        pi = dists[a]
        idx = np.argsort(-pi, kind="stable")[:top]
        idx = idx[pi[idx] > 0]
        ax.bar(range(idx.size), pi[idx], color="C0")
        ax.set_xticks(range(idx.size), [space.label(int(s)) for s in idx], rotation=60, fontsize=7)
        ax.set_ylabel(f"A{a}: pi(s)")
        ax.set_xlabel("state (tokens, oldest first)", fontsize=7)
    axes[0, 0].set_title(title or "stationary distribution: most probable states")
    fig.tight_layout()
    return fig


def stationary_tokens_figure(space, dists: np.ndarray, title: str = ""):
    """Grouped bars: the next-token marginal (last token of the window) of each attractor."""
    k, n = dists.shape[0], space.n_tokens
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * n + 2), 3))
    width = 0.8 / max(k, 1)
    for a in range(k):
        tok = dists[a][: space.num_full].reshape(-1, n).sum(axis=0)
        ax.bar(np.arange(n) + a * width, tok, width, label=f"A{a}")
    ax.set_xticks(np.arange(n) + 0.4 - width / 2, [str(t) for t in range(n)])
    ax.set_xlabel("token")
    ax.set_ylabel("stationary frequency")
    ax.set_title(title or "stationary token frequencies")
    if k > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def basins_figure(space, h: np.ndarray, states, title: str = "", n_prompts: int | None = None,
                  prompt_reason: str = "prompts"):
    """Stacked bars: absorption probabilities into each attractor from chosen states.

    h: float64[len(states), m], row i the absorption law from states[i] (``BasinsResult.rows(states)``).
    The first ``n_prompts`` states are the prompts (``prompt_reason`` says which), the rest the
    states whose absorption law is most split (largest entropy); a dotted line separates the two.
    """
    states = list(states)
    if h.shape[0] != len(states):
        raise ValueError(f"h has {h.shape[0]} rows for {len(states)} states; pass BasinsResult.rows(states)")
    m = h.shape[1]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(states) + 2), 3.6))
    bottom = np.zeros(len(states))
    for a in range(m):
        vals = h[:, a]
        ax.bar(range(len(states)), vals, bottom=bottom, label=f"A{a}", color=f"C{a % 10}")
        bottom += vals
    ax.set_xticks(range(len(states)), [space.label(int(s)) for s in states], rotation=60, fontsize=7)
    ax.set_ylabel("P(absorbed in attractor)")
    ax.set_ylim(0, 1.0)
    if n_prompts is not None and 0 < n_prompts < len(states):
        ax.axvline(n_prompts - 0.5, color="k", ls=":", lw=1)
        ax.set_xlabel(f"start state: {prompt_reason} (left of the dotted line), then the states whose "
                      f"absorption is most uncertain", fontsize=7)
    elif n_prompts:
        ax.set_xlabel(f"start state ({prompt_reason})", fontsize=8)
    else:
        ax.set_xlabel("start state (the states whose absorption is most uncertain)", fontsize=8)
    ax.set_title(title or "basins: absorption probabilities")
    if m <= 12:
        ax.legend(fontsize=7, ncol=min(m, 6), loc="upper left", bbox_to_anchor=(1.0, 1.0), title="attractor")
    fig.tight_layout()
    return fig


#: a check row is a probability (plotted exact vs sampled) when its quantity names one: P(...), pi(...),
#: or an absorption probability "s -> A0 by T" / "s -> none by T"
_PROBABILITY = re.compile(r"(^|[\s:])(P|pi)\(| -> (A\d+|none) by \d+$")


def is_probability_row(row) -> bool:
    """Whether an agreement row compares a probability (in [0, 1]); other rows are test statistics
    (chi-square, log-probabilities, entropy rates, expected times, TV distances)."""
    return bool(_PROBABILITY.search(row.quantity)) and 0.0 <= row.exact <= 1.0


def agreement_figure(reports, title: str = ""):
    """Two panels. Left: every tested probability, sampled estimate against exact value with 1.96-s.e.
    error bars, on the diagonal when they agree. Right: the p-value of every test (probabilities and
    statistics alike), per check, with each check's Bonferroni threshold: a test fails below its line."""
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(10, 4.4))
    lo, hi = 1.0, 0.0
    handles = []
    for i, rep in enumerate(reports):
        rows = [r for r in rep.rows if is_probability_row(r)]
        color = f"C{i % 10}"
        if rows:
            ex = np.array([r.exact for r in rows])
            es = np.array([r.estimate for r in rows])
            se = np.array([r.se for r in rows])
            ax.errorbar(ex, es, yerr=1.96 * se, fmt="o", ms=3, color=color, elinewidth=0.8)
            lo, hi = min(lo, ex.min(), es.min()), max(hi, ex.max(), es.max())
        ps = np.array([max(r.p_value, 1e-300) for r in rep.rows])
        x = i + np.linspace(-0.3, 0.3, ps.size) if ps.size > 1 else np.full(ps.size, float(i))  # [len(rows)]
        axp.scatter(x, ps, s=9, color=color)
        axp.hlines(rep.threshold, i - 0.4, i + 0.4, colors=color, linestyles="--", lw=1)
        handles.append(plt.Line2D([], [], color=color, marker="o", ls="", label=f"{i}: {rep.title}"))
    lo, hi = (0.0, 1.0) if hi < lo else (max(0.0, lo - 0.02), min(1.0, hi + 0.02))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("exact probability")
    ax.set_ylabel("sampled frequency (±1.96 s.e.)")
    ax.set_title("probabilities")
    axp.set_yscale("log")
    axp.set_xticks(range(len(reports)), [str(i) for i in range(len(reports))])
    axp.set_xlabel("check (numbered as in the legend)")
    axp.set_ylabel("p-value (dashed: Bonferroni threshold)")
    axp.set_title("every test's p-value")
    fig.suptitle(title or "exact vs sampled")
    fig.legend(handles=handles, loc="lower center", ncol=1, fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.02 - 0.045 * len(handles)))
    fig.tight_layout()
    return fig

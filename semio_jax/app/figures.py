"""Figures for reports (matplotlib, headless Agg backend). Each function returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["stationary_states_figure", "stationary_tokens_figure", "basins_figure", "agreement_figure"]


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


def basins_figure(space, h: np.ndarray, states, title: str = ""):
    """Stacked bars: absorption probabilities into each attractor from chosen states.

    h: float64[len(states), m], row i the absorption law from states[i] (``BasinsResult.rows(states)``).
    """
    states = list(states)
    if h.shape[0] != len(states):
        raise ValueError(f"h has {h.shape[0]} rows for {len(states)} states; pass BasinsResult.rows(states)")
    m = h.shape[1]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(states) + 2), 3.2))
    bottom = np.zeros(len(states))
    for a in range(m):
        vals = h[:, a]
        ax.bar(range(len(states)), vals, bottom=bottom, label=f"A{a}", color=f"C{a % 10}")
        bottom += vals
    ax.set_xticks(range(len(states)), [space.label(int(s)) for s in states], rotation=60, fontsize=7)
    ax.set_ylabel("P(absorbed in attractor)")
    ax.set_ylim(0, 1.0)
    ax.set_title(title or "basins: absorption probabilities")
    if m <= 12:
        ax.legend(fontsize=7, ncol=min(m, 6))
    fig.tight_layout()
    return fig


def agreement_figure(reports, title: str = ""):
    """Sampled estimate vs exact value with 1.96-s.e. error bars, one point per tested quantity."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    lo, hi = 1.0, 0.0
    for i, rep in enumerate(reports):
        ex = np.array([r.exact for r in rep.rows])
        es = np.array([r.estimate for r in rep.rows])
        se = np.array([r.se for r in rep.rows])
        if ex.size == 0:
            continue
        ax.errorbar(ex, es, yerr=1.96 * se, fmt="o", ms=3, color=f"C{i}", label=rep.title[:40])
        lo, hi = min(lo, ex.min(), es.min()), max(hi, ex.max(), es.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("exact")
    ax.set_ylabel("sampled (±1.96 s.e.)")
    ax.set_title(title or "exact vs sampled")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig

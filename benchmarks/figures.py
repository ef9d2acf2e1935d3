"""Log-log figures of the benchmarks (matplotlib, Agg backend), saved as PNG in benchmarks/results/.

Each benchmark script calls its function here at the end of its run, with the
raw records it also writes as JSON next to its table; this module can also
redraw every figure from those JSON files without re-running anything:

  python benchmarks/figures.py          # build.png and solve.png from build_raw.json / solve_raw.json
                                        # (solve.png adds solve_lu16_raw.json as open markers when present)

* ``build_figure``: operator build time vs number of states, plain vs
  shared-prefix evaluation, one line per (method, alphabet size N).
* ``solve_figure``: solve CPU time vs number of states, one panel per chain
  (stationary: fast and slow; absorption), one line per peer; runs that did not
  finish are drawn as crosses at the time limit; runs of the supplementary
  invocation with a longer limit (solve_lu16_raw.json) as open markers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def build_figure(records: list[dict], path: Path | None = None) -> Path:
    """records: dicts with keys n_tokens, states, plain_s, prefix_s."""
    plt = _plt()
    path = Path(path or RESULTS / "build.png")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for n in sorted({r["n_tokens"] for r in records}):
        rs = sorted((r for r in records if r["n_tokens"] == n), key=lambda r: r["states"])
        xs = [r["states"] for r in rs]
        ax.loglog(xs, [r["plain_s"] for r in rs], "o--", label=f"plain, N={n}")
        ax.loglog(xs, [r["prefix_s"] for r in rs], "s-", label=f"shared prefix, N={n}")
    ax.set_xlabel("number of states (full + prefix)")
    ax.set_ylabel("build time [s] (second run, compile excluded)")
    ax.set_title("Operator build: random 2-layer d_model=32 transformer")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_PANELS = [("pi", "fast", "stationary, fast-mixing chain"),
           ("pi", "slow", "stationary, slowly mixing chain"),
           ("h", "absorb", "absorption (3 attractors)")]


def solve_figure(records: list[dict], limit: float, path: Path | None = None,
                 extra: list[dict] | None = None, extra_label: str = "") -> Path | None:
    """records: dicts with keys problem, chain, states, peer, status, solve_cpu_s (CPU seconds of the solve).
    None (and no file) when no record belongs to a drawn chain (fast, slow, absorb).

    ``extra``: finished runs of a supplementary invocation (e.g. with a longer limit), drawn as open markers.
    """
    plt = _plt()
    path = Path(path or RESULTS / "solve.png")
    extra = [r for r in (extra or []) if r["status"] == "ok"]
    everything = records + extra
    panels = [p for p in _PANELS if any(r["problem"] == p[0] and r["chain"] == p[1] for r in everything)]
    if not panels:  # none of the drawn chains ran: no figure
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.0), squeeze=False)
    peers = sorted({r["peer"] for r in everything})
    palette = list(plt.get_cmap("tab10").colors) + ["black", "navy", "lime", "magenta"]
    color = {p: palette[i % len(palette)] for i, p in enumerate(peers)}
    fmt = {p: "o-" if p.startswith("semio") else "s--" if p.startswith("storm") else "^:" for p in peers}
    for ax, (problem, chain, title) in zip(axes[0], panels):
        rs = [r for r in records if r["problem"] == problem and r["chain"] == chain]
        for peer in peers:
            pr = sorted((r for r in rs if r["peer"] == peer), key=lambda r: r["states"])
            ok = [r for r in pr if r["status"] == "ok"]
            dnf = [r for r in pr if r["status"] in ("DNF", "OOM")]
            if ok:
                ax.loglog([r["states"] for r in ok], [r["solve_cpu_s"] for r in ok], fmt[peer], color=color[peer],
                          label=peer, ms=4)
            if dnf:
                ax.loglog([r["states"] for r in dnf], [limit] * len(dnf), "x", color=color[peer], ms=9, mew=2,
                          label=None if ok else f"{peer} (DNF)")
            more = [r for r in extra if r["problem"] == problem and r["chain"] == chain and r["peer"] == peer]
            if more:
                ax.loglog([r["states"] for r in more], [r["solve_cpu_s"] for r in more], fmt[peer][0],
                          mfc="none", color=color[peer], ms=9, mew=1.5,
                          label=None if (ok or dnf) else f"{peer}{extra_label}")
        ax.axhline(limit, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of states S = 2^L")
        ax.set_ylabel("solve CPU time [s]")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    sub = f"; open markers: {extra_label.strip(' ()')}" if extra else ""
    fig.suptitle(f"Solve CPU time vs states (x = did not finish within {limit:g} CPU s{sub})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> int:
    done = []
    build = RESULTS / "build_raw.json"
    if build.exists():
        done.append(build_figure(json.loads(build.read_text())["records"]))
    solve = RESULTS / "solve_raw.json"
    if solve.exists():
        raw = json.loads(solve.read_text())
        lu16 = RESULTS / "solve_lu16_raw.json"  # the direct solvers at 2^16 with a longer limit, if run
        extra = json.loads(lu16.read_text()) if lu16.exists() else None
        done.append(solve_figure(raw["records"], raw["limit_s"], extra=extra["records"] if extra else None,
                                 extra_label=f" (limit {extra['limit_s']:g} CPU s)" if extra else ""))
    for p in done:
        print(f"written {p}")
    if not done:
        print("no raw results found (run bench_build.py / bench_solve.py first)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

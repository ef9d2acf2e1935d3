"""The tables of benchmarks/bench_solve.py: one row per run, the notes under the table, the numerical
reference per chain and the summary (Storm's fastest setting within WITHIN of pi* against semio-auto).

A record is the dict bench_solve.py builds per (chain, size, peer): problem, chain, L, peer, status,
solve_cpu_s, residual, error (exact reference), error_le (bound through semio-auto), dist_ref
(L1 distance to the numerical reference), within (see :func:`within`), ...
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REF_TOLS = (1e-15, 3e-15, 1e-14, 3e-14)  # residual targets tried, in order, for the numerical reference
WITHIN = 1e-10  # the accuracy a peer must reach to count in the summary (L1 distance to pi*)


def fmt(x, spec):
    return "-" if x is None else format(x, spec)



def within(rec: dict) -> bool | None:
    """Whether the peer's pi lands within WITHIN of pi*: by the exact error, else by the distance to pi_ref."""
    d = rec.get("error") if rec.get("error") is not None else rec.get("dist_ref")
    return None if d is None else bool(d <= WITHIN)


def row(rec: dict) -> list:
    plus = (rec["rss_peak_mib"] - rec["rss_setup_mib"]) if rec.get("rss_setup_mib") is not None else None
    frac = (rec["bw_bound_s"] / rec["solve_cpu_s"]) if rec.get("bw_bound_s") and rec.get("solve_cpu_s") else None
    err = (fmt(rec.get("error"), ".1e") if rec.get("error") is not None
           else f"<= {rec['error_le']:.1e}" if rec.get("error_le") is not None else "-")
    return [rec["problem"], rec["chain"], rec.get("n_tokens", 2), f"2^{rec['L']}", rec["peer"], rec["status"],
            fmt(rec.get("setup_s"), ".2f"), fmt(rec.get("solve_s"), ".3g"), fmt(rec.get("solve_cpu_s"), ".3g"),
            fmt(rec.get("matvecs"), "d"), fmt(rec.get("bw_bound_s"), ".2g"), fmt(frac, ".0%"),
            fmt(rec.get("residual"), ".1e"), err, fmt(rec.get("dist_ref"), ".1e"),
            "-" if rec.get("within") is None else ("yes" if rec["within"] else "no"),
            fmt(rec.get("rss_peak_mib"), ".0f") if rec["status"] in ("ok", "DNF", "OOM") else "-",
            fmt(plus, ".0f"), fmt(plus / rec["table_mib"] if plus is not None and rec.get("table_mib") else None, ".2f"),
            rec.get("note", "")]


def reference_notes(references: list[dict]) -> str:
    """One line per chain and size: how pi_ref was computed and how good it is."""
    if not references:
        return ""
    lines = [f"Numerical reference pi_ref per chain (sj.stationary_result(op, method='krylov', tol=T), the smallest "
             f"T of {', '.join(f'{t:g}' for t in REF_TOLS)} that converges; computed in the parent, not timed "
             f"against anyone). 'within {WITHIN:.0e}' on a chain without an exact reference is an estimate from "
             f"'dist to ref': pi_ref's residual is ~1e-15, but its certified bound (4 tau_j x residual) is looser:"]
    for r in references:
        if "error" in r:
            lines.append(f"- {r['chain']} 2^{r['L']}: no reference ({r['error']})")
            continue
        ex = f", exact error {r['exact_error']:.1e}" if r.get("exact_error") is not None else ""
        lines.append(f"- {r['chain']} 2^{r['L']}: tol {r['tol']:g}, residual {r['residual']:.1e}, certified bound "
                     + (f"{r['bound']:.1e}" if r.get("bound") is not None else "none")
                     + f"{ex}, {r['cpu_s']:.1f} CPU s")
    return "\n".join(lines)


def summary(records: list[dict]) -> str:
    """Per chain and size: Storm's fastest setting within WITHIN and its CPU time over semio-auto's."""
    lines = [f"Summary: per chain, the fastest Storm setting (solve CPU s) whose 'within {WITHIN:.0e}' is yes, and "
             "speed-up = storm_cpu / semio_cpu (semio-auto's solve CPU s; > 1: semio-auto is faster):"]
    keys = list(dict.fromkeys((r["chain"], r["L"]) for r in records if r["problem"] == "pi"))
    for chain, length in keys:
        recs = [r for r in records if r["problem"] == "pi" and r["chain"] == chain and r["L"] == length
                and r["status"] == "ok"]
        storm = [r for r in recs if r["peer"].startswith("storm-") and r.get("within")]
        semio = next((r for r in recs if r["peer"] == "semio-auto"), None)
        semio_txt = (f"semio-auto {semio['solve_cpu_s']:.3g} CPU s (within {WITHIN:.0e}: "
                     f"{'yes' if semio.get('within') else 'no' if semio.get('within') is not None else '-'})"
                     if semio else "semio-auto not run")
        if not storm:
            lines.append(f"- {chain} 2^{length}: no Storm setting within {WITHIN:.0e}; {semio_txt}")
            continue
        best = min(storm, key=lambda r: r["solve_cpu_s"])
        d = best["error"] if best.get("error") is not None else best.get("dist_ref")
        ratio = (f"; speed-up {best['solve_cpu_s'] / semio['solve_cpu_s']:.2f}x"
                 if semio and semio["solve_cpu_s"] > 0 else "")
        lines.append(f"- {chain} 2^{length}: {best['peer']} {best['solve_cpu_s']:.3g} CPU s (distance {d:.1e}); "
                     f"{semio_txt}{ratio}")
    return "\n".join(lines)


def notes(limit, mem_gib, methods, env_desc, fig, extra: bool = False, bandwidth: float | None = None,
          threads: int = 1, wall_factor: float = 6) -> str:
    lines = ([f"Figure: `{fig.relative_to(REPO)}` (log-log solve CPU time vs states, one panel per chain; "
              "crosses: did not finish"
              + ("; open markers: the direct solvers at 2^16 from benchmarks/results/solve_lu16.md, run with a "
                 "longer limit" if extra else "") + ").", ""] if fig is not None else
             ["No figure: it draws the fast, slow and absorb chains only.", ""]) + [
             "Chains, peers and protocol: see the docstring of benchmarks/bench_solve.py. In short: "
             "fast = order-L n-gram with N(0,1) logits at temperature 1; slow = order-4 n-gram (seed 27) at "
             "temperature 0.25; absorb = slow with 0000->0, 1111->1, 0101->0, 1010->1 forced (3 attractors). "
             "semio-basins uses sparse LU up to 8192 undetermined states (2^12 here) and GMRES above. "
             "Model evaluation is excluded for everyone; 'setup s' is each peer's own data-structure "
             "construction (for Storm: SparseMatrixBuilder + labelling + SparseDtmc), 'solve s' the solve.",
             "",
             f"semio_jax methods found in stationary_result's docstring: {', '.join(methods)} (auto dispatches to "
             "these); semio-sharded-gmres is semio_jax.sharding.stationary_sharded(method='gmres') on one CPU "
             "device (its JIT compilation, about 2 CPU s, is inside its solve time). Storm settings as read back "
             "from the environment objects (storm-lu: Eigen then uses its direct SparseLU because soundness is "
             "forced; storm-iter/evt: the TOPOLOGICAL solver's underlying solver is Storm's default gmm++):"]
    for peer, desc in sorted(env_desc.items()):
        lines.append(f"- `{peer}`: {desc}")
    lines += ["",
              "residual: ||pi P - pi||_1 (pi) or max_i ||P h_i - h_i||_inf (h), evaluated here with the float64 "
              "operator on the vector as returned. error vs exact: ||pi - pi*||_1 or max|h - h*| against the "
              "exact lumped 4-gram reference (slow, absorb); '-' where there is none (fast).",
              f"Each run is a separate process; DNF = the solve did not finish within {limit:g} s of CPU time (or "
              f"{wall_factor * limit:g} s wall); OOM = RSS above "
              f"{mem_gib:g} GiB; after either (or a failure) the peer's larger sizes are skipped. 'peak MiB' = the "
              "process's peak RSS (imports and the loaded table included); '+MiB' = what the solve added.",
              f"matvecs: structured products the semio solve used (power steps, GMRES and hitting-time "
              f"products); 'bw bound s' = matvecs x 8 (N + 2) S bytes (the table once, one vector in and one "
              f"out) / the copy bandwidth measured by this run ({(bandwidth or 0) / 1e9:.1f} GB/s, np.copyto of "
              f"256 MiB, read + write): the time the products alone need at the memory-bandwidth limit; "
              f"'of CPU s' = that bound / the solve's CPU time. '+MiB / table' = the solve's added RSS over the "
              f"float64 probability table (8 N S bytes). 'error vs exact' shows '<= x' where no exact reference "
              f"exists: ||pi - pi_auto||_1 + semio-auto's certified bound, a rigorous bound on the error.",
              "Timings: 'solve s' is wall clock, 'solve CPU s' the process's CPU time (all threads) during the "
              "solve. The machine's 2 cores are shared with other jobs, so wall times carry their load; compare "
              "peers by CPU time (the figure plots it) and only within this table. "
              + (f"Every worker ran with OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = MKL_NUM_THREADS = {threads} "
                 "(--threads; Storm is single-threaded, and a threaded BLAS on these memory-bound solves only "
                 "adds CPU time); JAX's own thread pool is not limited by these." if threads > 0 else
                 "Workers ran with the BLAS/OpenMP thread settings inherited from the shell (--threads 0)."),
              f"dist to ref: ||pi - pi_ref||_1 against the numerical reference below. within {WITHIN:.0e}: yes if "
              f"the peer's pi is within {WITHIN:.0e} (L1) of pi*, judged by 'error vs exact' where an exact "
              "reference exists (slow, slow4), otherwise by 'dist to ref' (an estimate, see below)."]
    return "\n".join(lines)


def median_run(runs: list[dict]) -> dict:
    """The run of median solve CPU time (the lower middle for an even count) if every run succeeded;
    otherwise the first failed run: a peer that fails in any round is reported as failing."""
    if not runs:
        raise ValueError("no runs to summarise")
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        return failed[0]
    ok = sorted(runs, key=lambda r: r["solve_cpu_s"])
    return ok[(len(ok) - 1) // 2]

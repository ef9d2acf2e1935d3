"""Large alphabets: build, classes, stationary laws and basins at N = 16 and N = 27-32.

Question: with 2^19 to 2^22 full states over alphabets of 16 to 32 tokens, how long
does each phase of the exact pipeline take, and how much memory does each add over
the probability table?

Each case (N, L) runs in its own process (``--worker``), so peaks do not mix:

  model      a case NxL: a random transformer of the zoo architecture (2 layers, d_model 32,
             2 heads, TransformerModel.random with ``--seed``), weights x ``--scale`` so that its
             next-token laws are peaked like a trained model's (as bench_end_to_end.py);
             a case zoo:NAME: that trained zoo model as shipped (``pydoc``: the real-language
             character model, N=27, L=4), its own N and L;
  build      sj.build_operator(model, StateSpace(N, L), procedure): the shared-prefix
             evaluation, compile included (what a user waits for);
  classes    sj.class_structure(op);
  stationary sj.stationary_result(op) (auto: every attractor, certified);
  basins     sj.basins_result(op) (absorption probabilities of every state).

Per phase: wall and CPU seconds (process CPU time, all threads), and the peak RSS the
phase added above the RSS at its start ("+MiB"; the kernel's peak counter is reset
before each phase through /proc/self/clear_refs), also in units of the float64
probability table (8 N S bytes, S = all states with prefixes).

Usage:
  python benchmarks/bench_alphabets.py                        # N=16 L=5, N=32 L=4, N=27 L=4 (2^19.0-2^20)
  python benchmarks/bench_alphabets.py --cases 16x5,32x4 --procedure top_k=2
  python benchmarks/bench_alphabets.py --cases 16x6          # 2^24: far beyond a 2-core machine's minutes
  python benchmarks/bench_alphabets.py --cases 16x5,zoo:pydoc # a random and a trained model
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import proc_status_mib, reset_peak_rss  # noqa: E402


def parse_case(case: str) -> tuple[str, int | None, int | None]:
    """("random", N, L) for "NxL", ("zoo", None, None) for "zoo:NAME"; ValueError otherwise."""
    if case.startswith("zoo:") and case[4:]:
        return "zoo", None, None
    try:
        n, length = (int(x) for x in case.split("x"))
    except ValueError:
        raise ValueError(f"case {case!r}: write NxL (e.g. 16x5) or zoo:NAME (e.g. zoo:pydoc)") from None
    return "random", n, length


def load_model(case: str, scale: float, seed: int):
    """The case's TransformerModel (see the module docstring)."""
    import jax

    from semio_models.checkpoint import load
    from semio_models.transformer import TransformerConfig, TransformerModel

    kind, n, length = parse_case(case)
    if kind == "zoo":
        return load(case[4:])
    cfg = TransformerConfig(n_tokens=n, context_length=length, n_layers=2, d_model=32, n_heads=2)
    base = TransformerModel.random(cfg, seed=seed)
    params = jax.tree_util.tree_map(lambda a: a * scale if a.ndim == 2 else a, base.params)
    return TransformerModel(cfg, params)


def worker(case: str, procedure: str, scale: float, seed: int) -> dict:
    import semio_jax as sj

    model = load_model(case, scale, seed)
    n, length = model.config.n_tokens, model.config.context_length
    space = sj.StateSpace(n, length)
    phases = []
    state = {}

    def phase(name, fn, describe):
        reset = reset_peak_rss()
        rss0 = proc_status_mib("VmRSS")
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        rec = {"phase": name, "wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
               "added_mib": (proc_status_mib("VmHWM") - rss0) if reset else None, "what": describe(out)}
        phases.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)
        return out

    op = phase("build", lambda: sj.build_operator(model, space, procedure),
               lambda o: f"{space.num_states:,} states, max row error {o.max_row_error:.1e}")
    state["table_mib"] = op.probs.nbytes / 2**20
    cs = phase("classes", lambda: sj.class_structure(op),
               lambda c: f"{len(c.attractors)} attractors (largest {sorted((a.size for a in c.attractors), reverse=True)[:3]}), "
                         f"{c.transient.size:,} transient")
    phase("stationary", lambda: sj.stationary_result(op),
          lambda r: f"methods {sorted(set(r.methods))}; max residual {max(r.residuals):.1e}; "
                    f"max bound {max((b for b in r.error_bounds if b is not None), default=float('nan')):.1e}; "
                    f"{sum(b is not None for b in r.error_bounds)}/{len(r.error_bounds)} certified")
    phase("basins", lambda: sj.basins_result(op),
          lambda b: f"{b.n_solved:,} states solved; bound {b.error_bound:.1e}")
    del cs
    return {"case": case, "n": n, "length": length, "states": space.num_states, "full": space.num_full,
            "table_mib": state["table_mib"], "phases": phases, "peak_rss_mib": proc_status_mib("VmHWM")}


def _label(rec: dict) -> str:
    where = rec.get("case", "")
    return f"N={rec['n']} L={rec['length']}" + (f" ({where})" if where.startswith("zoo:") else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--cases", default="16x5,32x4,27x4",
                    help="comma-separated NxL (random transformer) or zoo:NAME (a shipped trained model); "
                         "default 16x5,32x4,27x4")
    ap.add_argument("--procedure", default="top_k=2", help="sampling procedure (default top_k=2)")
    ap.add_argument("--scale", type=float, default=20.0, help="factor on the random weights (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="alphabets")
    args = ap.parse_args(argv)
    if args.worker:
        rec = worker(args.worker[0], args.procedure, args.scale, args.seed)
        Path(args.worker[1]).write_text(json.dumps(rec))
        return 0
    try:
        for case in args.cases.split(","):
            parse_case(case)
    except ValueError as e:
        ap.error(str(e))

    from _common import RESULTS, write_table

    rows, records = [], []
    for case in args.cases.split(","):
        out = Path(f"/tmp/bench_alphabets_{case.replace(':', '_')}.json")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, str(out),
               "--procedure", args.procedure, "--scale", str(args.scale), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append([case, "-", "failed", "-", "-", "-", "-", proc.stderr.strip().splitlines()[-1][:120]])
            continue
        rec = json.loads(out.read_text())
        out.unlink()
        records.append(rec)
        for p in rec["phases"]:
            rows.append([_label(rec), f"{rec['full']:,} (2^{np.log2(rec['full']):.1f})",
                         p["phase"], f"{p['wall_s']:.2f}", f"{p['cpu_s']:.2f}",
                         "-" if p["added_mib"] is None else f"{p['added_mib']:.0f}",
                         "-" if p["added_mib"] is None else f"{p['added_mib'] / rec['table_mib']:.2f}", p["what"]])
            print(rows[-1], flush=True)
        rows.append([_label(rec), "", "process peak RSS", "", "", f"{rec['peak_rss_mib']:.0f}",
                     f"table {rec['table_mib']:.0f} MiB", f"{rec['states']:,} states with prefixes"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}_raw.json").write_text(json.dumps({"records": records}, indent=1))
    write_table(args.name, ["case", "full states", "phase", "wall s", "CPU s", "+MiB", "+MiB / table", "result"], rows,
                title=f"Large alphabets: random transformers (x{args.scale:g}, seed {args.seed}) and zoo models, "
                      f"{args.procedure}",
                notes="CPU s: the process's CPU time in the phase (all threads). The machine's 2 cores were shared "
                      "with other agents' jobs, so wall times carry their load. +MiB: peak RSS the phase added over "
                      "its starting RSS (/proc/self/clear_refs reset before each phase); +MiB / table: the same in "
                      "units of the float64 probability table (8 N S bytes). Build includes JAX compilation.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

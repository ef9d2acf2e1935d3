"""End to end at 2^20 full states: build + classes + stationary + basins under top-k.

Question: can one run the whole exact pipeline on a chain with N^L = 2^20 full
states (plus its prefix states) within 5 minutes on 2 CPU cores?

The model is a random transformer of the default zoo architecture (2 layers,
d_model 32, 2 heads) whose weights are scaled up (``--scale``) so that its
next-token distributions are peaked like a trained model's rather than nearly
uniform; the procedure is top-k. Each phase is timed on its own (compile
included: this is what a user waits for), and every analysis reports its
residual, so the table says what was reached as well as how fast.

Memory, per phase: the process's resident memory when the phase starts, and the
most the phase held above that (the kernel's high-water mark, reset at the start of
each phase through /proc/self/clear_refs), both also in units of the float64
probability table (8 N S bytes) that the phases share. The memory a phase keeps (the
operator, the cached class structure and laws) is still resident when the next one
starts. Where the kernel does not offer the reset, the per-phase peaks show "-".

Usage:
  python benchmarks/bench_end_to_end.py                  # N=4, L=10, top_k=2
  python benchmarks/bench_end_to_end.py --procedure top_p=0.9 --seed 2   # several attractors
  python benchmarks/bench_end_to_end.py --n 4 --length 6                # a quick look
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import proc_status_mib, reset_peak_rss, write_table  # noqa: E402

import jax  # noqa: E402

import semio_jax as sj  # noqa: E402
from semio_models.transformer import TransformerConfig, TransformerModel  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="alphabet size N (default 4)")
    ap.add_argument("--length", type=int, default=10, help="context length L (default 10: 4^10 = 2^20)")
    ap.add_argument("--procedure", default="top_k=2", help="the sampling procedure (default top_k=2)")
    ap.add_argument("--scale", type=float, default=20.0, help="factor on the random weights (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    cfg = TransformerConfig(n_tokens=args.n, context_length=args.length, n_layers=2, d_model=32, n_heads=2)
    base = TransformerModel.random(cfg, seed=args.seed)
    params = jax.tree_util.tree_map(lambda a: a * args.scale if a.ndim == 2 else a, base.params)
    model = TransformerModel(cfg, params)
    space = sj.StateSpace(args.n, args.length)
    spec = args.procedure
    rows = []
    t_all, c_all = time.perf_counter(), time.process_time()
    base_rss = proc_status_mib("VmRSS")
    clock = {}

    table = {"mib": None}  # the float64 probability table, once built

    def started():
        clock["reset"] = reset_peak_rss()
        clock["rss"] = proc_status_mib("VmRSS")
        clock["wall"], clock["cpu"] = time.perf_counter(), time.process_time()

    def in_tables(mib: float | None) -> str:
        if mib is None:
            return "-"
        return f"{mib:,.0f}" + (f" ({mib / table['mib']:.2f})" if table["mib"] else "")

    def lap() -> list:
        times = [f"{time.perf_counter() - clock['wall']:.1f}", f"{time.process_time() - clock['cpu']:.1f}"]
        hwm = proc_status_mib("VmHWM") if clock["reset"] else None
        added = None if hwm is None or clock["rss"] is None else max(hwm - clock["rss"], 0.0)
        return times + [in_tables(clock["rss"]), in_tables(added)]

    started()
    op = sj.build_operator(model, space, spec)
    table["mib"] = op.probs.nbytes / 2**20
    rows.append(["build (shared prefix, compile included)", *lap(),
                 f"{space.num_states:,} states", f"max row-sum error {op.max_row_error:.1e}"])
    print(rows[-1], flush=True)

    started()
    cs = sj.class_structure(op)
    sizes = sorted((a.size for a in cs.attractors), reverse=True)
    rows.append(["classes", *lap(),
                 f"{len(cs.attractors)} attractors (largest {sizes[:5]}), {cs.transient.size:,} transient", ""])
    print(rows[-1], flush=True)

    started()
    st = sj.stationary_result(op)
    resid = max(st.residuals) if st.residuals else 0.0
    certified = sum(b is not None for b in st.error_bounds)
    rows.append(["stationary (every attractor)", *lap(),
                 f"methods {sorted(set(st.methods))}",
                 f"max L1 residual {resid:.1e}; {certified}/{len(st.error_bounds)} certified"])
    print(rows[-1], flush=True)

    started()
    bs = sj.basins_result(op)
    rows.append(["basins (absorption probabilities)", *lap(),
                 f"{bs.n_solved:,} states solved", f"residual (inf) {bs.residual:.1e}, bound {bs.error_bound:.1e}"])
    print(rows[-1], flush=True)

    rows.append(["total", f"{time.perf_counter() - t_all:.1f}", f"{time.process_time() - c_all:.1f}",
                 f"{base_rss:,.0f}" if base_rss is not None else "-", "-",
                 f"peak RSS {peak_rss_mb():,.0f} MiB", "target: under 300 s"])
    name = f"end_to_end_N{args.n}_L{args.length}_" + spec.replace("=", "").replace(",", "_")
    write_table(name, ["phase", "wall s", "CPU s", "RSS at start MiB (tables)", "phase adds at peak MiB (tables)",
                       "size", "accuracy"], rows,
                title=f"End to end: N={args.n}, L={args.length} ({args.n ** args.length:,} full states), "
                      f"{spec}, random transformer (seed {args.seed}) with weights x{args.scale:g}",
                notes="CPU s: process CPU time (user + system) of the phase; on a machine shared with other "
                      "jobs it is the better guide to what a quiet machine would take. "
                      f"Memory: 'tables' are units of the float64 probability table ({table['mib']:.1f} MiB: "
                      f"8 N bytes for each of the {space.num_states:,} states, prefixes included). "
                      "'RSS at start' is the process's resident memory as the phase starts (the total row: before "
                      "the build, with the model and the libraries loaded); 'phase adds at peak' is its "
                      "high-water mark above that, reset at the start of each phase (/proc/self/clear_refs). "
                      "The build's peak includes JAX's compiled walk and its buffers.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

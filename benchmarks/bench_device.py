"""The structured matvec, a power solve and the shared-prefix build on one accelerator (or the CPU).

Question: on the device JAX runs on (a GPU when one is present), how fast are
the products x P and P f on N^L full states, what fraction of the device's
memory bandwidth do they reach, how long does a stationary solve to 1e-12 take
there, and how many states per second does the shared-prefix build evaluate?

    python benchmarks/bench_device.py                     # GPU: N=2, L=24 (2^24 states); CPU: L=20
    python benchmarks/bench_device.py --length 16 --build-length 12    # a quick run

Workloads (one device: jax.devices()[0]; every timing is a median over
``--repeats`` runs of compiled code, after one warm-up):

  push / pull   the fast chain of bench_solve.py (order-L n-gram, N(0,1) logits, seed 0,
                temperature 1; StateSpace(N, L, prefixes=False)) as a float64 table on the
                device; x P and P f as a reshape-and-contract over the (N,)*L index
                (``jnp.einsum("am,amy->my")`` / ``("amy,my->am")``), the form the issue asks
                for. Bytes moved per product: the table (8 N S) plus one vector read and one
                written (16 S); "GB/s" = those bytes / time, and "of peak" divides by the
                device's memory bandwidth when it is known (``--peak-gbs``, or the table
                PEAK_GBS by device kind) - a lower bound on the traffic, so an upper bound on
                nothing: it says how close the kernel runs to streaming the table once.
  power         lazy power iteration pi <- (pi + pi P) / 2 from the uniform law to an L1
                residual of 1e-12, in one ``lax.while_loop`` on the device; the residual is
                then recomputed on the host with the float64 Operator.
  build         TransformerModel.prefix_tree_logits on a random 2-layer d_model=32 transformer
                (the zoo architecture) with N tokens and --build-length, every context of
                length 1..L (prefix states included); blocks of --chunk nodes; states/s
                over the second run (the first compiles).

On the CPU this is a smoke test of the same code; the numbers the issue asks for
(2^24 states, fraction of bandwidth) come from a GPU run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time, write_table  # noqa: E402

#: memory bandwidth in GB/s by jax device_kind (vendor data sheets); --peak-gbs overrides
PEAK_GBS = {
    "NVIDIA H100 80GB HBM3": 3350.0,  # SXM
    "NVIDIA H100 PCIe": 2000.0,
    "NVIDIA H200": 4800.0,
    "NVIDIA A100-SXM4-80GB": 2039.0,
    "NVIDIA A100-SXM4-40GB": 1555.0,
}


def main(argv=None) -> int:
    import jax

    on_gpu = jax.default_backend() == "gpu"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2, help="alphabet size N (default 2)")
    ap.add_argument("--length", type=int, default=24 if on_gpu else 20, help="L of the matvec chain (N^L states)")
    ap.add_argument("--build-length", type=int, default=24 if on_gpu else 16, help="L of the build (0: skip)")
    ap.add_argument("--chunk", type=int, default=2**16 if on_gpu else 4096, help="nodes per block of the walk")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--peak-gbs", type=float, default=None, help="the device's memory bandwidth in GB/s")
    args = ap.parse_args(argv)

    import jax.numpy as jnp

    import semio_jax as sj
    from semio_models.transformer import TransformerConfig, TransformerModel

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", str(dev))
    peak = args.peak_gbs if args.peak_gbs is not None else PEAK_GBS.get(kind)
    n, length = args.n, args.length
    s = n**length
    rows = []

    # ---- the chain, built on the host exactly as bench_solve.py's "fast" chain
    table = np.random.default_rng(0).normal(size=(n,) * (length + 1))
    op = sj.build_operator(sj.NGramModel(table, name=f"random-order-{length}"),
                           sj.StateSpace(n, length, prefixes=False), "temperature=1")
    p3 = jax.device_put(jnp.asarray(op.probs.reshape(n, s // n, n)), dev)  # [a, m, y]: state a*M + m -> m*N + y
    # the table is an argument, not a closure: the host frees it below (del p3) while the jitted
    # functions stay valid, and no compiled constant of S N floats is baked into them
    push_p = jax.jit(lambda x, p: jnp.einsum("am,amy->my", x.reshape(n, s // n), p).reshape(-1))
    pull_p = jax.jit(lambda f, p: jnp.einsum("amy,my->am", p, f.reshape(s // n, n)).reshape(-1))
    x = jax.device_put(jnp.asarray(np.random.default_rng(1).random(s)), dev)
    np.testing.assert_allclose(np.asarray(push_p(x, p3)), op.push(np.asarray(x)), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(np.asarray(pull_p(x, p3)), op.pull(np.asarray(x)), rtol=1e-12, atol=1e-300)
    nbytes = 8 * s * (n + 2)
    for name, fn in (("push x P", push_p), ("pull P f", pull_p)):
        t = median_time(lambda: fn(x, p3).block_until_ready(), args.repeats)
        gbs = nbytes / t / 1e9
        rows.append([name, f"{n}^{length} = {s:,} states", f"{1e3 * t:.3g} ms",
                     f"{gbs:.1f} GB/s" + (f" ({gbs / peak:.0%} of {peak:g})" if peak else " (peak unknown)"),
                     f"{nbytes / 2**20:.3g} MiB moved per product"])
        print(rows[-1], flush=True)

    # ---- power iteration to 1e-12 on the device
    def power(v, p, tol=1e-12, max_iter=10_000):
        def cond(c):
            return (c[1] > tol) & (c[2] < max_iter)

        def body(c):
            v, _, it = c
            w = push_p(v, p)
            return 0.5 * (v + w), jnp.abs(w - v).sum(), it + 1

        v, res, it = jax.lax.while_loop(cond, body, (v, jnp.inf, 0))
        return v / v.sum(), it

    power_j = jax.jit(power)
    v0 = jax.device_put(jnp.full(s, 1.0 / s), dev)
    out = {}

    def solve():
        out["pi"], out["it"] = power_j(v0, p3)
        out["pi"].block_until_ready()

    t = median_time(solve, max(1, args.repeats // 10))
    pi = np.asarray(out["pi"])
    resid = float(np.abs(op.push(pi) - pi).sum())
    rows.append(["stationary, lazy power to 1e-12", f"{s:,} states", f"{t:.3g} s",
                 f"{int(out['it'])} pushes", f"host float64 residual {resid:.1e}"])
    print(rows[-1], flush=True)
    op = p3 = None  # free the host table and the device copy before the build

    # ---- the shared-prefix build
    if args.build_length:
        cfg = TransformerConfig(n_tokens=n, context_length=args.build_length, n_layers=2, d_model=32, n_heads=2)
        model = TransformerModel.random(cfg, seed=0)
        space = sj.StateSpace(n, args.build_length)
        count = {"states": 0}

        def emit(k, start, logits):
            count["states"] += int(np.asarray(logits).shape[0])

        def build():
            count["states"] = 0
            model.prefix_tree_logits(args.build_length, emit, chunk=args.chunk)

        t = median_time(build, 1)
        rows.append(["build, shared prefix (logits of every context)", f"{space.num_states:,} states",
                     f"{t:.3g} s", f"{space.num_states / t:,.0f} states/s",
                     "every context emitted once" if count["states"] == space.num_states
                     else f"{count['states']:,} rows emitted for {space.num_states:,} contexts"])
        print(rows[-1], flush=True)

    write_table("device_" + ("gpu" if on_gpu else "cpu"), ["workload", "size", "time", "rate", "note"], rows,
                title=f"One device ({kind}, backend {jax.default_backend()}): structured matvec, power solve, build",
                notes="GB/s counts the table once plus one vector in and one out (8 (N + 2) S bytes): "
                      "the least traffic a product can have. See the script's docstring for the workloads.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

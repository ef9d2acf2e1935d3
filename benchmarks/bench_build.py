"""Operator build: shared-prefix (prefix-tree walk with cached keys/values) vs plain batched evaluation.

Question: how many states per second does each evaluation method reach, and
how much faster is the shared-prefix build, on the default zoo architecture
(2 layers, d_model 32, 2 heads, random weights)?

Both methods run side by side in one process on the same model. Each is timed
on its second run (the first compiles), and the table reports the ratio. The
two results are checked to agree to float32 round-off before any timing is
reported.

The figure results/build.png (log-log build time vs number of states, plain vs
shared prefix) is drawn from the same rows (also written to results/build_raw.json;
``python benchmarks/figures.py`` redraws it).

Usage:
  python benchmarks/bench_build.py                 # N=2: L=8,10,...,16; N=4: L=4..8
  python benchmarks/bench_build.py --full          # adds N=2 L=18,20 and N=4 L=9,10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_table  # noqa: E402
from figures import build_figure  # noqa: E402

import semio_jax as sj  # noqa: E402
from semio_jax.build import evaluate_logits  # noqa: E402
from semio_models.transformer import TransformerConfig, TransformerModel  # noqa: E402


def time_method(model, space, method: str, repeats: int = 1) -> tuple[float, np.ndarray]:
    evaluate_logits(model, space, method=method)  # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = evaluate_logits(model, space, method=method)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="include N=2 L=18,20 and N=4 L=9,10 (minutes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cases = ([(2, length) for length in range(8, 17, 2)] + [(4, length) for length in range(4, 9)]
             + ([(2, 18), (2, 20), (4, 9), (4, 10)] if args.full else []))
    rows, records = [], []
    for n, length in cases:
        cfg = TransformerConfig(n_tokens=n, context_length=length, n_layers=2, d_model=32, n_heads=2)
        model = TransformerModel.random(cfg, seed=args.seed)
        space = sj.StateSpace(n, length)
        t_prefix, a = time_method(model, space, "prefix")
        t_plain, b = time_method(model, space, "plain")
        err = float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))
        if err > 1e-4:
            raise SystemExit(f"N={n} L={length}: prefix and plain builds disagree (max relative error {err:.2e})")
        rows.append([n, length, space.num_states, f"{t_plain:.2f}", f"{t_prefix:.2f}",
                     f"{space.num_states / t_plain:,.0f}", f"{space.num_states / t_prefix:,.0f}",
                     f"{t_plain / t_prefix:.1f}x", f"{err:.1e}"])
        records.append({"n_tokens": n, "length": length, "states": space.num_states,
                        "plain_s": t_plain, "prefix_s": t_prefix})
        print(rows[-1], flush=True)
    (RESULTS / "build_raw.json").write_text(json.dumps({"records": records}, indent=1))
    fig = build_figure(records, RESULTS / "build.png")
    headers = ["N", "L", "states", "plain s", "prefix s", "plain states/s", "prefix states/s",
               "speed-up", "max rel. diff"]
    write_table("build", headers, rows, title="Operator build: shared-prefix vs plain evaluation "
                "(random 2-layer d_model=32 transformer; second run of each, compile excluded)",
                notes=f"Figure: `{fig.relative_to(RESULTS.parent.parent)}` (log-log build time vs number of states, "
                      "plain vs shared prefix, per N).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

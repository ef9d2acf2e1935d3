"""Exact stationary distribution vs Monte Carlo from the model: wall time to a given accuracy.

Question: how long does the exact stationary distribution pi take (to residual
||pi P - pi||_1 <= 1e-12), compared with the time that sampling from the model
needs before its empirical distribution is within total variation 0.05 and 0.01
of pi?

Models, all at temperature=1 (each has a single attractor there):
  coin, markov2, dyck   the trained zoo models (semio_models.checkpoint.load), each on
                        its full context: N^L = 2^8, 4^5, 3^6 full states (+ prefix states);
  random-N4-L8          a random-weight transformer (2 layers, d_model 32, 2 heads, seed 0),
                        N = 4, L = 8: 65,536 full states (+ 21,845 prefix states).

Exact: ``sj.build_operator(model, StateSpace(N, L), "temperature=1")`` (full and prefix
states; shared-prefix build) then ``sj.stationary_result(op)`` (method auto: GTH up to 1024
states, LU up to 8192, power iteration with tol 1e-12 above). Each is timed as the
fastest of three runs after a warm-up run (JIT compilation excluded; the machine is
shared) and reported with the build excluded ("exact solve
s") and included ("exact build+solve s"). The residual is checked to be <= 1e-12.

Sampling: C = 256 chains of ``semio_jax.montecarlo.Sampler`` (the model is called on each
chain's actual window at every step), started, as ``semio_jax.agreement.draw_stationary_samples``
does, from full states drawn from the exact pi (numpy default_rng([seed, 0])). The chains
therefore need no burn-in: the times are a lower bound on what sampling costs without
knowing pi already. The empirical distribution pools the visits of all chains; after each
chunk of 16 steps per chain its TV distance 1/2 sum |f - pi| is evaluated
  (a) over the full states (N^L cells), and
  (b) over 2-grams, the last two tokens of the window (N^2 cells);
the table gives the first number of chain-steps (C x steps) and the sampling wall time
(compilation excluded: a warm-up run compiles the kernels first) at which TV <= 0.05 and
<= 0.01. Sampling stops once every threshold is reached, or at the time cap (120 s per
model; 20 s with --quick): "not reached" then gives the TV at the cap.
The last two columns divide the sampling time to TV <= 0.05 and <= 0.01 by the exact build+solve time.

Usage:
  python benchmarks/bench_exact_vs_sampling.py            # the four models, 120 s sampling cap
  python benchmarks/bench_exact_vs_sampling.py --quick    # zoo models only, 20 s cap
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_table  # noqa: E402

import semio_jax as sj  # noqa: E402
from semio_jax.montecarlo import Sampler, window_indices  # noqa: E402

PROCEDURE = "temperature=1"
THRESHOLDS = (0.05, 0.01)
N_CHAINS = 256
CHUNK = 16


def load_models(quick: bool):
    from semio_models.checkpoint import load

    models = [(name, load(name)) for name in ("coin", "markov2", "dyck")]
    if not quick:
        from semio_models.transformer import TransformerConfig, TransformerModel

        cfg = TransformerConfig(n_tokens=4, context_length=8, n_layers=2, d_model=32, n_heads=2)
        models.append(("random-N4-L8", TransformerModel.random(cfg, seed=0)))
    return models


def exact(model, space, repeats: int = 3):
    """(op, result, build s, solve s): the fastest of ``repeats`` runs after a warm-up run (compile excluded)."""
    times = []
    for _ in range(1 + repeats):
        t0 = time.perf_counter()
        op = sj.build_operator(model, space, PROCEDURE)
        t1 = time.perf_counter()
        res = sj.stationary_result(op)  # a fresh operator: nothing cached
        t2 = time.perf_counter()
        times.append((t1 - t0, t2 - t1))
    assert len(res.residuals) == 1, "expected one attractor"
    if res.residuals[0] > 1e-12:
        raise SystemExit(f"{model!r}: exact residual {res.residuals[0]:.1e} > 1e-12")
    return op, res, min(t[0] for t in times[1:]), min(t[1] for t in times[1:])


def sample_until(model, space, pi_full: np.ndarray, cap_s: float, seed: int = 0) -> dict:
    """Run C chains from pi; return {metric: {threshold: (chain-steps, seconds)}} and the last TVs."""
    n, length = space.n_tokens, space.length
    nf = space.num_full
    starts = np.random.default_rng([seed, 0]).choice(nf, size=N_CHAINS, p=pi_full / pi_full.sum())
    prompts = np.stack([space.tokens(int(s)) for s in starts]).astype(np.int32)
    sampler = Sampler(model, PROCEDURE, length, n)
    for _ in sampler.generate(prompts, 2 * CHUNK, seed=seed + 1, chunk=CHUNK):  # compile, not timed
        pass
    pi2 = pi_full.reshape(-1, n * n).sum(axis=0)
    counts = np.zeros(nf, dtype=np.int64)
    tail = prompts.astype(np.int64)
    hit = {"states": {}, "2-grams": {}}
    tv = {}
    steps = 0
    t0 = time.perf_counter()
    for ys in sampler.generate(prompts, 10**12, seed=seed, chunk=CHUNK):
        hist = np.concatenate([tail, ys.astype(np.int64)], axis=1)
        idx = window_indices(hist, n, length)[:, -ys.shape[1]:]  # the windows ending on a new token
        counts += np.bincount(idx.ravel(), minlength=nf)
        tail = hist[:, hist.shape[1] - (length - 1):]
        steps += idx.size
        f = counts / steps
        tv = {"states": 0.5 * float(np.abs(f - pi_full).sum()),
              "2-grams": 0.5 * float(np.abs(f.reshape(-1, n * n).sum(axis=0) - pi2).sum())}
        now = time.perf_counter() - t0
        for metric, value in tv.items():
            for thr in THRESHOLDS:
                if thr not in hit[metric] and value <= thr:
                    hit[metric][thr] = (steps, now)
        if all(len(h) == len(THRESHOLDS) for h in hit.values()) or now > cap_s:
            break
    return {"hit": hit, "last_tv": tv, "steps": steps, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="zoo models only, 20 s sampling cap")
    ap.add_argument("--cap", type=float, help="sampling time cap per model in seconds (default 120; 20 with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cap = args.cap if args.cap is not None else (20.0 if args.quick else 120.0)
    rows = []
    for name, model in load_models(args.quick):
        space = sj.StateSpace(model.n_tokens, model.context_length)
        op, res, t_build, t_solve = exact(model, space)
        pi_full = res.distributions[0][: space.num_full]
        mc = sample_until(model, space, pi_full, cap, seed=args.seed)
        for metric, cells in (("states", space.num_full), ("2-grams", space.n_tokens**2)):
            row = [name, space.n_tokens, space.length, f"{space.num_full:,} + {space.num_prefix:,}",
                   res.methods[0], f"{t_solve:.3g}", f"{t_build + t_solve:.3g}", f"{res.residuals[0]:.1e}",
                   f"{metric} ({cells:,})"]
            for thr in THRESHOLDS:
                h = mc["hit"][metric].get(thr)
                row += [f"{h[0]:,}", f"{h[1]:.3g}"] if h else [
                    f"not reached (TV {mc['last_tv'][metric]:.3f} at {mc['steps']:,})", f">{mc['seconds']:.3g}"]
            for thr in THRESHOLDS:
                h = mc["hit"][metric].get(thr)
                row.append(f"{h[1] / (t_build + t_solve):.3g}" if h else f">{mc['seconds'] / (t_build + t_solve):.3g}")
            rows.append(row)
            print(row, flush=True)
    headers = ["model", "N", "L", "states (full + prefix)", "exact method", "exact solve s", "exact build+solve s",
               "residual", "TV over (cells)", "MC steps TV<=0.05", "MC s TV<=0.05", "MC steps TV<=0.01",
               "MC s TV<=0.01", "MC s / exact build+solve s (0.05)", "MC s / exact build+solve s (0.01)"]
    notes = ("Exact: build_operator + stationary_result(auto), fastest of 3 runs after a warm-up (compile excluded); residual = "
             "||pi P - pi||_1. Sampling: 256 chains of semio_jax.montecarlo.Sampler started from the exact pi (as "
             "agreement.draw_stationary_samples does; no burn-in needed, so a lower bound on sampling cost), TV "
             "checked after every 16 steps per chain; steps = chain-steps pooled over the 256 chains; compile "
             f"excluded; sampling capped at {cap:g} s per model. The first check comes after {N_CHAINS * CHUNK:,} "
             "chain-steps (256 chains x 16 steps): a threshold met there was met at or before it. See the docstring of "
             "benchmarks/bench_exact_vs_sampling.py. Temperature 1 for every model.")
    write_table("exact_vs_sampling", headers, rows, notes=notes,
                title="Exact stationary distribution (residual <= 1e-12) vs Monte Carlo to TV 0.05 / 0.01")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

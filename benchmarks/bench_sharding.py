"""semio_jax.sharding: D forced host devices against 1, measured side by side.

    python benchmarks/bench_sharding.py [--devices 8] [--rounds 3]

JAX fixes the device count at start-up, so each configuration runs in its own
worker process (XLA_FLAGS=--xla_force_host_platform_device_count=D); the
workers alternate (1, D, 1, D, ...) so that both see the same machine load,
and the table reports per-configuration medians and their ratio. Every timing
is of compiled code (one warm-up call first). The workers also save their
results, and the table reports how far the two configurations' results are
apart. On a CPU host the "devices" share the same physical cores, so no
speed-up is expected: this measures the overhead of the sharded programs
(padding, all-gather / reduce-scatter, SPMD partitioning), not a scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time  # noqa: E402


def worker(out: str) -> dict:
    import jax

    import semio_jax as sj
    from semio_jax import sharding as sh
    from semio_models.transformer import TransformerConfig, TransformerModel

    mesh = sh.device_mesh()
    rec = {"devices": len(jax.devices())}
    # (a) build: a random transformer, N=4, L=8: 65536 + 21844 = 87380 states, both evaluation methods
    tf = TransformerModel.random(TransformerConfig(n_tokens=4, context_length=8, n_layers=2, d_model=32, n_heads=2),
                                 seed=0)
    space = sj.StateSpace(4, 8)
    built = {}

    def build():
        built["op"] = sh.build_operator_sharded(tf, space, "temperature=1", mesh=mesh, batch_size=1024,
                                                method="plain")

    def build_tree():  # the shared-prefix walk, D subtrees at a time (blocks of 64 nodes per device)
        built["tree"] = sh.build_operator_sharded(tf, space, "temperature=1", mesh=mesh, batch_size=64)

    rec["build_s"] = median_time(build, 2)
    rec["build_tree_s"] = median_time(build_tree, 2)
    # (b) products: an order-2 n-gram model, N=8, L=6: 262144 + 37449 = 299593 states
    rng = np.random.default_rng(0)
    ngram = sj.NGramModel(rng.normal(scale=1.0, size=(8, 8, 8)).astype(np.float32), context_length=6)
    op = sj.build_operator(ngram, sj.StateSpace(8, 6), "temperature=1")
    sop = sh.shard_operator(op, mesh)
    x = sop.vector(rng.random(op.num_states))
    rec["push_ms"] = 1e3 * median_time(lambda: sop.push(x).block_until_ready(), 10)
    rec["pull_ms"] = 1e3 * median_time(lambda: sop.pull(x).block_until_ready(), 10)
    xh = sop.to_numpy(x)  # the host reference: Operator.push / pull (numpy)
    rec["numpy_push_ms"] = 1e3 * median_time(lambda: op.push(xh), 10)
    rec["numpy_pull_ms"] = 1e3 * median_time(lambda: op.pull(xh), 10)
    # (c) stationary distribution by sharded lazy power iteration (kernels compiled by the warm-up)
    res = {}

    def stat():
        res["r"] = sh.stationary_sharded(sh.shard_operator(op, mesh), method="power", tol=1e-12)

    rec["stationary_s"] = median_time(stat, 1)
    r = res["r"]
    rec["stationary_bound"] = r.error_bounds[0]
    rec["stationary_residual"] = r.residuals[0]
    np.savez(out, logits=built["op"].logits, probs=built["op"].probs, tree_logits=built["tree"].logits,
             pi=r.distributions,
             push=sop.to_numpy(sop.push(x)), pull=sop.to_numpy(sop.pull(x)))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_sharding_"))
    runs: dict = {1: [], args.devices: []}
    for rnd in range(args.rounds):
        for d in (1, args.devices):
            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}", JAX_PLATFORMS="cpu")
            out = tmp / f"d{d}_r{rnd}.npz"
            proc = subprocess.run([sys.executable, __file__, "--worker", str(out)], env=env, capture_output=True,
                                  text=True, check=True)
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            assert rec["devices"] == d
            runs[d].append(rec)
            print(f"round {rnd} devices {d}: {rec}", flush=True)
    one = np.load(tmp / "d1_r0.npz")
    many = np.load(tmp / f"d{args.devices}_r0.npz")
    scale = 1.0 + np.max(np.abs(one["logits"]), axis=1, keepdims=True)
    diffs = {
        "build_s": f"logits: max abs diff / (1 + row max) = {np.max(np.abs(many['logits'] - one['logits']) / scale):.1e}; "
                   f"probs: max abs diff = {np.max(np.abs(many['probs'] - one['probs'])):.1e}",
        "build_tree_s": "logits: max abs diff / (1 + row max) = "
                        f"{np.max(np.abs(many['tree_logits'] - one['tree_logits']) / scale):.1e} (vs plain 1 device: "
                        f"{np.max(np.abs(many['tree_logits'] - one['logits']) / scale):.1e})",
        "push_ms": f"max abs diff / max = {np.max(np.abs(many['push'] - one['push'])) / np.max(np.abs(one['push'])):.1e}",
        "pull_ms": f"max abs diff / max = {np.max(np.abs(many['pull'] - one['pull'])) / np.max(np.abs(one['pull'])):.1e}",
        "stationary_s": f"l1 diff = {np.abs(many['pi'] - one['pi']).sum():.1e} (certified bound "
                        f"{runs[args.devices][0]['stationary_bound']:.1e})",
    }
    labels = {
        "build_s": "build (plain), transformer N=4 L=8 (87,380 states) [s]",
        "build_tree_s": "build (shared prefix, subtrees over the devices), same model [s]",
        "push_ms": "push x P, n-gram N=8 L=6 (299,593 states) [ms]",
        "pull_ms": "pull P f, same operator [ms]",
        "stationary_s": "stationary, sharded lazy power to 1e-12, same operator [s]",
    }
    host = {"push_ms": "numpy_push_ms", "pull_ms": "numpy_pull_ms"}
    rows = []
    for key, label in labels.items():
        a = float(np.median([r[key] for r in runs[1]]))
        b = float(np.median([r[key] for r in runs[args.devices]]))
        h = f"{np.median([r[host[key]] for r in runs[1] + runs[args.devices]]):.3g}" if key in host else ""
        rows.append([label, f"{a:.3g}", f"{b:.3g}", f"{b / a:.2f}", h, diffs[key]])
    from _common import write_table

    write_table("sharding", ["workload", "1 device", f"{args.devices} devices", "ratio",
                                       "host numpy (Operator)", "results apart by"], rows,
                title=f"semio_jax.sharding on {os.cpu_count()} CPU cores: {args.devices} forced host devices vs 1",
                notes=f"Medians of {args.rounds} alternating worker runs per configuration; compiled code only. "
                      "ratio = devices / 1 device. The forced host devices share the same cores, so no "
                      "speed-up is expected on a CPU. 'results apart by' compares the two configurations' "
                      "outputs of round 0.")


if __name__ == "__main__":
    main()

"""Monte Carlo rollouts: the sampler with the model's key/value cache vs plain whole-context calls.

Question: how many sampling steps per second does ``Sampler`` reach with the
model's key/value cache (``kv_cache=True``) and without it (``kv_cache=False``),
on the zoo transformers, in the two regimes the agreement checks run?

* growing: 1-token prompts, ``n_steps = L`` (L-1 growing steps, where the cache
  applies, then one full-window step): basin / hitting checks start from
  one-token prompts and spend much of their time here when chains absorb early;
* long: 1-token prompts, 2000 steps: after L-1 growing steps the window
  slides and every step re-evaluates the whole window (absolute positions make
  the cache stale); the cached sampler only skips what the next token's logits
  do not need (the last block's tail at the earlier positions).

Both samplers run side by side in one process on the same model, prompts and
seed. "cold s" is the first call of a fresh sampler (it includes compilation,
as for every fresh ``Sampler`` an agreement check builds); "warm" is the best of
``--grow-repeats`` / ``--repeats`` further calls, alternating between the two
samplers (the machine may be shared: the minimum is the least disturbed run).
A step advances all C chains by one token (steps/s x C = tokens/s). The table
also gives the number of tokens where the two samplers differ for the same
seed: the logits differ by float32 round-off only, so a draw flips only where
a uniform lands within ~1e-6 of a boundary (0 or a handful in 2 million).

Usage:
  python benchmarks/bench_sampling_cache.py                    # dyck, markov2, coin; C=1000
  python benchmarks/bench_sampling_cache.py --chains 4000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_table  # noqa: E402

import semio_jax  # noqa: E402,F401  (x64 on, as in every analysis)
from semio_jax.montecarlo import Sampler  # noqa: E402
from semio_models.checkpoint import load  # noqa: E402


def time_pair(model, prompts: np.ndarray, n_steps: int, seed: int, repeats: int):
    """Cold and best warm seconds of Sampler(kv_cache=False) and Sampler(kv_cache=True).sample, and their tokens.

    The warm calls alternate between the two samplers, so a burst of load from
    other processes hits both alike; the minimum over the repeats is reported.
    """
    samplers = [Sampler(model, "temperature=1", model.context_length, kv_cache=c) for c in (False, True)]
    cold, warm, toks = [], [float("inf")] * 2, []
    for s in samplers:
        t0 = time.perf_counter()
        toks.append(s.sample(prompts, n_steps, seed=seed))
        cold.append(time.perf_counter() - t0)
    for _ in range(repeats):
        for i, s in enumerate(samplers):
            t0 = time.perf_counter()
            again = s.sample(prompts, n_steps, seed=seed)
            warm[i] = min(warm[i], time.perf_counter() - t0)
            if not np.array_equal(again, toks[i]):
                raise SystemExit("a sampler is not reproducible for a fixed seed")
    return cold, warm, toks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="dyck,markov2,coin", help="comma-separated zoo names")
    ap.add_argument("--chains", type=int, default=1000, help="chains per batch (C)")
    ap.add_argument("--long", type=int, default=2000, help="steps of the long runs")
    ap.add_argument("--repeats", type=int, default=2, help="warm repeats of the long runs (best one reported)")
    ap.add_argument("--grow-repeats", type=int, default=10, help="warm repeats of the growing runs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    rows = []
    for name in args.models.split(","):
        model = load(name)
        L, N = model.context_length, model.n_tokens
        prompts = np.random.default_rng(args.seed).integers(0, N, size=(args.chains, 1))
        for regime, n_steps, repeats in (("growing", L, args.grow_repeats), ("long", args.long, args.repeats)):
            (c_plain, c_cache), (w_plain, w_cache), (a, b) = time_pair(model, prompts, n_steps, args.seed, repeats)
            diff = int((a != b).sum())
            rows.append([name, L, N, regime, n_steps, args.chains,
                         f"{c_plain:.2f}", f"{c_cache:.2f}", f"{c_plain / c_cache:.1f}x",
                         f"{n_steps / w_plain:,.0f}", f"{n_steps / w_cache:,.0f}", f"{w_plain / w_cache:.2f}x",
                         f"{diff}/{a.size}"])
            print(rows[-1], flush=True)
    headers = ["model", "L", "N", "regime", "steps", "chains", "plain cold s", "cached cold s", "cold speed-up",
               "plain steps/s", "cached steps/s", "warm speed-up", "tokens differing"]
    notes = ("plain = Sampler(kv_cache=False): model(contexts) on the whole context at every step. "
             "cached = Sampler(kv_cache=True): growing steps feed one token at its position through the "
             "key/value cache (TransformerModel.cached_step); full-window steps recompute the window "
             "(absolute position embeddings make a slid window's cached keys/values stale) but skip the last "
             "block's attention output and MLP at the earlier positions and the unembedding of all but the "
             "last (prefill + cached_step). growing = 1-token prompts and n_steps = L (L-1 growing steps + 1 "
             "full-window step); long = 1-token prompts, L-1 growing steps then full-window steps. "
             "cold = first call of a fresh Sampler, compilation included; steps/s = warm, best of the repeats "
             "(alternating plain/cached calls); a step advances every chain by one token. tokens differing = "
             "cached vs plain tokens for the same seed (logits equal up to float32 round-off, so a draw can "
             "flip only within ~1e-6 of a boundary). "
             f"Load average (1 min) at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f}.")
    write_table("sampling_cache", headers, rows,
                title="Monte Carlo rollouts: Sampler with the model's key/value-cache interface vs plain "
                      "whole-context calls (zoo transformers, temperature=1)", notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Calibration of the exact-vs-sampled agreement checks: false-alarm rate and power.

Question: when the exact operator is RIGHT, how often does an agreement check
fail (false alarm), and when it is WRONG in a realistic way, how often does it
catch the mistake (power)?

Design. For every zoo model and procedure below and every seed, the chains are
drawn ONCE from the true model under the true procedure (exactly as
``semio check`` draws them: ``draw_stationary_samples`` / ``draw_absorption_samples``)
and compared, through ``check_stationary(..., sample=)`` / ``check_basins(...,
sample=)``, with the right exact operator and with each wrong one. The
mistakes are on the EXACT side (the operator is built wrongly; sampling always
uses the true model):

  temperature +10%   the operator built at 1.1 x the temperature;
  top-k off by one   top_k = k + 1 (k - 1 when k = N); no top-k -> top_k = N - 1; greedy -> top_k = 2;
  window L-1         a model wrapper that shows only the last L-1 tokens of each full window;
  positions +1       token i read at position i+1 (the last two share position L-1);
  prefix right-aligned  a context of k < L tokens read at positions L-k..L-1 (left-padding bug).

A mistake that leaves the operator identical (temperature under greedy) has
no power to measure and is marked "no effect"; one that changes only rows the
check cannot see (the stationary law ignores prefix states) is marked "invisible".

Smaller budgets are sub-samples of the same run (the first C chains, with
their visit counts and their transitions: ``OccupationSample.head``), so one
run gives the whole power curve. Each check is one family, Bonferroni at
family-wise level ``--level`` (0.05 here); an alarm at level a is
``m * min_p <= a``, recorded per run, so the rates at 0.01 (the CLI's level)
come from the same runs. False-alarm rates carry Clopper-Pearson 95% intervals.

The stationary check includes the transition rows (next-token counts out of
each visited state against the exact rows; see semio_jax/agreement.py), which
see mistakes that change rows but barely move pi. Where the largest budget of
the study does not reach power 0.95, the table also prints the budget that
the transition rows need by the noncentral chi-square approximation
("exemplary data": the rows' statistics evaluated at the expected counts
under the true chain give the noncentrality), at the family's Bonferroni
level.

Usage:
  python benchmarks/calibration.py                  # 100 seeds (about an hour on 2 busy cores)
  python benchmarks/calibration.py --seeds 5 --raw /tmp/calib.json    # a quick look, elsewhere
Progress is saved after every seed in benchmarks/results/calibration_raw.json
(or ``--raw PATH``; the table then goes next to it as PATH.md unless
``--table``); ``--resume`` continues an interrupted study.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_table  # noqa: E402

import jax.numpy as jnp  # noqa: E402

import semio_jax as sj  # noqa: E402
from semio_jax._util.io import atomic_write_json  # noqa: E402
from semio_jax.agreement import (  # noqa: E402
    check_basins,
    check_stationary,
    draw_absorption_samples,
    draw_stationary_samples,
)
from semio_jax.agreement.stationary import MIN_EXPECTED, MIN_VISITS, transition_rows  # noqa: E402
from semio_jax.core.procedure import Procedure, parse  # noqa: E402
from semio_models.checkpoint import load  # noqa: E402
from semio_models.transformer import TransformerModel  # noqa: E402

# (check, model, procedure): one ergodic and one truncating procedure per model for the stationary
# check; procedures with several attractors for the basin check. coin has no truncating case: its
# p(0 | context) lies in [0.5016, 0.5024] for every context, so every truncation that changes the
# full-state rows (top_k=1, top_p < 0.5016, min_p > 0.9903) collapses the chain onto the fixed point
# 00000000, which has nothing to sample.
CASES = [
    ("stationary", "coin", "temperature=1"),
    ("stationary", "markov2", "temperature=1"),
    ("stationary", "markov2", "top_k=2"),
    ("stationary", "dyck", "temperature=1"),
    ("stationary", "dyck", "top_k=2"),
    ("basins", "dyck", "top_p=0.5"),
    ("basins", "markov2", "greedy"),
]
MISTAKES = ["temperature +10%", "top-k off by one", "window L-1", "positions +1", "prefix right-aligned"]
STAT_BUDGETS = [16, 32, 64, 128, 256]  # chains (x --steps each)
BASIN_BUDGETS = [250, 500, 1000, 2000, 4000]  # chains per start
# Version of each check's row set: --resume redoes the seeds of a case recorded with another version
# (stationary 2: the transition rows were added; results without a version are version 1).
CHECK_VERSION = {"stationary": 2, "basins": 1}


# ----------------------------------------------------------------------------- mistakes
def wrong_procedure(proc: Procedure, mistake: str, n: int) -> Procedure:
    if mistake == "temperature +10%":
        return dataclasses.replace(proc, temperature=proc.temperature * 1.1)
    if mistake == "top-k off by one":
        if proc.greedy:
            return parse("top_k=2")
        if proc.top_k is not None:
            return dataclasses.replace(proc, top_k=proc.top_k + 1 if proc.top_k < n else proc.top_k - 1)
        return dataclasses.replace(proc, top_k=n - 1)
    return proc


def _positions_model(model: TransformerModel, positions_of_k) -> sj.FunctionModel:
    """The model reading a context of k tokens at positions ``positions_of_k(k)`` (int[k]) instead of 0..k-1."""
    pos = np.asarray(model.params["pos_embed"])
    length = model.context_length
    per_k = {}
    for k in range(1, length + 1):
        table = pos.copy()
        table[:k] = pos[np.asarray(positions_of_k(k))]
        params = dict(model.params)
        params["pos_embed"] = jnp.asarray(table)
        per_k[k] = TransformerModel(model.config, params)

    def fn(contexts):
        return per_k[contexts.shape[1]](contexts)

    return sj.FunctionModel(fn, model.n_tokens, length, jittable=True, name="wrong-positions")


def wrong_model(model: TransformerModel, mistake: str):
    length = model.context_length
    if mistake == "window L-1":
        def fn(contexts):
            c = contexts if contexts.shape[1] < length else contexts[:, 1:]
            return model(c)
        return sj.FunctionModel(fn, model.n_tokens, length, jittable=True, name="window-L-1")
    if mistake == "positions +1":
        return _positions_model(model, lambda k: np.minimum(np.arange(k) + 1, length - 1))
    if mistake == "prefix right-aligned":
        return _positions_model(model, lambda k: np.arange(length - k, length))
    return model


# ----------------------------------------------------------------------------- one case
class Case:
    def __init__(self, check: str, name: str, spec: str):
        self.check, self.name, self.spec = check, name, spec
        self.model = load(name)
        self.space = sj.StateSpace(self.model.n_tokens, self.model.context_length)
        self.proc = parse(spec)
        base = sj.build_operator(self.model, self.space, "temperature=1")  # as semio check builds it ("auto")
        self.right = base.with_procedure(self.proc)
        # The wrappers below are evaluated by the plain method, which differs from the shared-prefix build
        # by float32 round-off (~1e-6 in the logits); a wrapper is judged against a plain build of the
        # true model, so that round-off alone never counts as a mistake.
        plain = sj.build_operator(self.model, self.space, "temperature=1", method="plain")
        self.wrong, self.status, self.effect = {}, {}, {}
        nf = self.space.num_full
        for mistake in MISTAKES:
            proc = wrong_procedure(self.proc, mistake, self.space.n_tokens)
            model = wrong_model(self.model, mistake)
            if model is self.model:
                op, ref = base.with_procedure(proc), self.right
            else:
                op = sj.build_operator(model, self.space, "temperature=1").with_procedure(proc)
                ref = plain.with_procedure(self.proc)
            row_tv = 0.5 * np.abs(op.probs - ref.probs).sum(axis=1)
            self.effect[mistake] = {"max_row_tv": float(row_tv.max()), "max_full_row_tv": float(row_tv[:nf].max())}
            if np.array_equal(op.probs, ref.probs):
                self.status[mistake] = "no effect"
            elif check == "stationary" and np.array_equal(op.probs[:nf], ref.probs[:nf]):
                self.status[mistake] = "invisible"  # only prefix rows differ: the stationary law is the same
            else:
                self.status[mistake] = "ok"
                self.wrong[mistake] = op
                if check == "stationary":
                    st_r, st_w = sj.stationary(self.right), sj.stationary(op)
                    h = sj.basins(op)
                    tv = [0.5 * np.abs(st_w[int(np.argmax(st_r[a] @ h))] - st_r[a]).sum() for a in range(len(st_r))]
                    self.effect[mistake]["pi_tv"] = float(max(tv))
        self.attractor_map = {m: self._map_attractors(op) for m, op in self.wrong.items()}

    def _map_attractors(self, op) -> dict:
        """For each tested attractor of the right operator, the wrong operator's attractor its pi flows into."""
        if self.check != "stationary":
            return {}
        st = sj.stationary(self.right)
        h = sj.basins(op)
        return {a: int(np.argmax(st[a] @ h)) for a in range(st.shape[0])}

    def describe(self) -> str:
        atts = sj.attractors(self.right)
        return (f"{self.check:<10} {self.name:<8} {self.spec:<14} {len(atts)} attractor(s) "
                f"{[len(a) for a in atts][:6]}; mistakes: " + ", ".join(f"{m}: {s}" for m, s in self.status.items()))

    def predict_chains(self, mistake: str, steps: int, level: float, n_tests: int, power: float = 0.95,
                       max_chains: int = 10**9) -> float | None:
        """Chains (x ``steps``) at which the transition rows alone reach ``power`` against ``mistake``.

        Noncentral chi-square approximation with exemplary data: the rows of the transition tests
        evaluated at the expected counts under the true chain (from the right operator's pi) give each
        statistic's noncentrality (z^2 for the normal row); a forbidden transition reached with mass m
        per step is seen with probability 1 - exp(-m n). A row fires at level / n_tests (Bonferroni);
        the family's power is at least the best row's. None: the transition rows cannot see it (or
        stationary check only). Not for a wrong attractor map (one attractor in the zoo cases).
        """
        if self.check != "stationary" or mistake not in self.wrong:
            return None
        op = self.wrong[mistake]
        nf = self.space.num_full
        pi = sj.stationary(self.right)[0][:nf]
        p_true, q = self.right.probs[:nf], op.probs[:nf]
        alpha = level / max(n_tests, 1)
        forbidden_mass = float((pi[:, None] * p_true * ((q <= 0) & (p_true > 0))).sum())

        def family_power(chains: float) -> float:
            n = chains * steps
            best = 1.0 - math.exp(-forbidden_mass * n) if forbidden_mass > 0 else 0.0
            exp_obs = n * pi[:, None] * np.where(q > 0, p_true, 0.0)  # forbidden cells apart
            vis = np.flatnonzero(exp_obs.sum(axis=1) > 0)
            rows, _ = transition_rows(0, self.space, vis, exp_obs[vis], q[vis], MIN_EXPECTED, MIN_VISITS)
            for r in rows:
                if "(chi2)" in r.quantity:
                    df = int(r.exact)
                    lam = r.estimate  # the statistic at the expected counts: the noncentrality
                    pw = float(stats.ncx2.sf(stats.chi2.isf(alpha, df), df, lam)) if lam > 0 else alpha
                else:
                    zc = stats.norm.isf(alpha / 2)
                    pw = float(stats.norm.sf(zc - abs(r.z)) + stats.norm.cdf(-zc - abs(r.z)))
                best = max(best, pw)
            return best

        lo, hi = 1.0, 2.0
        while family_power(hi) < power:
            lo, hi = hi, hi * 2
            if hi > max_chains:
                return None
        for _ in range(30):  # bisection on log scale to ~1%
            if hi / lo < 1.01:
                break
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if family_power(mid) >= power else (mid, hi)
        return hi

    def run(self, seed: int, steps: int, level: float, budgets=None) -> dict:
        """{budget: {variant: m * min_p, "n_tests": m of the right operator}} for one seed (variant 'right' or a
        mistake)."""
        out = {}
        if self.check == "stationary":
            budgets = list(budgets or STAT_BUDGETS)
            full = draw_stationary_samples(self.right, self.model, n_chains=max(budgets), n_steps=steps,
                                           seed=seed)
            for c in budgets:
                sub = {a: o.head(c) for a, o in full.items()}  # counts, starts and transitions of the first c
                right = check_stationary(self.right, None, sample=sub, level=level)
                row = {"right": _adjusted(right), "n_tests": right.n_tests}
                for mistake, op in self.wrong.items():
                    mapped = {}
                    for a, o in sub.items():
                        mapped.setdefault(self.attractor_map[mistake][a], o)
                    row[mistake] = _adjusted(check_stationary(op, None, sample=mapped, level=level))
                out[c] = row
        else:
            budgets = list(budgets or BASIN_BUDGETS)
            full = draw_absorption_samples(self.right, self.model, n_chains=max(budgets), seed=seed)
            for c in budgets:
                sub = [dataclasses.replace(s, outcome=s.outcome[:c], time=s.time[:c], path=s.path[:c]) for s in full]
                row = {"right": _adjusted(check_basins(self.right, None, sample=sub, level=level))}
                for mistake, op in self.wrong.items():
                    row[mistake] = _adjusted(check_basins(op, None, sample=sub, level=level))
                out[c] = row
        return out


def _adjusted(rep) -> float:
    """Bonferroni-adjusted family p-value: the family fails at level a iff this is <= a."""
    return float(f"{min(1.0, rep.min_p * max(rep.n_tests, 1)):.4g}")


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    a = 1 - conf
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100, help="independent seeds per case (default 100)")
    ap.add_argument("--steps", type=int, default=2000, help="steps per chain in the stationary checks (default 2000)")
    ap.add_argument("--level", type=float, default=0.05, help="family-wise level of the study (default 0.05)")
    ap.add_argument("--default-chains", type=int, default=64, help="the stationary budget reported as default")
    ap.add_argument("--default-basin-chains", type=int, default=2000, help="the basin budget reported as default")
    ap.add_argument("--budgets", default=None,
                    help="stationary budgets in chains, comma-separated (default "
                         + ",".join(map(str, STAT_BUDGETS)) + "); one run of the largest serves all")
    ap.add_argument("--resume", action="store_true", help="continue from the raw file (cases recorded with an "
                    "older version of their check are redone)")
    ap.add_argument("--only", default=None, help="run only cases whose 'check/model/procedure' contains this text")
    ap.add_argument("--raw", type=Path, default=RESULTS / "calibration_raw.json",
                    help="raw results file (default benchmarks/results/calibration_raw.json)")
    ap.add_argument("--table", type=Path, default=None,
                    help="Markdown table (default benchmarks/results/calibration.md with the default --raw, "
                         "else the --raw path with suffix .md)")
    args = ap.parse_args(argv)
    raw_path = args.raw
    default_raw = raw_path.resolve() == (RESULTS / "calibration_raw.json").resolve()
    args.table = args.table or (RESULTS / "calibration.md" if default_raw else raw_path.with_suffix(".md"))
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else STAT_BUDGETS
    cases_spec = [c for c in CASES if args.only is None or args.only in "/".join(c)]
    raw = {}
    if args.resume and raw_path.exists():
        raw = json.loads(raw_path.read_text())
        if raw.get("steps") != args.steps or raw.get("level") != args.level:
            raise SystemExit(f"{raw_path} was made with other --steps/--level; remove it or drop --resume")
    raw.setdefault("steps", args.steps)
    raw.setdefault("level", args.level)
    raw.setdefault("results", {})
    raw.setdefault("wall_s", 0.0)
    wall_before = raw["wall_s"]
    t_start = time.perf_counter()
    cases = []
    for spec in cases_spec:
        case = Case(*spec)
        print(case.describe(), flush=True)
        cases.append(case)
    for case in cases:
        key = "/".join((case.check, case.name, case.spec))
        res = raw["results"].setdefault(key, {"seeds": {}})
        version = CHECK_VERSION[case.check]
        if res.get("version", 1) != version and res["seeds"]:
            print(f"  {key}: {len(res['seeds'])} seeds recorded with version {res.get('version', 1)} of the "
                  f"{case.check} check; redoing them with version {version}", flush=True)
            res["seeds"] = {}
        res["version"] = version
        res["status"], res["effect"] = case.status, case.effect  # recomputed on --resume
        for seed in range(args.seeds):
            if str(seed) in res["seeds"]:
                continue
            t0 = time.perf_counter()
            res["seeds"][str(seed)] = {str(b): v for b, v in
                                       case.run(seed, args.steps, args.level, budgets if case.check == "stationary"
                                                else None).items()}
            raw["wall_s"] = wall_before + time.perf_counter() - t_start
            atomic_write_json(raw_path, raw)
            print(f"  {key} seed {seed}: {time.perf_counter() - t0:.1f}s", flush=True)
    for case in cases:  # the budget the transition rows need, where the study's largest does not reach it
        key = "/".join((case.check, case.name, case.spec))
        res = raw["results"][key]
        if case.check != "stationary" or not res["seeds"]:
            continue
        largest = max(int(b) for b in res["seeds"]["0" if "0" in res["seeds"] else next(iter(res["seeds"]))])
        m = int(np.median([v[str(largest)].get("n_tests", 30) for v in res["seeds"].values()
                           if str(largest) in v]))
        for mistake in case.wrong:
            chains = case.predict_chains(mistake, args.steps, raw["level"], m)
            res["effect"][mistake]["predicted_chains"] = chains if chains is None else float(f"{chains:.3g}")
    raw["wall_s"] = wall_before + time.perf_counter() - t_start
    atomic_write_json(raw_path, raw)
    render(raw, args, [("/".join(c)) for c in cases_spec])
    return 0


def _rate(values, level):
    v = np.asarray(values)
    return int((v <= level).sum()), v.size


def render(raw: dict, args, keys) -> None:
    level = raw["level"]
    headers = ["check", "model", "procedure", "budget", "seeds", "false alarms @0.05", "rate [CP 95%]",
               "@0.01"] + [f"power: {m}" for m in MISTAKES]
    rows = []
    need = []
    for key in keys:
        res = raw["results"][key]
        check, name, spec = key.split("/")
        default = args.default_chains if check == "stationary" else args.default_basin_chains
        seeds = sorted(res["seeds"], key=int)
        budgets = sorted(set.intersection(*[{int(b) for b in res["seeds"][s]} for s in seeds]))
        for b in budgets:
            vals = [res["seeds"][s][str(b)] for s in seeds]
            k, n = _rate([v["right"] for v in vals], level)
            k01, _ = _rate([v["right"] for v in vals], 0.01)
            lo, hi = clopper_pearson(k, n)
            budget = f"{b} x {raw['steps']}" if check == "stationary" else f"{b} / start"
            if b == default:
                budget += " (default)"
            row = [check, name, spec, budget, n, k, f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]", f"{k01 / n:.3f}"]
            for m in MISTAKES:
                status = res["status"][m]
                if status != "ok":
                    row.append(status)
                    continue
                kp, _ = _rate([v[m] for v in vals], level)
                kp01, _ = _rate([v[m] for v in vals], 0.01)
                row.append(f"{kp / n:.2f} ({kp01 / n:.2f})")
            rows.append(row)
        for m in MISTAKES:  # smallest budget reaching power 0.95 at the study's level
            if res["status"][m] != "ok":
                continue
            reach = [b for b in budgets
                     if _rate([res["seeds"][s][str(b)][m] for s in seeds], level)[0] >= 0.95 * len(seeds)]
            need.append((key, m, reach[0] if reach else None, budgets[-1]))
    notes = ["Each cell of a power column: the fraction of seeds whose check FAILED for that wrong operator at the "
             f"study level {level:g} (in brackets: at 0.01, the CLI's level). 'no effect': the mistake leaves the "
             "operator identical; 'invisible': it changes only prefix-state rows, which the stationary law does "
             "not depend on (the basin check from one-token prompts sees those).", "",
             "Smallest budget reaching power >= 0.95 at level 0.05, per mistake:", ""]
    for key, m, b, top in need:
        eff = dict(raw["results"][key].get("effect", {}).get(m, {}))
        predicted = eff.pop("predicted_chains", None)
        size = ", ".join(f"{name} {value:.1e}" for name, value in eff.items())
        line = f"- {key}, {m}: " + (f"{b} chains" + (f" x {raw['steps']} steps" if key.startswith("stationary")
                                                    else " per start") if b else f"not reached up to {top}")
        if not b and key.startswith("stationary"):
            line += ("; the transition rows reach it at about "
                     f"{predicted:.3g} chains x {raw['steps']} steps (predicted)" if predicted
                     else "; the transition rows do not see it")
        notes.append(line + (f" (size of the mistake: {size})" if size else ""))
    notes += ["", "Sizes: max_row_tv = largest total-variation distance between a row of the wrong and the right "
              "operator (max_full_row_tv: over full states only); pi_tv = TV distance between the stationary laws.",
              "", "Predicted budgets (stationary): the smallest number of chains at which the transition rows alone "
              "reach power 0.95 at the family's Bonferroni level, by the noncentral chi-square approximation "
              "(the rows evaluated at the expected counts give the noncentralities); see Case.predict_chains."]
    notes += ["", f"Total wall time of the study: {raw['wall_s'] / 60:.1f} min "
              f"(2 shared CPU cores; one sampling run per seed and case serves every budget and every operator)."]
    write_table("calibration", headers, rows,
                title=f"Calibration of the agreement checks: false alarms and power ({len(seeds)} seeds per case)",
                notes="\n".join(notes), path=args.table)


if __name__ == "__main__":
    raise SystemExit(main())

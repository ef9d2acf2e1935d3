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
each visited state against the exact rows; see semio_jax/agreement/stationary.py), which
see mistakes that change rows but barely move pi. Where the largest budget of
the study does not reach power 0.95, the table also prints the budget that
the transition rows need by the noncentral chi-square approximation
("exemplary data": the rows' statistics evaluated at the expected counts
under the true chain give the noncentrality), at the family's Bonferroni
level.

Slowly mixing chains (``--slow``, ``--held-out``): sticky n-gram models with
rare phases and zoo models at low temperature (DEV_SLOW, HELD_OUT below), at
semio check's level 0.01; per chain and budget the false-alarm rate with its
Clopper-Pearson interval, the rate of INCONCLUSIVE reports and the power
against the operator built at a 10% and a 25% higher temperature
(benchmarks/results/calibration_slow.md, calibration_heldout.md).

Usage:
  python benchmarks/calibration.py                  # 100 seeds (about an hour on 2 busy cores)
  python benchmarks/calibration.py --slow --seeds 300 --budgets 16x500,64x2000
  python benchmarks/calibration.py --slow --held-out --seeds 300 --budgets 64x2000
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
# (stationary 2: the transition rows were added; stationary 3: exact-variance frequency rows with the budget
# rule, INCONCLUSIVE reports; results without a version are version 1).
CHECK_VERSION = {"stationary": 3, "basins": 1}


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


# ----------------------------------------------------------------------------- slowly mixing chains
# Sticky n-gram models with rare phases (and zoo models at low temperature): relaxation times of 1e2 to 1e4
# steps, against which the stationary check's budget is small. Each case is (name, builder, procedure); the
# builder returns (model, StateSpace). DEV_SLOW were used while developing the check's budget rule; HELD_OUT
# were run only once, for the acceptance table, with the rule frozen.
SLOW_LEVEL = 0.01  # the CLI's family-wise level: the acceptance is about `semio check` at its defaults
SLOW_BUDGETS = [(16, 500), (64, 2000), (256, 2000)]  # (chains, steps); (64, 2000) is semio check's default
SLOW_MISTAKES = {"temperature +10%": 1.1, "temperature +25%": 1.25}


def sticky_ngram(n_common: int, phases, order: int = 2, seed: int = 0, name: str = "sticky"):
    """A sticky n-gram model with rare phases: (NGramModel, StateSpace(N, order)).

    Tokens 0..n_common-1 form the common phase; each (mass, tau) in ``phases`` adds one rare token r that,
    once emitted, repeats with probability 1 - (1 - mass) / tau and is entered from a common token with
    probability mass / tau, so that with one phase pi(r) ~ mass and the relaxation time ~ tau. The common
    tokens follow random rows (Dirichlet(1), numpy default_rng(seed)) that depend on the last ``order``
    tokens; after a rare phase the chain returns to a random common row.
    """
    rng = np.random.default_rng(seed)
    n = n_common + len(phases)
    enter = np.array([m / tau for m, tau in phases])
    probs = np.zeros((n,) * order + (n,))
    for ctx in np.ndindex(*(n,) * order):
        last = ctx[-1]
        row = np.zeros(n)
        common = rng.dirichlet(np.ones(n_common))
        if last < n_common:
            row[:n_common] = common * (1.0 - enter.sum())
            row[n_common:] = enter
        else:
            m, tau = phases[last - n_common]
            stay = 1.0 - (1.0 - m) / tau
            row[:n_common] = common * (1.0 - stay)
            row[last] = stay
        probs[ctx] = row
    with np.errstate(divide="ignore"):  # log 0 = -inf: an impossible token
        model = sj.NGramModel(np.log(probs), context_length=order, name=name)
    return model, sj.StateSpace(n, order)


def _zoo_at(name: str):
    model = load(name)
    return model, sj.StateSpace(model.n_tokens, model.context_length)


def _two_state():  # the chain of issue 13: P(1|0) = 5e-5, P(0|1) = 2e-3 (relaxation time ~ 490)
    model = sj.NGramModel(np.log(np.array([[1 - 5e-5, 5e-5], [2e-3, 1 - 2e-3]])), context_length=1, name="two-state")
    return model, sj.StateSpace(2, 1)


DEV_SLOW = [
    ("two-state (issue 13)", _two_state, "temperature=1"),
    ("sticky 3+1, tau 1e2, 10%", lambda: sticky_ngram(3, [(0.10, 1e2)], seed=1), "temperature=1"),
    ("sticky 3+1, tau 1e3, 5%", lambda: sticky_ngram(3, [(0.05, 1e3)], seed=2), "temperature=1"),
    ("sticky 2+1, tau 1e4, 2%", lambda: sticky_ngram(2, [(0.02, 1e4)], seed=3), "temperature=1"),
    ("markov2 at T=0.2", lambda: _zoo_at("markov2"), "temperature=0.2"),
    ("dyck at T=0.3", lambda: _zoo_at("dyck"), "temperature=0.3"),
]
HELD_OUT = [
    ("held-out sticky 4+2, tau ~4e2, 3%+2%", lambda: sticky_ngram(4, [(0.03, 400.0), (0.02, 600.0)], seed=11),
     "temperature=1"),
    ("held-out sticky 3+1 order 3, tau ~7e2, 4%", lambda: sticky_ngram(3, [(0.04, 700.0)], order=3, seed=12),
     "temperature=1"),
    ("held-out sticky 5+1, tau ~3e2, 5%, T=0.9", lambda: sticky_ngram(5, [(0.05, 300.0)], seed=13),
     "temperature=0.9"),
]


class SlowCase:
    """One slowly mixing chain: the right operator, temperature mistakes on the exact side, its exact
    relaxation time and the stationary mass of its rarest tested states."""

    def __init__(self, name: str, builder, spec: str):
        self.name, self.spec = name, spec
        self.model, self.space = builder()
        self.proc = parse(spec)
        base = sj.build_operator(self.model, self.space, "temperature=1", keep_logits=True)
        self.right = base.with_procedure(self.proc)
        self.wrong = {m: base.with_procedure(dataclasses.replace(self.proc, temperature=self.proc.temperature * f))
                      for m, f in SLOW_MISTAKES.items()}
        gap = sj.spectral_gap(self.right)
        self.relaxation_time = float(max(gap.relaxation_time))
        pi = sj.stationary(self.right)[0][: self.space.num_full]
        tok = pi.reshape(-1, self.space.n_tokens).sum(axis=0)
        self.rarest_token_mass = float(tok[tok > 0].min())

    def run(self, seed: int, budgets=None) -> dict:
        """{"C x T": {"right": outcome, mistake: outcome}} for one seed; an outcome is
        [Bonferroni-adjusted p, inconclusive reasons recorded (0/1)] (see :func:`verdict_at`)."""
        budgets = list(budgets or SLOW_BUDGETS)
        out = {}
        for steps in sorted({s for _, s in budgets}):
            chains = max(c for c, s in budgets if s == steps)
            full = draw_stationary_samples(self.right, self.model, n_chains=chains, n_steps=steps, seed=seed)
            for c in sorted(c for c, s in budgets if s == steps):
                sub = {a: o.head(c) for a, o in full.items()}
                row = {"right": outcome(check_stationary(self.right, None, sample=sub, level=SLOW_LEVEL))}
                for m, op in self.wrong.items():
                    row[m] = outcome(check_stationary(op, None, sample=sub, level=SLOW_LEVEL))
                out[f"{c} x {steps}"] = row
        return out


def outcome(rep) -> list:
    """What one report contributes to the study: [Bonferroni-adjusted min p, 1 if it has inconclusive reasons
    or no test else 0]. The verdict at any level follows from it (:func:`verdict_at`)."""
    return [_adjusted(rep) if rep.n_tests else 1.0, int(rep.n_tests == 0 or bool(rep.inconclusive_reasons))]


def verdict_at(out, level: float) -> str:
    """The report's verdict at family-wise ``level``, as AgreementReport decides it: FAIL when m min p <= level,
    else INCONCLUSIVE when reasons were recorded (or no test), else PASS."""
    adj, reasons = out
    return "FAIL" if adj <= level else ("INCONCLUSIVE" if reasons else "PASS")


def summarize(outcomes: list, level: float) -> dict:
    """Rates over seeds of the verdicts of a list of outcomes: counts and the Clopper-Pearson interval of FAIL."""
    v = [verdict_at(o, level) for o in outcomes]
    n = len(v)
    k = v.count("FAIL")
    lo, hi = clopper_pearson(k, n) if n else (math.nan, math.nan)
    return {"n": n, "fail": k, "inconclusive": v.count("INCONCLUSIVE"), "pass": v.count("PASS"),
            "fail_rate": k / n if n else math.nan, "cp": (lo, hi)}


def render_slow(raw: dict, path: Path) -> None:
    level = raw["level"]
    headers = ["chain", "procedure", "relaxation time", "rarest token mass", "budget", "seeds",
               "false alarms", "rate [CP 95%]", "inconclusive"] + [f"power: {m}" for m in SLOW_MISTAKES]
    rows = []
    for key, res in raw["results"].items():
        seeds = sorted(res["seeds"], key=int)
        if not seeds:
            continue
        budgets = sorted(set.intersection(*[set(res["seeds"][s]) for s in seeds]),
                         key=lambda b: tuple(int(x) for x in b.split(" x ")))
        for b in budgets:
            right = summarize([res["seeds"][s][b]["right"] for s in seeds], level)
            lo, hi = right["cp"]
            row = [key, res["procedure"], f"{res['relaxation_time']:.3g}", f"{res['rarest_token_mass']:.3g}",
                   b + (" (default)" if b == "64 x 2000" else ""), right["n"], right["fail"],
                   f"{right['fail_rate']:.3f} [{lo:.3f}, {hi:.3f}]", f"{right['inconclusive'] / right['n']:.3f}"]
            for m in SLOW_MISTAKES:
                w = summarize([res["seeds"][s][b][m] for s in seeds], level)
                row.append(f"{w['fail'] / w['n']:.2f}")
            rows.append(row)
    notes = [f"Family-wise level {level:g} (semio check's default). false alarms: seeds whose check of the RIGHT "
             "operator said FAIL; the interval is Clopper-Pearson 95%. inconclusive: seeds whose check of the right "
             "operator said INCONCLUSIVE (no test supported by the budget). power: seeds whose check of the "
             "operator built at the wrong temperature (exact side; sampling at the true one) said FAIL.",
             "", "Relaxation time: 1 / spectral gap of the right operator (semio_jax.spectral_gap); rarest token "
             "mass: the smallest stationary probability of a token.",
             "", "Chains marked held-out were run once, after the check's budget rule was fixed; the others were "
             "used while developing it.",
             "", f"Total wall time: {raw['wall_s'] / 60:.1f} min (2 shared CPU cores)."]
    write_table("calibration_slow", headers, rows,
                title="Calibration on slowly mixing chains: false alarms, inconclusive rate and power", notes="\n".join(notes),
                path=path)


def run_slow(args) -> int:
    """The slow-chain study (``--slow``; ``--held-out`` for the held-out chains)."""
    cases = HELD_OUT if args.held_out else DEV_SLOW
    cases = [c for c in cases if args.only is None or args.only in c[0]]
    raw_path = args.raw
    raw = json.loads(raw_path.read_text()) if args.resume and raw_path.exists() else {}
    raw.setdefault("level", SLOW_LEVEL)
    raw.setdefault("results", {})
    raw.setdefault("wall_s", 0.0)
    wall_before, t_start = raw["wall_s"], time.perf_counter()
    budgets = ([tuple(int(x) for x in b.split("x")) for b in args.budgets.split(",")] if args.budgets
               else SLOW_BUDGETS)
    for name, builder, spec in cases:
        case = SlowCase(name, builder, spec)
        print(f"{name} ({spec}): relaxation time {case.relaxation_time:.3g}, rarest token mass "
              f"{case.rarest_token_mass:.3g}", flush=True)
        res = raw["results"].setdefault(name, {"seeds": {}})
        res.update(procedure=spec, relaxation_time=case.relaxation_time, rarest_token_mass=case.rarest_token_mass)
        for seed in range(args.seeds):
            if str(seed) in res["seeds"]:
                continue
            res["seeds"][str(seed)] = case.run(seed, budgets)
            if seed % 20 == 19 or seed == args.seeds - 1:
                raw["wall_s"] = wall_before + time.perf_counter() - t_start
                atomic_write_json(raw_path, raw)
                print(f"  seed {seed}", flush=True)
    raw["wall_s"] = wall_before + time.perf_counter() - t_start
    atomic_write_json(raw_path, raw)
    render_slow(raw, args.table or raw_path.with_suffix(".md"))
    return 0


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
    ap.add_argument("--raw", type=Path, default=None,
                    help="raw results file (default benchmarks/results/calibration_raw.json; with --slow "
                         "calibration_slow_raw.json, with --held-out calibration_heldout_raw.json)")
    ap.add_argument("--slow", action="store_true", help="the study on slowly mixing chains (DEV_SLOW) instead of "
                    "the zoo; --budgets then lists CxT pairs, e.g. 16x500,64x2000")
    ap.add_argument("--held-out", action="store_true", help="with --slow: the held-out chains (HELD_OUT)")
    ap.add_argument("--table", type=Path, default=None,
                    help="Markdown table (default benchmarks/results/calibration.md with the default --raw, "
                         "else the --raw path with suffix .md)")
    args = ap.parse_args(argv)
    if args.slow or args.held_out:
        args.raw = args.raw or RESULTS / ("calibration_heldout_raw.json" if args.held_out else "calibration_slow_raw.json")
        args.table = args.table or args.raw.with_name(args.raw.name.replace("_raw.json", ".md"))
        return run_slow(args)
    args.raw = args.raw or RESULTS / "calibration_raw.json"
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

"""Agreement between exact analyses and sampling: the shared statistics.

Each check is a family of two-sided tests of H0: "the sampled process has the
exact value", at a stated **family-wise** level alpha (default 0.01) with a
Bonferroni correction: the family passes iff every p-value exceeds alpha / m.
Under H0 the probability that a correct operator fails a check is at most alpha
(up to the approximations each check states in its docstring);
benchmarks/calibration.py measures the actual rate.

This module holds what every check shares: one tested quantity (:class:`CheckRow`),
the family and its verdict (:class:`AgreementReport`), and the common tests:
Student's t on i.i.d. replicas (:func:`t_row`), the exact binomial test
(:func:`binomial_row`), Pearson's chi-square (:func:`chi2_row`, and
:func:`gof_test` with pooling of cells whose expected count is below
``min_expected``: the cells are the outcomes with expected count >= min_expected;
the rest are pooled into one cell, merged into the smallest kept cell when its
own expected count is below min_expected; df = cells - 1; an outcome of exact
probability 0 with no pooled mass gives p = 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from ..analysis.evolution import resolve_start
from ..errors import PromptError

__all__ = ["CheckRow", "AgreementReport", "combined_verdict", "t_row", "binomial_row", "chi2_row", "gof_test", "one_start",
           "tokens_str"]


@dataclass
class CheckRow:
    """One tested quantity."""

    quantity: str
    exact: float
    estimate: float
    se: float
    z: float
    p_value: float
    note: str = ""


@dataclass
class AgreementReport:
    """A family of tests with a family-wise level, and its verdict: PASS, FAIL or INCONCLUSIVE.

    Attributes:
      title: what was checked.
      rows: one CheckRow per quantity.
      level: family-wise significance level alpha.
      method: how the p-values were computed.
      settings: everything needed to reproduce the sample (seeds, sizes, procedure).
      inconclusive_reasons: why the budget could not support a valid test of some part of what
        was to be checked (each with the budget that would be needed); empty when it could.
      notes: what was left untested and why, for reading (does not change the verdict).

    Verdict. FAIL when some row's p-value is at or below alpha / m (a valid rejection: every
    row that is reported is valid at its level, so a FAIL is one whatever else could not be
    tested). Otherwise INCONCLUSIVE when the family has no test at all or some reason is recorded,
    and PASS only when there are tests, none rejects, and nothing was out of the budget's reach.
    ``passed`` is True for PASS only; ``inconclusive`` for INCONCLUSIVE only.
    """

    title: str
    rows: list
    level: float
    method: str
    settings: dict = field(default_factory=dict)
    inconclusive_reasons: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def n_tests(self) -> int:
        return len(self.rows)

    @property
    def threshold(self) -> float:
        """Bonferroni per-test threshold alpha / m."""
        return self.level / max(self.n_tests, 1)

    @property
    def min_p(self) -> float:
        return min((r.p_value for r in self.rows), default=1.0)

    def failures(self) -> list:
        return [r for r in self.rows if r.p_value <= self.threshold]

    @property
    def failed(self) -> bool:
        return bool(self.failures())

    @property
    def inconclusive(self) -> bool:
        return not self.failed and (self.n_tests == 0 or bool(self.inconclusive_reasons))

    @property
    def passed(self) -> bool:
        return not self.failed and not self.inconclusive

    @property
    def verdict(self) -> str:
        """"PASS", "FAIL" or "INCONCLUSIVE"."""
        return "FAIL" if self.failed else ("INCONCLUSIVE" if self.inconclusive else "PASS")

    def reasons(self) -> list:
        """The inconclusive reasons, with "no test" when the family is empty."""
        return (["no test: the budget supports none"] if self.n_tests == 0 else []) + list(self.inconclusive_reasons)

    def to_dict(self) -> dict:
        return {
            "title": self.title, "level": self.level, "method": self.method, "n_tests": self.n_tests,
            "threshold": self.threshold, "min_p": self.min_p, "passed": self.passed,
            "inconclusive": self.inconclusive, "verdict": self.verdict, "inconclusive_reasons": self.reasons(),
            "notes": list(self.notes), "settings": self.settings, "rows": [asdict(r) for r in self.rows],
        }

    def table(self, max_rows: int | None = 20) -> str:
        """A readable text table (worst rows first when truncated), the notes and the verdict."""
        rows = sorted(self.rows, key=lambda r: r.p_value) if max_rows and len(self.rows) > max_rows else self.rows
        shown = rows[:max_rows] if max_rows else rows
        head = f"{'quantity':<40} {'exact':>10} {'sampled':>10} {'s.e.':>9} {'z':>7} {'p':>8}"
        lines = [f"{self.title}", head, "-" * len(head)]
        for r in shown:
            lines.append(f"{r.quantity[:40]:<40} {r.exact:>10.5f} {r.estimate:>10.5f} {r.se:>9.2e} "
                         f"{r.z:>7.2f} {r.p_value:>8.3g}")
        if len(shown) < len(self.rows):
            lines.append(f"... {len(self.rows) - len(shown)} more rows (all with larger p)")
        lines += [f"note: {n}" for n in self.notes]
        if self.inconclusive:
            lines += [f"inconclusive: {r}" for r in self.reasons()]
        lines.append(f"{self.verdict}: {self.n_tests} tests, min p = {self.min_p:.3g}, "
                     f"Bonferroni threshold {self.level:g}/{max(self.n_tests, 1)} = {self.threshold:.2e}")
        return "\n".join(lines)



def t_row(name: str, exact: float, est, se: float, df: int, note: str = "",
           frequency: bool = False) -> CheckRow:
    """Two-sided Student t test (df degrees of freedom) of a mean of i.i.d. replicas against ``exact``."""
    est = float(est)
    se = float(se)
    if se > 0:
        z = (est - exact) / se
        p = float(2 * stats.t.sf(abs(z), df))
    else:  # every replica gave the same value
        same = math.isclose(est, exact, rel_tol=1e-9, abs_tol=1e-12)
        z, p = (0.0, 1.0) if same else (math.copysign(math.inf, est - exact), 0.0)
        if not same and frequency and 0.0 < exact < 1.0 and est in (0.0, 1.0):
            # A frequency that no chain (or every chain, always) showed. Each of the df + 1 chains is
            # in the set at its first step with probability `exact` (it starts from pi), so
            # P(all chains at 0) <= (1 - exact)^C and P(all at 1) <= exact^C: a valid p-value
            # where the t statistic is undefined (a rare event missed by a short run is no alarm).
            p = float((1.0 - exact) ** (df + 1) if est == 0.0 else exact ** (df + 1))
    return CheckRow(name, float(exact), est, se, float(z), p, note)


def tokens_str(space, idx: int) -> str:
    """The label of state ``idx`` (its tokens)."""
    return space.label(int(idx))


def binomial_row(name: str, k: int, c: int, p0: float, note: str = "") -> CheckRow:
    """Exact two-sided binomial test of k successes in c i.i.d. trials against probability p0."""
    p0 = float(min(max(p0, 0.0), 1.0))
    se = math.sqrt(p0 * (1 - p0) / c)
    if p0 in (0.0, 1.0):
        ok = k == round(p0 * c)
        z, pv = (0.0, 1.0) if ok else (math.inf, 0.0)
    else:
        z = (k / c - p0) / se
        pv = float(stats.binomtest(int(k), int(c), p0).pvalue)
    return CheckRow(name, p0, k / c, se, float(z), pv, note)


def chi2_row(name: str, chi2: float, df: int, note: str) -> CheckRow:
    """A row for a chi-square statistic with df degrees of freedom (upper-tail p-value)."""
    z = (chi2 - df) / math.sqrt(2 * df)
    return CheckRow(name + " (chi2)", float(df), float(chi2), math.sqrt(2 * df), float(z),
                    float(stats.chi2.sf(chi2, df)), f"chi2={chi2:.2f}, df={df}; {note}")


def gof_test(counts: np.ndarray, probs: np.ndarray, min_expected: float) -> tuple[float, int, float]:
    """(chi2, df, p) of observed ``counts`` [S] against ``probs`` [S] with pooling (see the module docstring)."""
    c = int(counts.sum())
    expected = c * probs
    keep = expected >= min_expected
    obs = list(counts[keep].astype(np.float64))
    exp = list(expected[keep])
    rest_obs, rest_exp = float(counts[~keep].sum()), float(expected[~keep].sum())
    if rest_exp > 0 or rest_obs > 0:
        if rest_exp <= 0.0:
            return math.inf, max(len(obs) - 1, 0), 0.0  # sampled a state the exact law says is impossible
        if rest_exp >= min_expected or not exp:
            obs.append(rest_obs)
            exp.append(rest_exp)
        else:
            j = int(np.argmin(exp))
            obs[j] += rest_obs
            exp[j] += rest_exp
    obs_a, exp_a = np.array(obs), np.array(exp)
    df = obs_a.size - 1
    if df <= 0:
        return 0.0, 0, 1.0
    chi2 = float(((obs_a - exp_a) ** 2 / exp_a).sum())
    return chi2, df, float(stats.chi2.sf(chi2, df))


def one_start(op, start) -> int:
    """The one start state of a check (an index or a prompt); a distribution is a PromptError."""
    s0, _ = resolve_start(op, start)
    if s0 is None:
        raise PromptError("sampling checks need one start state (an index or a prompt), not a distribution")
    return s0


def combined_verdict(verdicts) -> str:
    """The verdict of several checks: FAIL if any failed, else INCONCLUSIVE if any was (or there is none), else PASS."""
    verdicts = list(verdicts)
    if "FAIL" in verdicts:
        return "FAIL"
    return "INCONCLUSIVE" if not verdicts or "INCONCLUSIVE" in verdicts else "PASS"

"""The shared statistics of the agreement checks (semio_jax.agreement.stats)."""

from __future__ import annotations

from semio_jax.agreement.stats import AgreementReport, CheckRow, combined_verdict, t_row


def test_frequency_never_seen_is_no_alarm_when_rare():
    # 64 chains, an n-gram of exact frequency 1e-6 that no chain showed: consistent, p ~ 1
    assert t_row("rare", 1e-6, 0.0, 0.0, 63, frequency=True).p_value > 0.99
    # ... but one of frequency 0.2 that no chain showed is an alarm: p <= 0.8 ** 64
    assert t_row("common", 0.2, 0.0, 0.0, 63, frequency=True).p_value <= 0.8**64
    # ... and a frequency the exact chain forbids but the chains showed is always one
    assert t_row("forbidden", 0.0, 0.01, 0.0, 63, frequency=True).p_value == 0.0


# ------------------------------------------------------------------ verdicts
def _report(rows, reasons=()):
    return AgreementReport("t", rows, 0.01, "m", inconclusive_reasons=list(reasons))


def test_a_report_with_no_test_is_inconclusive_never_pass():
    rep = _report([])
    assert rep.n_tests == 0 and rep.inconclusive and not rep.passed and not rep.failed
    assert rep.verdict == "INCONCLUSIVE" and "INCONCLUSIVE: 0 tests" in rep.table()
    d = rep.to_dict()
    assert d["verdict"] == "INCONCLUSIVE" and d["inconclusive"] and not d["passed"]
    assert d["inconclusive_reasons"] == ["no test: the budget supports none"]


def test_verdicts_of_rows_and_reasons():
    ok = CheckRow("a", 0.5, 0.5, 0.1, 0.0, 0.5)
    bad = CheckRow("b", 0.5, 0.9, 0.1, 4.0, 1e-5)
    assert _report([ok]).verdict == "PASS" and _report([ok]).passed
    with_reason = _report([ok], ["A0: needs 1000 chains x 2000 steps"])
    assert with_reason.verdict == "INCONCLUSIVE" and not with_reason.passed and with_reason.inconclusive
    assert "inconclusive: A0: needs 1000 chains x 2000 steps" in with_reason.table()
    # a valid rejection is a FAIL whatever else could not be tested
    failed = _report([ok, bad], ["something untestable"])
    assert failed.verdict == "FAIL" and failed.failed and not failed.inconclusive and not failed.passed
    # Bonferroni: p = 0.004 rejects alone (threshold 0.01) but not among three rows (threshold 0.0033)
    mid = CheckRow("c", 0.5, 0.6, 0.1, 2.9, 0.004)
    assert _report([mid]).verdict == "FAIL" and _report([mid, ok, ok]).verdict == "PASS"


def test_combined_verdict():
    assert combined_verdict(["PASS", "PASS"]) == "PASS"
    assert combined_verdict(["PASS", "INCONCLUSIVE"]) == "INCONCLUSIVE"
    assert combined_verdict(["INCONCLUSIVE", "FAIL", "PASS"]) == "FAIL"
    assert combined_verdict([]) == "INCONCLUSIVE"

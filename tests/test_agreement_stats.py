"""The shared statistics of the agreement checks (semio_jax.agreement.stats)."""

from __future__ import annotations

from semio_jax.agreement.stats import t_row


def test_frequency_never_seen_is_no_alarm_when_rare():
    # 64 chains, an n-gram of exact frequency 1e-6 that no chain showed: consistent, p ~ 1
    assert t_row("rare", 1e-6, 0.0, 0.0, 63, frequency=True).p_value > 0.99
    # ... but one of frequency 0.2 that no chain showed is an alarm: p <= 0.8 ** 64
    assert t_row("common", 0.2, 0.0, 0.0, 63, frequency=True).p_value <= 0.8**64
    # ... and a frequency the exact chain forbids but the chains showed is always one
    assert t_row("forbidden", 0.0, 0.01, 0.0, 63, frequency=True).p_value == 0.0

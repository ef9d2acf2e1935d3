"""DRN export (semio_jax.app.export): format, labels, exact floats, atomic writes. No Storm needed."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given

import semio_jax as sj
from semio_jax.app.export import drn_text, to_drn
from semio_jax.testing import operators


def parse_drn(text: str):
    """A tiny independent DRN reader: ({state: [labels]}, {state: {succ: prob}}, header dict)."""
    labels, rows, header = {}, {}, {}
    lines = [ln for ln in text.splitlines() if not ln.startswith("//")]
    i = 0
    while lines[i] != "@model":
        if lines[i].startswith("@"):
            key = lines[i].split(":")[0]
            header[key] = lines[i + 1] if key in ("@nr_states", "@nr_choices") else lines[i]
        i += 1
    state = None
    for ln in lines[i + 1:]:
        if ln.startswith("state "):
            parts = ln.split()
            state = int(parts[1])
            labels[state] = parts[2:]
            rows[state] = {}
        elif ln.strip().startswith("action"):
            assert ln.strip() == "action 0"
        elif ln.strip():
            t, p = ln.strip().split(" : ")
            rows[state][int(t)] = float(p)
    return labels, rows, header


@pytest.mark.property
@given(operators())
def test_drn_round_trips_the_table(op):
    labels, rows, header = parse_drn(drn_text(op))
    assert int(header["@nr_states"]) == op.num_states == int(header["@nr_choices"])
    assert "@type: DTMC" in drn_text(op)
    assert sorted(rows) == list(range(op.num_states))
    for s in range(op.num_states):
        expected = {}
        for y in range(op.n_tokens):
            if op.probs[s, y] > 0:
                expected[op.space.successor(s, y)] = expected.get(op.space.successor(s, y), 0.0) + op.probs[s, y]
        assert rows[s] == expected  # bit-exact: floats written with repr
    atts = sj.attractors(op)
    for s in range(op.num_states):
        toks = op.space.tokens(s)
        assert f"token_{toks[-1]}" in labels[s]
        a = [int(x.split("_")[1]) for x in labels[s] if x.startswith("attractor_")]
        assert a == ([i for i, m in enumerate(atts) if s in set(m.tolist())])
    init = [s for s in range(op.num_states) if "init" in labels[s]]
    if op.space.prefixes and op.space.length > 1:
        assert init == list(op.space.group(1))
    else:
        assert init == list(range(op.space.num_full))


def test_to_drn_writes_atomically(tmp_path, ngram3):
    op = sj.build_operator(ngram3, sj.StateSpace(3, 2), "top_k=2")
    path = tmp_path / "chain.drn"
    assert to_drn(op, path, initial=4, labels={"start": [0, 1]}) == str(path)
    text = path.read_text()
    labels, rows, _ = parse_drn(text)
    assert [s for s in labels if "init" in labels[s]] == [4]
    assert [s for s in labels if "start" in labels[s]] == [0, 1]
    assert os.listdir(tmp_path) == ["chain.drn"], "no temporary file may be left behind"
    # overwriting replaces the whole file
    to_drn(op, path, initial=[1, 2])
    labels, _, _ = parse_drn(path.read_text())
    assert [s for s in labels if "init" in labels[s]] == [1, 2]
    assert os.listdir(tmp_path) == ["chain.drn"]


def test_to_drn_errors(tmp_path, ngram3):
    op = sj.build_operator(ngram3, sj.StateSpace(3, 2))
    with pytest.raises(ValueError, match="bad DRN label"):
        to_drn(op, tmp_path / "x.drn", labels={"bad label": [0]})
    with pytest.raises(ValueError):
        to_drn(op, tmp_path / "x.drn", labels={"init": [0]})
    with pytest.raises(IndexError):
        to_drn(op, tmp_path / "x.drn", initial=[op.num_states])
    with pytest.raises(ValueError, match="at least one initial"):
        to_drn(op, tmp_path / "x.drn", initial=[])
    with pytest.raises(OSError):
        to_drn(op, tmp_path / "missing" / "x.drn")
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_drn_header_mentions_the_procedure(ngram3):
    op = sj.build_operator(ngram3, sj.StateSpace(3, 2), "temperature=0.5")
    text = drn_text(op, attractor_labels=False)
    assert "// procedure: temperature=0.5" in text and op.fingerprint in text
    assert not re.search(r"attractor_\d", text)

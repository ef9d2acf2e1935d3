"""Tests of semio_models.corpus and the corpus sources (sources.CorpusSource): loading, window laws, exact loss."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from semio_jax.errors import DataError, StateSpaceTooLargeError, UnknownTokenError
from semio_models import corpus
from semio_models.alphabet import Alphabet
from semio_models.sources import (
    parse_source,
    pydoc_source,
    source_from_spec,
    text_source,
    tokens_source,
)
from semio_models.train import exact_loss, exact_loss_problem
from semio_models.transformer import TransformerConfig, TransformerModel

TEXT = "The cat sat on the mat.\nThe dog sat on the log!\n"


def cyclic_counts(seq, k):
    """Counter of the T cyclic k-windows of seq, by brute force."""
    T = len(seq)
    return collections.Counter(tuple(seq[(t + j) % T] for j in range(k)) for t in range(T))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_text_source_window_laws_are_cyclic_counts(text_file):
    src = text_source(text_file, "letters")
    seq = list(src.tokens)
    assert src.alphabet.decode(seq) == "the cat sat on the mat the dog sat on the log "
    T, N = len(seq), src.n_tokens
    for k in (1, 2, 3):
        w = src.window_probs(k)
        counts = cyclic_counts(seq, k)
        assert w.shape == (N**k,) and w.sum() == pytest.approx(1.0)
        for window, c in counts.items():
            index = sum(t * N ** (k - 1 - j) for j, t in enumerate(window))
            assert w[index] == pytest.approx(c / T, abs=1e-15)
        assert np.count_nonzero(w) == len(counts)
        # consistency of the laws: both ends sum out to the shorter window law
        w2 = src.window_probs(k + 1).reshape(N**k, N)
        np.testing.assert_allclose(w2.sum(1), w, atol=1e-15)
        np.testing.assert_allclose(src.window_probs(k + 1).reshape(N, N**k).sum(0), w, atol=1e-15)
        h = -sum(c / T * math.log(c / T) for c in counts.values())
        assert src.window_entropy(k) == pytest.approx(h, abs=1e-12)


def test_next_token_probs_and_context_table(text_file):
    src = text_source(text_file, "letters")
    a, seq = src.alphabet, list(src.tokens)
    ctx = a.encode("sat ")
    p = src.next_token_probs(ctx[None, :])[0]
    c4, c5 = cyclic_counts(seq, 4), cyclic_counts(seq, 5)
    follow = {w[-1]: c for w, c in c5.items() if w[:4] == tuple(ctx)}
    assert p[a.encode("o")[0]] == pytest.approx(follow[a.encode("o")[0]] / sum(follow.values()))
    assert p.sum() == pytest.approx(1.0)
    assert np.isnan(src.next_token_probs(a.encode("zzz")[None, :])).all()  # a context that never occurs
    contexts, joint = src.context_table(3)
    assert len(contexts) == len(cyclic_counts(seq, 3))  # every occurring context once
    for row, j in zip(contexts, joint):
        for y in np.flatnonzero(j):
            assert j[y] == pytest.approx(c4[tuple(row) + (y,)] / len(seq))
    assert src.exact_loss_cells(3) == len(contexts) * src.n_tokens


def test_sample_reads_cyclic_windows(text_file):
    src = text_source(text_file, "letters")
    x = src.sample(3, 200, 7)
    assert x.shape == (200, 7) and x.dtype == np.int32
    windows = set(cyclic_counts(list(src.tokens), 7))
    assert all(tuple(row) in windows for row in x)
    np.testing.assert_array_equal(x, src.sample(3, 200, 7))
    assert not np.array_equal(x, src.sample(4, 200, 7))


def test_corpus_has_no_entropy_rate(text_file):
    src = text_source(text_file)
    assert not src.exact_entropy_rate
    with pytest.raises(DataError, match="conditional_entropy"):
        src.entropy_rate


def test_exact_loss_on_a_corpus_is_the_average_over_its_windows(text_file):
    """Independent check: the mean of -log q over all T cyclic windows, evaluated window by window."""
    src = text_source(text_file, "letters")
    L = 3
    model = TransformerModel.random(TransformerConfig(n_tokens=src.n_tokens, context_length=L, n_layers=1,
                                                      d_model=8, n_heads=2), seed=0)
    e = exact_loss(model, src)
    T = src.tokens.size
    idx = (np.arange(T)[:, None] + np.arange(L + 1)[None, :]) % T
    x = src.tokens[idx]  # [T, L+1]
    logits = np.asarray(model.logits_all(x[:, :L]), dtype=np.float64)  # [T, L, N]
    logq = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    direct = -np.take_along_axis(logq, x[:, 1:, None], axis=-1)[..., 0].mean(0)  # [L]
    np.testing.assert_allclose(e.per_position, direct, rtol=1e-9)
    h = [src.conditional_entropy(k) for k in range(2, L + 2)]
    np.testing.assert_allclose(e.optimal_per_position, h)
    assert e.entropy_rate is None and (e.per_position > e.optimal_per_position).all()
    assert exact_loss_problem(src.n_tokens, L, src, max_windows=10) is not None
    with pytest.raises(StateSpaceTooLargeError, match="max_windows=10"):
        exact_loss(model, src, max_windows=10)


def test_token_files(tmp_path):
    seq = np.array([0, 1, 2, 1, 0, 3, 3, 1], dtype=np.int64)
    np.save(tmp_path / "t.npy", seq)
    (tmp_path / "t.txt").write_text("0 1, 2\n1 0 3\t3,1\n")
    a, b = parse_source(f"tokens:{tmp_path / 't.npy'}"), parse_source(f"tokens:{tmp_path / 't.txt'}")
    for src in (a, b):
        assert src.n_tokens == 4 and src.tokens.tolist() == seq.tolist() and src.alphabet is None
    np.testing.assert_array_equal(a.window_probs(2), b.window_probs(2))
    assert source_from_spec(a.spec()) == a and a.cli_string() == f"tokens:{tmp_path / 't.npy'}"
    for content, match in (("0 1 x", "'x'"), ("5", "at least 2"), ("0 -1 2", "negative")):
        (tmp_path / "bad.txt").write_text(content)
        with pytest.raises(DataError, match=match):
            tokens_source(tmp_path / "bad.txt")
    np.save(tmp_path / "f.npy", seq.astype(float))
    with pytest.raises(DataError, match="integer"):
        tokens_source(tmp_path / "f.npy")
    with pytest.raises(UnknownTokenError):
        tokens_source(tmp_path / "t.txt", n_tokens=3)


def test_text_files_errors_and_spec(text_file, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        parse_source(f"text:{tmp_path / 'missing.txt'}")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        text_source(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        text_source(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="alphabet applies"):
        parse_source("coin", alphabet="letters")
    with pytest.raises(UnknownTokenError, match="'T'"):
        parse_source(f"text:{text_file}", alphabet="abc")
    src = parse_source(f"text:{text_file}")  # the file's own alphabet: the text reads exactly
    assert src.alphabet.decode(src.tokens) == TEXT and src.n_tokens == len(set(TEXT))
    again = source_from_spec(src.spec())
    assert again == src and again.alphabet == src.alphabet
    text_file.write_text(TEXT + "x")
    with pytest.raises(DataError, match="SHA-256"):
        source_from_spec(src.spec())


def test_pydoc_corpus_provenance():
    src = pydoc_source()
    info = src.corpus
    assert src.n_tokens == 27 and src.alphabet == Alphabet.letters()
    assert "PSF" in info["license"] or "Python Software Foundation" in info["license"]
    assert info["sha256"] == corpus.sha256_text(corpus.pydoc_text()) and info["n_chars"] > 100_000
    assert src.tokens.size == info["n_tokens_read"] > 100_000
    assert src.alphabet.decode(src.tokens[:1000]) == Alphabet.letters().decode(
        Alphabet.letters().encode(corpus.pydoc_text()[:5000]))[:1000]
    assert parse_source("pydoc") == src and src.cli_string() == "pydoc"
    with pytest.raises(DataError, match="SHA-256"):
        source_from_spec({**src.spec(), "sha256": "0" * 64})

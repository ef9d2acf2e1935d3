"""app/prompts.py: prompts are read in the syntax every command prints them in."""

from __future__ import annotations

import pytest

import semio_jax as sj
from semio_jax.app.prompts import format_tokens, parse_tokens


@pytest.mark.parametrize("text,n,want", [
    ("01", 2, [0, 1]),          # digits, one token each, for N <= 10 (as `semio sample` prints them)
    ("0,1", 2, [0, 1]),
    ("2", 3, [2]),
    ("0120", 3, [0, 1, 2, 0]),
    ("12", 20, [12]),           # N > 10: a number is one token
    ("3,12,0", 20, [3, 12, 0]),
])
def test_token_syntax(text, n, want):
    assert parse_tokens(text, n) == want


@pytest.mark.parametrize("toks,n", [([0, 1, 1], 2), ([2, 0], 3), ([12, 3, 0], 20), ([9, 9], 10)])
def test_printed_form_reads_back(toks, n):
    shown = format_tokens(toks, n)
    assert parse_tokens(shown, n) == toks
    assert shown == sj.StateSpace(n, len(toks), prefixes=False).label(
        sj.StateSpace(n, len(toks), prefixes=False).index(toks))  # the same form as state labels


@pytest.mark.parametrize("text,n", [("", 2), ("a", 2), (",", 2), ("1.5", 2)])
def test_unreadable_prompts_are_prompt_errors(text, n):
    with pytest.raises(sj.PromptError):
        parse_tokens(text, n)


@pytest.mark.parametrize("text,n", [("2", 2), ("0,5", 3), ("13", 3), ("3,20", 20)])
def test_tokens_outside_the_alphabet_are_unknown_token_errors(text, n):
    with pytest.raises(sj.UnknownTokenError):
        parse_tokens(text, n)


class _Letters:
    """A stand-in text alphabet: encode/decode/symbols."""
    symbols = "ab "

    def encode(self, text):
        bad = [c for c in text if c not in self.symbols]
        if bad:
            raise sj.UnknownTokenError(f"character {bad[0]!r} is not in the alphabet")
        return [self.symbols.index(c) for c in text]

    def decode(self, toks):
        return "".join(self.symbols[t] for t in toks)


def test_text_models_read_and_print_text():
    alpha = _Letters()
    assert parse_tokens("ab a", 3, alpha) == [0, 1, 2, 0]
    assert format_tokens([1, 2, 0], 3, alpha) == "b a"
    assert parse_tokens(" ", 3, alpha) == [2]  # a space is a text prompt
    with pytest.raises(sj.UnknownTokenError):
        parse_tokens("abc", 3, alpha)
    with pytest.raises(sj.PromptError):
        parse_tokens("", 3, alpha)

"""Tests of semio_models.alphabet: reading text as tokens and printing tokens as text."""

from __future__ import annotations

import json
import re
import unicodedata

import numpy as np
import pytest

from semio_jax.errors import PromptError, UnknownTokenError
from semio_models.alphabet import LETTERS, Alphabet, alphabet_from_card


def letters_reference(text: str) -> str:
    """The letters rule written independently: strip accents, lower-case, non-letters -> one space per run."""
    plain = "".join(unicodedata.normalize("NFKD", c)[:1] for c in text).lower()
    return re.sub(r"[^a-z]+", " ", plain)


def test_letters_reads_like_the_reference():
    a = Alphabet.letters()
    assert a.n_tokens == 27 and a.symbols == LETTERS and a.symbols[0] == " "
    text = "Hello, World!\n\tThe  café's __init__() returns 42 ÉTÉ"
    tokens = a.encode(text)
    assert tokens.dtype == np.int32
    assert a.decode(tokens) == letters_reference(text) == "hello world the cafe s init returns ete"
    np.testing.assert_array_equal(tokens[:5], [LETTERS.index(c) for c in "hello"])
    assert a.encode("").size == 0


def test_from_text_is_exact_and_sorted():
    text = "ba\ncab!\n"
    a = Alphabet.from_text(text)
    assert a.symbols == "\n!abc" and a.other is None
    assert a.decode(a.encode(text)) == text
    with pytest.raises(UnknownTokenError, match="'z'.*position 1"):
        a.encode("az")
    with pytest.raises(UnknownTokenError, match="'A'"):  # no case folding for a file's own alphabet
        a.encode("A")


def test_parse_and_card_round_trip():
    text = "Some text."
    assert Alphabet.parse("letters") == Alphabet.letters()
    assert Alphabet.parse(None, text) == Alphabet.parse("file", text) == Alphabet.from_text(text)
    custom = Alphabet.parse("ab ")
    assert custom.other == " " and custom.fold_case and custom.collapse
    assert custom.decode(custom.encode("A, B; c")) == "a b "
    strict = Alphabet.parse("ab")
    assert strict.decode(strict.encode("AbBa")) == "abba"
    with pytest.raises(UnknownTokenError):
        strict.encode("abc")
    for a in (Alphabet.letters(), custom, strict, Alphabet.from_text(text)):
        card = json.loads(json.dumps({"alphabet": a.to_dict()}))
        assert alphabet_from_card(card) == a and alphabet_from_card(card).describe() == card["alphabet"]["rule"]
    assert alphabet_from_card({"name": "coin"}) is None and alphabet_from_card(None) is None
    with pytest.raises(ValueError, match="file needs the text"):
        Alphabet.parse("file")


@pytest.mark.parametrize("symbols, kwargs, match", [
    ("a", {}, "at least 2"),
    ("aba", {}, "distinct"),
    ("ab", {"other": "c"}, "one of the symbols"),
    ("ab", {"collapse": True}, "other"),
])
def test_bad_alphabets(symbols, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Alphabet(symbols, **kwargs)


def test_prompts_and_decoding_errors():
    a = Alphabet.letters()
    assert a.encode_prompt("The ") == [20, 8, 5, 0]
    assert a.decode(a.encode_prompt("The ")) == "the "
    with pytest.raises(PromptError):
        a.encode_prompt("")
    with pytest.raises(UnknownTokenError, match="27"):
        a.decode([0, 27])
    with pytest.raises(UnknownTokenError, match="-1"):
        a.decode([-1])


def test_collapse_only_merges_other_runs():
    a = Alphabet.letters()
    np.testing.assert_array_equal(a.encode("aa  ,, bb"), [1, 1, 0, 2, 2])
    b = Alphabet(" ab", other=" ", fold_case=True)  # no collapse: every character is one token
    np.testing.assert_array_equal(b.encode("a ,b"), [1, 0, 0, 2])

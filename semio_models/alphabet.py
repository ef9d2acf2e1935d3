"""Characters <-> tokens for character-level models.

An :class:`Alphabet` is a string of distinct characters ``symbols``: token i is
the character ``symbols[i]``. Reading text (``encode``) maps every character c
to a token by the first rule that applies:

1. c is a symbol: its own token;
2. ``fold_case`` and c's lower-case (or upper-case) form is a symbol: that token;
3. ``fold_case`` and c without accents (the first character of its Unicode NFKD
   decomposition, so ``é`` -> ``e``) is a symbol, directly or through rule 2: that token;
4. ``other`` is set: the token of ``other`` (for the ``letters`` alphabet, a space);
5. otherwise the character cannot be read: ``UnknownTokenError`` names it.

With ``collapse`` on, each run of consecutive ``other`` tokens (from rule 1 or
rule 4) becomes a single one, so ``"Hello, World!"`` reads as ``"hello world "``
in the ``letters`` alphabet. ``decode`` prints tokens back as the symbols.
Reading is deterministic and a function of the text alone, so a prompt typed
by a user reads exactly as the same characters read in the training corpus.

Alphabets in use:

* ``Alphabet.letters()``: the 27 symbols ``" abcdefghijklmnopqrstuvwxyz"``
  (space = token 0, a = 1, ..., z = 26); case folded, accents stripped, every
  other character (digits, punctuation, newlines, ...) is a space, runs of
  spaces collapse to one.
* ``Alphabet.from_text(text)``: the distinct characters of a text, sorted by
  code point; no folding, no ``other``: that text reads exactly.
* ``Alphabet.parse(arg, text)``: the CLI's ``--alphabet`` (``letters``, ``file``,
  or the symbols themselves; given symbols containing a space use the space as
  ``other`` with runs collapsed, and fold case).

A model card stores the alphabet as ``card["alphabet"] = alphabet.to_dict()``;
``alphabet_from_card(card)`` rebuilds it (``None`` for a model without one),
so prompts (``alphabet.encode("the ")``) and outputs (``alphabet.decode(tokens)``)
can be shown as text.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Iterable

import numpy as np

from semio_jax.errors import PromptError, UnknownTokenError

__all__ = ["Alphabet", "LETTERS", "alphabet_from_card", "MAX_SYMBOLS"]

LETTERS = " abcdefghijklmnopqrstuvwxyz"
MAX_SYMBOLS = 256  # the largest alphabet a text model may have


class Alphabet:
    """Token i <-> ``symbols[i]``, with the reading rules of the module docstring."""

    def __init__(self, symbols: str, *, other: str | None = None, fold_case: bool = False, collapse: bool = False):
        if not isinstance(symbols, str) or len(symbols) < 2:
            raise ValueError(f"an alphabet needs at least 2 symbols, got {symbols!r}")
        if len(set(symbols)) != len(symbols):
            dup = sorted({c for c in symbols if symbols.count(c) > 1})
            raise ValueError(f"the alphabet's symbols must be distinct; repeated: {dup!r}")
        if len(symbols) > MAX_SYMBOLS:
            raise ValueError(f"an alphabet has at most {MAX_SYMBOLS} symbols, got {len(symbols)}")
        if other is not None and other not in symbols:
            raise ValueError(f"other={other!r} must be one of the symbols {symbols!r}")
        if collapse and other is None:
            raise ValueError("collapse=True needs an `other` symbol whose runs collapse")
        self.symbols = symbols
        self.other = other
        self.fold_case = bool(fold_case)
        self.collapse = bool(collapse)
        self._index = {c: i for i, c in enumerate(symbols)}
        self._cache: dict[str, int | None] = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def letters(cls) -> "Alphabet":
        """Space and a-z (27 symbols); case folded, accents stripped, anything else a space, runs collapsed."""
        return cls(LETTERS, other=" ", fold_case=True, collapse=True)

    @classmethod
    def from_text(cls, text: str) -> "Alphabet":
        """The distinct characters of ``text`` sorted by code point (the text reads exactly)."""
        symbols = "".join(sorted(set(text)))
        if len(symbols) > MAX_SYMBOLS:
            raise ValueError(
                f"the text has {len(symbols)} distinct characters, more than {MAX_SYMBOLS}; "
                "choose a smaller alphabet (e.g. --alphabet letters)"
            )
        return cls(symbols)

    @classmethod
    def parse(cls, arg: str | None, text: str | None = None) -> "Alphabet":
        """The CLI's ``--alphabet``: ``letters``, ``file`` / None (from ``text``), or the symbols themselves."""
        if arg is None or arg == "file":
            if text is None:
                raise ValueError("--alphabet file needs the text to read the alphabet from")
            return cls.from_text(text)
        if arg == "letters":
            return cls.letters()
        other = " " if " " in arg else None
        return cls(arg, other=other, fold_case=True, collapse=other is not None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in model cards); ``rule`` is a human-readable summary."""
        return {"symbols": self.symbols, "other": self.other, "fold_case": self.fold_case,
                "collapse": self.collapse, "rule": self.describe()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Alphabet":
        if not isinstance(d, dict) or not isinstance(d.get("symbols"), str):
            raise ValueError(f"an alphabet dict needs a 'symbols' string, got {d!r}")
        return cls(d["symbols"], other=d.get("other"), fold_case=bool(d.get("fold_case", False)),
                   collapse=bool(d.get("collapse", False)))

    def describe(self) -> str:
        parts = [f"token i is symbols[i] ({self.n_tokens} symbols)"]
        if self.fold_case:
            parts.append("other-case letters read as their case in the alphabet, accents stripped")
        if self.other is not None:
            parts.append(f"every other character reads as {self.other!r}")
            if self.collapse:
                parts.append(f"runs of {self.other!r} collapse to one")
        else:
            parts.append("any other character is an error")
        return "; ".join(parts)

    # ------------------------------------------------------------------ reading and printing

    @property
    def n_tokens(self) -> int:
        return len(self.symbols)

    def _map_char(self, c: str) -> int | None:
        if c in self._cache:
            return self._cache[c]
        tok = self._index.get(c)
        if tok is None and self.fold_case:
            for form in (c.lower(), c.upper()):
                if form in self._index:
                    tok = self._index[form]
                    break
            if tok is None:
                base = unicodedata.normalize("NFKD", c)[:1]
                if base and base != c:
                    for form in (base, base.lower(), base.upper()):
                        if form in self._index:
                            tok = self._index[form]
                            break
        if tok is None and self.other is not None:
            tok = self._index[self.other]
        self._cache[c] = tok
        return tok

    def encode(self, text: str) -> np.ndarray:
        """int32 [T]: the tokens of ``text`` under the reading rules (UnknownTokenError if one cannot be read)."""
        if not isinstance(text, str):
            raise TypeError(f"encode reads a str, got {type(text).__name__}")
        table = {c: self._map_char(c) for c in set(text)}
        bad = [c for c, t in table.items() if t is None]
        if bad:
            first = min(bad, key=text.index)
            raise UnknownTokenError(
                f"character {first!r} (at position {text.index(first)}) is not in the alphabet {self.symbols!r} "
                f"and the alphabet maps no other characters; choose an alphabet with a space (other characters "
                f"then read as spaces) or --alphabet file"
            )
        lut = np.zeros(max(map(ord, table), default=0) + 1, dtype=np.int32)
        for c, t in table.items():
            lut[ord(c)] = t
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # [T] code points
        tokens = lut[codes]  # [T]
        if self.collapse and tokens.size:
            o = self._index[self.other]
            keep = np.ones(tokens.size, dtype=bool)
            keep[1:] = ~((tokens[1:] == o) & (tokens[:-1] == o))
            tokens = tokens[keep]
        return tokens.astype(np.int32)

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt typed as text -> token ids (PromptError if empty, UnknownTokenError if unreadable)."""
        tokens = self.encode(text)
        if tokens.size == 0:
            raise PromptError("the prompt is empty: type at least one character")
        return [int(t) for t in tokens]

    def decode(self, tokens: Iterable[int]) -> str:
        """The symbols of ``tokens`` (UnknownTokenError for an id outside 0..N-1)."""
        out = []
        for t in tokens:
            t = int(t)
            if not 0 <= t < self.n_tokens:
                raise UnknownTokenError(f"token id {t} is outside the alphabet 0..{self.n_tokens - 1}")
            out.append(self.symbols[t])
        return "".join(out)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.symbols, self.other, self.fold_case, self.collapse))

    def __repr__(self) -> str:
        return f"Alphabet({self.symbols!r}, other={self.other!r}, fold_case={self.fold_case}, collapse={self.collapse})"


def alphabet_from_card(card: dict[str, Any] | None) -> Alphabet | None:
    """The alphabet a model card records (``card["alphabet"]``), or None for a model over bare token ids."""
    if not card or card.get("alphabet") is None:
        return None
    return Alphabet.from_dict(card["alphabet"])

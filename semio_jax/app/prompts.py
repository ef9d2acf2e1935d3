"""Prompts and targets on the command line, read and printed in one syntax.

A token sequence is written the way :meth:`StateSpace.label` prints states, and
every command reads back what it prints:

* comma-separated token ids, oldest first: ``0,1,2`` (any alphabet);
* for an alphabet of at most 10 tokens, the digits without commas: ``012`` is
  the tokens 0, 1, 2 (so ``--prompt 01`` is the two tokens 0 and 1, exactly as
  ``semio sample`` prints that prompt);
* for a text model (a model card with an ``alphabet``), the text itself:
  ``--prompt "the "``, encoded by the model's alphabet and printed back as text.

An alphabet is any object with ``encode(text) -> tokens``, ``decode(tokens)
-> text`` and ``symbols``; the CLI finds a model's (``cli.model_alphabet``)
from the card's ``alphabet`` entry through ``semio_models.alphabet``.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import PromptError, UnknownTokenError

__all__ = ["parse_tokens", "format_tokens"]


def parse_tokens(text: str, n_tokens: int, alphabet=None, what: str = "prompt") -> list[int]:
    """Read a token sequence (module docstring): PromptError if it cannot be read, UnknownTokenError
    for a token outside the alphabet 0..N-1."""
    if text is None or not str(text) or (alphabet is None and not str(text).strip(", ")):
        raise PromptError(f"the {what} is empty: give at least one token, e.g. 0 or 0,1 (or text for a text model)")
    if alphabet is not None:  # text: the alphabet's own errors (UnknownTokenError) name the character
        toks = [int(t) for t in alphabet.encode(str(text))]
    else:
        raw = str(text).strip()
        try:
            if "," in raw:
                toks = [int(t) for t in raw.split(",") if t.strip()]
            elif n_tokens <= 10 and raw.isdigit():
                toks = [int(c) for c in raw]  # one digit per token, as labels print them
            else:
                toks = [int(raw)]
        except ValueError:
            raise PromptError(f"cannot read the {what} {text!r}: write comma-separated token ids, e.g. 0,1,2"
                              + (" (or the digits 012)" if n_tokens <= 10 else "")) from None
    bad = [t for t in toks if not 0 <= t < n_tokens]
    if bad:
        raise UnknownTokenError(f"the {what} {text!r} has tokens {bad} outside the alphabet 0..{n_tokens - 1}")
    if not toks:
        raise PromptError(f"the {what} {text!r} has no tokens")
    return toks


def format_tokens(tokens: Sequence[int], n_tokens: int, alphabet=None) -> str:
    """Tokens as :func:`parse_tokens` reads them back (and as StateSpace.label prints states)."""
    toks = [int(t) for t in tokens]
    if alphabet is not None:
        return str(alphabet.decode(toks))
    return ("" if n_tokens <= 10 else ",").join(map(str, toks))

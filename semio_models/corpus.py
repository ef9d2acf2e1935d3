"""Reading training corpora: text files, token files, and CPython's documentation text.

* ``read_text(path)``: a UTF-8 text file -> (text, SHA-256 of its bytes).
* ``read_tokens(path)``: integer tokens -> (int32 array [T], SHA-256 of the file's bytes).
  A ``.npy`` file holds a 1-D integer array; any other file is text holding
  integers separated by whitespace and/or commas.
* ``pydoc_text()``: the documentation text that ships with CPython's standard
  library (``pydoc_data.topics``, the topic help of ``help()``), as one string:
  the topics in sorted key order joined by newlines. Its provenance and
  license are in ``pydoc_provenance()``; the text depends on the Python
  version, so a model card records its SHA-256 and the Python version.

``load_text``, ``load_tokens`` and ``load_pydoc`` return the keyword arguments of
``sources.CorpusSource`` (tokens, n_tokens, spec, name, alphabet, corpus): the
token sequence, the spec that rebuilds it (with the SHA-256 that pins it), and
the provenance a model card records under ``corpus``.

Every failure is a ``DataError`` that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from semio_jax.errors import DataError

from .alphabet import Alphabet

__all__ = ["read_text", "read_tokens", "pydoc_text", "pydoc_provenance", "sha256_text",
           "load_text", "load_tokens", "load_pydoc"]

PYDOC_LICENSE = (
    "Python Software Foundation License Version 2 (the PSF License Agreement, which covers CPython and "
    "its documentation; https://docs.python.org/3/license.html). The text is Copyright (c) 2001 "
    "Python Software Foundation, all rights reserved; the PSF License grants a nonexclusive, royalty-free, "
    "world-wide license to reproduce, analyze, prepare derivative works, distribute and otherwise use it, "
    "provided the PSF copyright notice is retained."
)


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"corpus file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"corpus path {str(path)!r} is a folder, not a file") from None
    except OSError as e:
        raise DataError(f"cannot read corpus file {str(path)!r}: {e.strerror or e}") from e


def read_text(path: str | os.PathLike) -> tuple[str, str]:
    """(text, hex SHA-256 of the file's bytes) of a UTF-8 text file."""
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"corpus file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text:
        raise DataError(f"corpus file {str(path)!r} is empty")
    return text, hashlib.sha256(data).hexdigest()


def read_tokens(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """(int32 tokens [T], hex SHA-256 of the file's bytes): a ``.npy`` 1-D integer array or integers as text."""
    data = _read_bytes(path)
    name = str(path)
    if name.endswith(".npy"):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"token file {name!r} is not a readable .npy array: {e}") from None
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"token file {name!r} must hold a 1-D integer array, got {arr.dtype} of shape {arr.shape}")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"token file {name!r} is neither .npy nor text") from None
        items = [s for s in re.split(r"[\s,]+", text) if s]
        try:
            arr = np.array([int(s) for s in items], dtype=np.int64)
        except ValueError:
            bad = next(s for s in items if not re.fullmatch(r"[+-]?\d+", s))
            raise DataError(f"token file {name!r} holds {bad!r}, not an integer token id") from None
    if arr.size < 2:
        raise DataError(f"token file {name!r} holds {arr.size} token(s); training needs at least 2")
    if arr.min() < 0:
        raise DataError(f"token file {name!r} holds the negative token id {int(arr.min())}")
    if arr.max() >= 2**31:
        raise DataError(f"token file {name!r} holds the token id {int(arr.max())}, too large")
    return arr.astype(np.int32), hashlib.sha256(data).hexdigest()


def _pydoc_topics() -> dict[str, str]:
    try:  # optional: some distributions strip pydoc_data; imported only when asked for (465 kB of text)
        from pydoc_data.topics import topics
    except ImportError as e:
        raise DataError(f"this Python has no pydoc_data.topics (the documentation corpus): {e}") from None
    return topics


def pydoc_text() -> str:
    """CPython's ``pydoc_data.topics`` texts in sorted key order, joined by newlines."""
    topics = _pydoc_topics()
    return "\n".join(topics[k] for k in sorted(topics))


def pydoc_provenance() -> dict[str, Any]:
    """Where the pydoc corpus comes from and under which license (for model cards)."""
    text = pydoc_text()
    return {
        "name": "CPython documentation topics (pydoc_data.topics)",
        "origin": "the module pydoc_data/topics.py of the Python standard library, generated from the "
                  "CPython documentation sources (Doc/) by Sphinx's pydoc-topics builder; the text help() shows",
        "python": sys.version.split()[0],
        "n_topics": len(_pydoc_topics()),
        "n_chars": len(text),
        "sha256": sha256_text(text),
        "join": "topics in sorted key order, joined by newlines",
        "license": PYDOC_LICENSE,
    }


def _alphabet(alphabet: Alphabet | str | None, text: str) -> Alphabet:
    try:
        return alphabet if isinstance(alphabet, Alphabet) else Alphabet.parse(alphabet, text)
    except ValueError as e:
        raise DataError(f"bad alphabet: {e}") from None


def _check_sha(what: str, found: str, expected: str | None) -> None:
    if expected is not None and expected != found:
        raise DataError(f"{what} differs from the recorded one: SHA-256 expected {expected}, found {found}")


def load_text(path: str | os.PathLike, alphabet: Alphabet | str | None = None,
              sha256: str | None = None) -> dict[str, Any]:
    """A UTF-8 text file read in ``alphabet`` (an Alphabet or the CLI's --alphabet; default: the file's characters).

    ``sha256``: the file's expected hash (DataError before reading it as text if it differs).
    """
    text, sha = read_text(path)
    _check_sha(f"the text corpus {str(path)!r}", sha, sha256)
    alpha = _alphabet(alphabet, text)
    tokens = alpha.encode(text)
    corpus = {"name": Path(path).name, "path": str(path), "sha256": sha, "n_chars": len(text),
              "n_tokens_read": int(tokens.size), "mapping": alpha.describe(), "cyclic": True}
    spec = {"kind": "text", "path": str(path), "sha256": sha, "alphabet": alpha.to_dict()}
    return {"tokens": tokens, "n_tokens": alpha.n_tokens, "spec": spec, "name": f"text({Path(path).name})",
            "alphabet": alpha, "corpus": corpus}


def load_tokens(path: str | os.PathLike, n_tokens: int | None = None, sha256: str | None = None) -> dict[str, Any]:
    """Integer token ids (``read_tokens``); N = ``n_tokens`` or the largest id + 1 (at least 2)."""
    tokens, sha = read_tokens(path)
    _check_sha(f"the token corpus {str(path)!r}", sha, sha256)
    N = max(int(tokens.max()) + 1, 2) if n_tokens is None else int(n_tokens)
    corpus = {"name": Path(path).name, "path": str(path), "sha256": sha, "n_tokens_read": int(tokens.size),
              "cyclic": True}
    spec = {"kind": "tokens", "path": str(path), "sha256": sha, "n_tokens": N}
    return {"tokens": tokens, "n_tokens": N, "spec": spec, "name": f"tokens({Path(path).name})",
            "alphabet": None, "corpus": corpus}


def load_pydoc(alphabet: Alphabet | str | None = "letters", sha256: str | None = None) -> dict[str, Any]:
    """CPython's documentation text (``pydoc_text``) read in ``alphabet`` (default: letters and space)."""
    text = pydoc_text()
    _check_sha(f"the pydoc corpus of Python {sys.version.split()[0]}", sha256_text(text), sha256)
    alpha = _alphabet(alphabet or "letters", text)
    tokens = alpha.encode(text)
    corpus = {**pydoc_provenance(), "n_tokens_read": int(tokens.size), "mapping": alpha.describe(), "cyclic": True}
    spec = {"kind": "pydoc", "sha256": corpus["sha256"], "python": corpus["python"], "alphabet": alpha.to_dict()}
    return {"tokens": tokens, "n_tokens": alpha.n_tokens, "spec": spec, "name": "pydoc", "alphabet": alpha,
            "corpus": corpus}

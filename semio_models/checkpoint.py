"""Checkpoints (a folder with ``weights.msgpack`` + ``card.json``) and the model zoo.

Format (``FORMAT_VERSION = 1``)
-------------------------------
* ``weights.msgpack``: ``flax.serialization.to_bytes`` of the float32
  parameter tree of ``Transformer(config)`` (msgpack; never pickle).
* ``card.json``: a JSON object with at least ``format_version``, ``config``
  (``TransformerConfig.to_dict()``) and ``weights_sha256`` (hex SHA-256 of the
  weights file), plus whatever the trainer adds (name, source spec, seed,
  hyper-parameters, exact losses, retrain command, package versions).

Loading checks, in this order, and raises the named error of the first failure:
card readable JSON object with a supported format and a valid config
(``CheckpointError``); weights file present (``CheckpointError``); SHA-256 equal
to the card's (``ChecksumMismatchError``); msgpack decodable
(``CheckpointError``); parameter tree, shapes and dtypes equal to those of
``Transformer(config)`` (``ArchitectureMismatchError``).

Files are written atomically (``semio_jax._util.io.atomic_write_bytes``: temporary
file in the same folder, fsync, then ``os.replace``), weights first and card
last, so a folder with a card always has the weights the card describes.

The zoo is the folder ``zoo/`` next to this module: ``load("coin")`` loads
``zoo/coin/``. A path to a folder works as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import optax
from flax import serialization, traverse_util

from semio_jax._util import io as atomic_io
from semio_jax.errors import (
    ArchitectureMismatchError,
    CheckpointError,
    ChecksumMismatchError,
    ReportWriteError,
    UnknownModelError,
)

from .transformer import TransformerConfig, TransformerModel, param_shapes

__all__ = [
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "CARD_FILE",
    "save",
    "load",
    "load_card",
    "zoo_dir",
    "zoo_names",
    "resolve",
    "sha256_hex",
]

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.msgpack"
CARD_FILE = "card.json"
_RESERVED = ("format_version", "config", "weights_sha256", "n_params", "versions")


def zoo_dir() -> Path:
    """The folder holding the shipped models (``<semio_models>/zoo``)."""
    return Path(__file__).resolve().parent / "zoo"


def zoo_names() -> list[str]:
    """Sorted names of the zoo entries (sub-folders of ``zoo_dir()`` that hold a card)."""
    root = zoo_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CARD_FILE).is_file())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _versions() -> dict[str, str]:
    return {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def save(folder: str | os.PathLike, model: TransformerModel, card_extra: dict[str, Any] | None = None) -> Path:
    """Write ``weights.msgpack`` and ``card.json`` into ``folder`` (created if needed); return the folder.

    ``card_extra`` (JSON-able) is merged into the card; it may not set the
    keys the checkpoint owns: format_version, config, weights_sha256,
    n_params, versions.
    """
    card_extra = dict(card_extra or {})
    clash = sorted(set(card_extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"card_extra may not set {clash}: save() writes them")
    params = traverse_util.unflatten_dict(
        {k: np.asarray(v, dtype=np.float32) for k, v in traverse_util.flatten_dict(model.params).items()}
    )
    weights = serialization.to_bytes(params)
    card = {
        "format_version": FORMAT_VERSION,
        **card_extra,
        "config": model.config.to_dict(),
        "n_params": model.param_count,
        "weights_sha256": sha256_hex(weights),
        "versions": _versions(),
    }
    try:
        card_bytes = (json.dumps(card, indent=2, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"card_extra is not JSON-able: {e}") from None
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_io.atomic_write_bytes(folder / WEIGHTS_FILE, weights)
        atomic_io.atomic_write_bytes(folder / CARD_FILE, card_bytes)
    except OSError as e:
        raise ReportWriteError(f"cannot write checkpoint folder {str(folder)!r}: {e}") from e
    return folder


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint folder of a zoo name or a folder path (UnknownModelError if neither)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name and "/" not in name and os.sep not in name and name not in (".", ".."):
        entry = zoo_dir() / name
        if entry.is_dir():
            return entry
    available = ", ".join(zoo_names()) or "(none)"
    raise UnknownModelError(
        f"unknown model {name!r}: it is neither a checkpoint folder nor a zoo name; "
        f"zoo models available: {available}"
    )


def load_card(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The model card of a zoo name or checkpoint folder, checked for format and config."""
    return _read_card(resolve(name_or_path))


def _read_card(folder: Path) -> dict[str, Any]:
    path = folder / CARD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint folder {str(folder)!r} has no {CARD_FILE}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read model card {str(path)!r}: {e}") from e
    try:
        card = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"model card {str(path)!r} is not valid JSON: {e}") from e
    if not isinstance(card, dict):
        raise CheckpointError(f"model card {str(path)!r} is not a JSON object")
    version = card.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"model card {str(path)!r} has format_version {version!r}; this code reads {FORMAT_VERSION}"
        )
    for key in ("config", "weights_sha256"):
        if key not in card:
            raise CheckpointError(f"model card {str(path)!r} lacks the key {key!r}")
    try:
        TransformerConfig.from_dict(card["config"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"model card {str(path)!r} has an invalid config: {e}") from e
    return card


def load(name_or_path: str | os.PathLike) -> TransformerModel:
    """Load a verified ``TransformerModel`` from a zoo name or a checkpoint folder."""
    folder = resolve(name_or_path)
    card = _read_card(folder)
    config = TransformerConfig.from_dict(card["config"])
    path = folder / WEIGHTS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint folder {str(folder)!r} has no {WEIGHTS_FILE}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read weights {str(path)!r}: {e}") from e
    expected, found = str(card["weights_sha256"]).lower(), sha256_hex(data)
    if expected != found:
        raise ChecksumMismatchError(
            f"weights {str(path)!r} are damaged or were replaced: SHA-256 expected {expected} "
            f"(from {CARD_FILE}), found {found}"
        )
    try:
        tree = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise CheckpointError(f"weights {str(path)!r} are not a readable msgpack tree: {e!r}") from e
    if not isinstance(tree, dict):
        raise CheckpointError(f"weights {str(path)!r} do not hold a parameter dict")
    params = _check_architecture(tree, config, path)
    return TransformerModel(config, params, card=card)


def _check_architecture(tree: dict, config: TransformerConfig, path: Path) -> dict:
    """Compare the restored tree with ``Transformer(config)``; return it as float32 numpy arrays."""
    want = {"/".join(k): v for k, v in traverse_util.flatten_dict(param_shapes(config)).items()}
    try:
        got = {"/".join(map(str, k)): v for k, v in traverse_util.flatten_dict(tree).items()}
    except Exception as e:
        raise ArchitectureMismatchError(f"weights {str(path)!r} are not a parameter tree: {e}") from e
    for key in sorted(set(want) | set(got)):
        if key not in got:
            raise ArchitectureMismatchError(
                f"weights {str(path)!r} lack the parameter {key!r} that the card's config needs"
            )
        if key not in want:
            raise ArchitectureMismatchError(
                f"weights {str(path)!r} have a parameter {key!r} that the card's config does not have"
            )
        arr = got[key]
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
            what = f"dtype {arr.dtype}" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise ArchitectureMismatchError(f"parameter {key!r} in {str(path)!r} is {what}, not float32")
        if tuple(arr.shape) != tuple(want[key].shape):
            raise ArchitectureMismatchError(
                f"parameter {key!r} in {str(path)!r} has shape {tuple(arr.shape)}; the card's config "
                f"needs {tuple(want[key].shape)}"
            )
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in got.items()})

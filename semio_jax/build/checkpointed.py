"""Resumable operator builds: the model's logits written to a folder as they are computed.

``build_operator(model, space, procedure, checkpoint_dir=DIR)`` (and ``semio
analyze/check --checkpoint-dir DIR``) evaluates the model exactly as without a
checkpoint, but writes every chunk of logits to ``DIR/<build>/`` as soon as
it is computed, each file atomically. Run the same call again after an
interruption (Ctrl-C, a crash, a killed job) and it loads the chunks that are
there and evaluates only the rest. The resumed logits, and so the operator,
are **bitwise identical** to an uninterrupted build: every chunk is computed
by the same compiled function on the same padded batch as without a
checkpoint, and a stored chunk is read back bit for bit (``.npy``).

Layout of ``DIR/<build>/`` with ``<build> = N<n>_L<L>[_noprefix]_<method>``:

  manifest.json          what was built: model fingerprint, space, method, chunk size, completion;
  L<k>_<start>.npy       "plain" method: logits of the states of length k with
                         group-local indices start.. (one chunk of ``batch_size`` contexts);
  T<k>_<start>.npy       "prefix" method: one block emitted by ``prefix_tree_logits``;
  done_<k>_<start>       "prefix" method: marks a finished subtree of the prefix-tree walk.

The *model fingerprint* is the model's weights hash when it has one (the
card's ``weights_sha256``) together with the SHA-256 of its logits on eight
fixed probe contexts, so a resume with another model, another space, another
method or another chunk size is refused with a :class:`~semio_jax.errors.ResumeError`
before any chunk is used. Granularity: "plain" resumes chunk by chunk;
"prefix" resumes at the emitted blocks: a finished subtree of the walk is
skipped, and an unfinished one recomputes only its root's block (needed for
the cached keys and values of its children) before skipping the finished
blocks below. A model whose ``prefix_tree_logits`` does not accept the
``skip``/``done`` hooks is walked in full again (its blocks are still saved,
and a completed build is loaded without any walk).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import inspect
import io
import json
import os
from pathlib import Path

import numpy as np

from .._util.io import atomic_write_bytes, atomic_write_json, ensure_dir
from .._util.progress import progress_bar
from ..core.model import check_model_fits, describe_model, evaluate, jitted_model
from ..core.space import StateSpace
from ..errors import ResumeError
from .logits import collect, plain_chunks, resolve_method, tree_block

__all__ = ["evaluate_logits_resumable", "checkpoint_folder", "model_fingerprint", "using_checkpoint_dir",
           "default_checkpoint_dir", "MANIFEST"]

MANIFEST = "manifest.json"
FORMAT = "semio_jax build checkpoint"
FORMAT_VERSION = 1
_PROBES = 8

_DEFAULT_DIR: contextvars.ContextVar = contextvars.ContextVar("semio_checkpoint_dir", default=None)


def default_checkpoint_dir():
    """The checkpoint root that ``build_operator`` uses when given none (see :func:`using_checkpoint_dir`)."""
    return _DEFAULT_DIR.get()


@contextlib.contextmanager
def using_checkpoint_dir(path):
    """Inside this block every ``build_operator`` call without ``checkpoint_dir`` uses ``path`` (the CLI's --checkpoint-dir)."""
    token = _DEFAULT_DIR.set(None if path is None else os.fspath(path))
    try:
        yield
    finally:
        _DEFAULT_DIR.reset(token)


def checkpoint_folder(root, space: StateSpace, method: str) -> Path:
    """The folder of one build under the checkpoint root ``root``."""
    tag = f"N{space.n_tokens}_L{space.length}" + ("" if space.prefixes else "_noprefix") + f"_{method}"
    return Path(root) / tag


def model_fingerprint(model, space: StateSpace) -> dict:
    """Weights hash (if the model has a card) and SHA-256 of the logits on fixed probe contexts."""
    card = getattr(model, "card", None)
    weights = getattr(model, "weights_sha256", None) or (card.get("weights_sha256") if isinstance(card, dict) else None)
    rng = np.random.default_rng(20240611)
    probe = rng.integers(0, space.n_tokens, size=(_PROBES, space.length)).astype(np.int32)
    logits = np.ascontiguousarray(evaluate(model, probe, jitted_model(model)))
    h = hashlib.sha256(f"{logits.dtype.str}{logits.shape}".encode())
    h.update(logits.tobytes())
    return {"weights_sha256": weights, "probe_sha256": h.hexdigest()}


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _load_npy(path: Path, rows: int | None, n: int):
    """The array in ``path`` if it is a readable [rows, n] float array, else None (then it is recomputed)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.ndim != 2 or arr.shape[1] != n or (rows is not None and arr.shape[0] != rows):
        return None
    if arr.dtype not in (np.float32, np.float64):
        return None
    return arr


def _open_manifest(folder: Path, want: dict) -> dict:
    """Create the manifest, or check that the existing one describes the same build."""
    path = folder / MANIFEST
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ResumeError(f"the build checkpoint {str(folder)!r} has an unreadable {MANIFEST} ({e}); "
                              f"delete the folder or use another --checkpoint-dir") from None
        if not isinstance(have, dict) or have.get("format") != FORMAT or have.get("format_version") != FORMAT_VERSION:
            raise ResumeError(f"{str(path)!r} is not a {FORMAT} (version {FORMAT_VERSION}); "
                              f"delete the folder or use another --checkpoint-dir")
        for key, what in (("model", "model"), ("space", "state space"), ("method", "evaluation method"),
                          ("chunk", "chunk size (batch_size)")):
            if have.get(key) != want[key]:
                raise ResumeError(
                    f"the build checkpoint {str(folder)!r} was made for another {what}: it holds "
                    f"{json.dumps(have.get(key))}, this build is {json.dumps(want[key])}. Resuming would mix "
                    f"two builds; use another --checkpoint-dir (or delete this one to start afresh)")
        return have
    manifest = {**want, "complete": False}
    atomic_write_json(path, manifest)
    return manifest


def evaluate_logits_resumable(model, space: StateSpace, checkpoint_dir, *, batch_size: int = 8192,
                              progress: bool = False, method: str = "auto") -> np.ndarray:
    """:func:`semio_jax.build.logits.evaluate_logits` with every chunk saved under ``checkpoint_dir`` (see above)."""
    method = resolve_method(model, method)
    check_model_fits(model, space)
    folder = ensure_dir(checkpoint_folder(checkpoint_dir, space, method))
    want = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": model_fingerprint(model, space),
        "space": {"n_tokens": space.n_tokens, "length": space.length, "prefixes": space.prefixes},
        "method": method, "chunk": int(batch_size),
        "model_description": describe_model(model),
    }
    manifest = _open_manifest(folder, want)
    if method == "plain":
        out = _plain(model, space, folder, int(batch_size), progress)
    else:
        out = _prefix(model, space, folder, int(batch_size), progress, manifest.get("complete", False))
    if not manifest.get("complete"):
        atomic_write_json(folder / MANIFEST, {**manifest, "complete": True})
    return out


def _plain(model, space, folder, batch_size, progress) -> np.ndarray:
    """The plain build's own loop (:func:`~semio_jax.build.logits.plain_chunks`), each chunk loaded or saved."""
    n = space.n_tokens

    def chunk_path(k: int, start: int) -> Path:
        return folder / f"L{k}_{start:012d}.npy"

    def load(k: int, start: int, real: int):
        return _load_npy(chunk_path(k, start), real, n)

    def saving(chunks):
        for k, start, row, logits, fresh in chunks:
            if fresh:
                _save_npy(chunk_path(k, start), logits)
            yield k, start, row, logits, fresh

    return collect(saving(plain_chunks(model, space, batch_size, load=load)), space, progress)


def _prefix(model, space, folder, chunk, progress, complete) -> np.ndarray:
    n = space.n_tokens
    out = np.empty((space.num_states, n), dtype=np.float32)
    filled = np.zeros(space.num_states, dtype=bool)
    bar = progress_bar(space.num_states, progress)
    for path in sorted(folder.glob("T*_*.npy")):  # blocks saved by an earlier, interrupted walk
        try:
            k, start = (int(x) for x in path.stem[1:].split("_"))
        except ValueError:
            continue
        if k not in space.group_offsets or k < 1:
            continue
        arr = _load_npy(path, None, n)
        if arr is None or start + arr.shape[0] > n**k:
            continue
        off = space.group_offsets[k] + start
        out[off: off + arr.shape[0]] = arr
        filled[off: off + arr.shape[0]] = True
        bar.update(arr.shape[0])

    def emit(k: int, start: int, logits) -> None:
        block = tree_block(space, k, start, logits)
        if block is None:
            return
        off, logits = block
        count = logits.shape[0]
        path = folder / f"T{k}_{start:012d}.npy"
        if not filled[off: off + count].all():
            _save_npy(path, logits)
            bar.update(int((~filled[off: off + count]).sum()))
        out[off: off + count] = logits
        filled[off: off + count] = True

    def skip(k: int, start: int) -> bool:
        return (folder / f"done_{k}_{start}").exists()

    def done(k: int, start: int) -> None:
        atomic_write_bytes(folder / f"done_{k}_{start}", b"")

    if not (complete and filled.all()):
        params = inspect.signature(model.prefix_tree_logits).parameters
        hooks = {"skip": skip, "done": done} if "skip" in params and "done" in params else {}
        model.prefix_tree_logits(space.length, emit, chunk=chunk, **hooks)
    bar.close()
    if not filled.all():
        bad = int(np.flatnonzero(~filled)[0])
        raise ResumeError(f"the build checkpoint {str(folder)!r} is damaged: state {space.label(bad)} has no "
                          f"logits although its subtree is marked done; delete the folder and build again")
    return out

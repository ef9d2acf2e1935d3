"""Atomic file writing: write to a temporary file in the same folder, then rename.

A reader (or a crash) never sees a half-written file: ``os.replace`` is atomic
on POSIX and Windows when source and target are on the same file system.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ReportWriteError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_savez", "ensure_dir"]


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) or raise ReportWriteError saying why."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportWriteError(f"cannot create folder {p}: {e.strerror or e}; choose another --out") from e
    if not os.access(p, os.W_OK):
        raise ReportWriteError(f"folder {p} is not writable; choose another --out or fix its permissions")
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes 0600 files)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, make_parents: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename).

    The temporary file lives in the target's folder (so the rename is atomic)
    and is removed if anything fails; a process killed mid-write leaves at
    most a stray ``.<name>.*.tmp`` file, never a partial ``path``. The file
    gets the permissions a plain ``open(path, "w")`` would give (0666 minus
    the umask). Raises ReportWriteError (an OSError) when it cannot write,
    including when the folder is missing and ``make_parents`` is False.
    """
    path = Path(path)
    if make_parents:
        ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ReportWriteError(f"cannot write {path}: {e.strerror or e}; choose another folder or fix its permissions") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ReportWriteError(f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, make_parents: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), make_parents)


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable, allow_nan=True) + "\n")


def atomic_savez(path: str | os.PathLike, arrays: dict) -> Path:
    """np.savez_compressed to ``path`` atomically."""

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())

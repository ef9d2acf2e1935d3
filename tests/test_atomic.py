"""Nothing lost: atomic writes survive a writer killed mid-write; checkpoints use the same writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import semio_jax as sj
from semio_jax._util import io as _io

SIZE = 8 * 2**20  # 8 MiB per version: the kill lands inside a write most of the time

WRITER = f"""
import sys
from semio_jax._util.io import atomic_write_bytes
path = sys.argv[1]
i = 1
while True:
    atomic_write_bytes(path, bytes([i % 251]) * {SIZE})
    print(i, flush=True)
    i += 1
"""


def _version(path) -> int:
    data = path.read_bytes()
    assert len(data) == SIZE, f"partial file: {len(data)} of {SIZE} bytes"
    first = data[0]
    assert data.count(first) == SIZE, "the file mixes two versions"
    return first


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_killed_writer_leaves_the_previous_version_intact(tmp_path, delay):
    path = tmp_path / "big.bin"
    path.write_bytes(bytes([0]) * SIZE)  # version 0
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # at least one complete atomic write
        assert first.strip() == "1"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        reported = [int(x) for x in [first, *proc.stdout.read().split()] if str(x).strip()]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    v = _version(path)  # a whole version, never a torn one
    last = reported[-1] % 251
    assert v in (last, (last + 1) % 251), (v, reported[-1])  # the last reported one, or the one renamed just before the kill
    stray = [p.name for p in tmp_path.iterdir() if p.name != "big.bin"]
    assert all(n.startswith(".big.bin.") and n.endswith(".tmp") for n in stray), stray  # at most the killed temp file
    assert len(stray) <= 1


def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    _io.atomic_write_json(path, {"a": 1})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io.os, "replace", broken_replace)
    with pytest.raises(sj.ReportWriteError, match="No space left"):
        _io.atomic_write_json(path, {"a": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert path.read_text().strip().endswith("}") and '"a": 1' in path.read_text()


def test_files_get_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    p = _io.atomic_write_text(tmp_path / "x.txt", "hi")
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_checkpoints_use_the_one_atomic_writer(tmp_path, monkeypatch):
    from semio_models import checkpoint
    from semio_models.transformer import TransformerConfig, TransformerModel

    calls = []
    real = _io.atomic_write_bytes

    def spy(path, data):
        calls.append(os.path.basename(path))
        return real(path, data)

    monkeypatch.setattr(_io, "atomic_write_bytes", spy)
    from semio_models.transformer import param_shapes

    cfg = TransformerConfig(n_tokens=2, context_length=3, n_layers=1, d_model=8, n_heads=2)
    shapes = param_shapes(cfg)  # no initialisation to compile: deterministic non-zero weights will do
    model = TransformerModel(cfg, jax.tree_util.tree_map(
        lambda s: np.arange(np.prod(s.shape), dtype=np.float32).reshape(s.shape) / 7, shapes))
    checkpoint.save(tmp_path / "ck", model, {"name": "tiny"})
    assert calls == ["weights.msgpack", "card.json"]  # weights first, card last
    back = checkpoint.load(tmp_path / "ck")
    for a, b in zip(jax.tree_util.tree_leaves(back.params), jax.tree_util.tree_leaves(model.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["card.json", "weights.msgpack"]

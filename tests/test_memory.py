"""semio_jax._util.memory: handing freed heap pages back to the operating system."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from semio_jax._util import memory

GLIBC = platform.libc_ver()[0] == "glibc"

# In a fresh process (the test runner's heap has its own history): free 16 MiB so that glibc
# raises its mmap threshold, then take 24 blocks of 8 MiB from the heap and free all but the
# last. The freed 184 MiB stay resident below the kept block until they are handed back.
_SCRIPT = textwrap.dedent("""
    import numpy as np
    from semio_jax._util.memory import release_free_memory

    def rss_mib():
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:")) / 1024

    big = np.ones(2**21)
    del big
    blocks = [np.ones(2**20) for _ in range(24)]
    keep = blocks[-1]
    del blocks
    before = rss_mib()
    ok = release_free_memory()
    print(ok, before - rss_mib(), float(keep.sum()))
""")


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_release_free_memory_returns_freed_heap_pages():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    ok, dropped, kept = out.stdout.split()
    assert ok == "True"
    assert float(dropped) >= 100.0, out.stdout  # of the 184 MiB freed
    assert float(kept) == 2**20  # the block still held is intact


def test_release_free_memory_is_harmless_where_unavailable(monkeypatch):
    memory._malloc_trim.cache_clear()
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda *a, **k: (_ for _ in ()).throw(OSError("no libc")))
    try:
        assert memory.release_free_memory() is False
    finally:
        monkeypatch.undo()
        memory._malloc_trim.cache_clear()
    assert memory.release_free_memory() is GLIBC

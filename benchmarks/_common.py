"""Shared helpers of the benchmark scripts: one table per script, printed and written
to benchmarks/results/<name>.md together with the command that produced it."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_table(name: str, headers: list, rows: list, title: str, notes: str = "", path: Path | None = None) -> Path:
    """Print the table and write it (Markdown, with command and machine) atomically.

    Written to ``RESULTS/<name>.md``, or to ``path`` when given.
    """
    from semio_jax._util.io import atomic_write_text
    from semio_jax.app.report import markdown_table, text_table

    print()
    print(text_table(headers, rows, title=title))
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    md = [f"# {title}", "", markdown_table(headers, rows), "",
          f"Command: `{cmd}`", "",
          f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}."]
    if notes:
        md += ["", notes]
    path = Path(path) if path is not None else RESULTS / f"{name}.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    print(f"\nwritten to {path}")
    return path


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one warm-up call (compilation)."""
    import numpy as np

    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def proc_status_mib(key: str) -> float | None:
    """A memory line of /proc/self/status ("VmRSS", "VmHWM") in MiB, or None where it cannot be read."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Set the high-water mark VmHWM back to the current RSS (Linux >= 4.0), so that the next reading
    of VmHWM is the peak of what follows; False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False

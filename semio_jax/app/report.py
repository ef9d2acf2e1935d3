"""Report folders: results.json, arrays.npz, report.md and PNG figures.

Layout of a report folder (``--out DIR``):

  results.json   every number, plus a ``provenance`` block: command line, model
                 description and weights hash, space, procedures, seeds,
                 package versions, semio_jax version, time;
  arrays.npz     the arrays (full-state arrays in the StateSpace index order:
                 big-endian, oldest token most significant, prefixes after);
  report.md      the readable report, tables in Markdown;
  *.png          figures.

Every file is written atomically, so an interrupted run leaves the previous
version of each file intact; ``report.md`` is written last. The CLI writes the
folder again after each procedure (:meth:`Report.write`), so Ctrl-C keeps every
procedure already finished. The keys of results.json and arrays.npz are
documented in docs/report-format.md.

A report folder is never silently overwritten: a :class:`Report` refuses a
non-empty folder (ReportWriteError) unless ``force=True``, which first removes
the files a report writes there (results.json, arrays.npz, report.md, *.png,
stray ``.*.tmp`` files of an interrupted write) so that no figure of an earlier
run survives; other files in the folder are left alone.
"""

from __future__ import annotations

import io
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

from .._util.io import atomic_savez, atomic_write_bytes, atomic_write_json, atomic_write_text, ensure_dir
from ..errors import ReportWriteError

__all__ = ["Report", "provenance", "markdown_table", "text_table", "check_markdown"]


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def provenance(**extra) -> dict:
    """What is needed to reproduce a result: command line, versions, platform, time."""

    return {
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        "argv": list(sys.argv),
        "versions": {p: _version(p) for p in ("semio_jax", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "stormpy")},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "x64": bool(jax.config.jax_enable_x64),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def check_markdown(check, max_rows: int = 40) -> str:
    """The Markdown rendering of one agreement check (an ``AgreementReport``): verdict line, then its rows
    (worst first when there are more than ``max_rows``). The one renderer of check tables in reports."""
    rows = sorted(check.rows, key=lambda r: r.p_value) if len(check.rows) > max_rows else check.rows
    cells = [[r.quantity, r.exact, r.estimate, r.se, r.z, r.p_value] for r in rows[:max_rows]]
    more = len(check.rows) - len(cells)
    head = (f"**Check: {check.title}** — {check.verdict} ({check.n_tests} tests, "
            f"min p = {check.min_p:.3g}, Bonferroni threshold {check.threshold:.2e} for family-wise level {check.level}). "
            f"Method: {check.method}. Settings: `{check.settings}`")
    table = markdown_table(["quantity", "exact", "sampled", "s.e.", "z", "p"], cells)
    return head + "\n\n" + table + (f"\n\n{more} more rows, all with larger p (results.json has every row)." if more else "")


def text_table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """A fixed-width table for the terminal."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = ([title] if title else []) + [line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _is_report_file(name: str) -> bool:
    """A file that a Report writes (or an interrupted atomic write of one leaves behind)."""
    return (name in ("results.json", "arrays.npz", "report.md") or name.endswith(".png")
            or (name.startswith(".") and name.endswith(".tmp")))


class Report:
    """Collects sections, numbers, arrays and figures; :meth:`write` saves them all.

    Args:
      out_dir: the report folder (created; must be writable; refused if not empty, unless ``force``).
      title: heading of report.md.
      force: replace the report in a non-empty folder (its report files are removed first).
    """

    def __init__(self, out_dir: str | Path, title: str, force: bool = False):
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ReportWriteError(f"the report folder {out} is a file; choose another --out")
        if out.is_dir() and any(out.iterdir()):
            if not force:
                raise ReportWriteError(f"the report folder {out} is not empty; choose a new --out, or pass --force "
                                       f"to replace the report in it")
            for path in out.iterdir():
                if path.is_file() and _is_report_file(path.name):
                    path.unlink()
        self.out_dir = ensure_dir(out)
        self.title = title
        self.sections: list[tuple[str, str]] = []
        self.results: dict = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.figures: list[str] = []

    def section(self, heading: str, body: str) -> None:
        self.sections.append((heading, body))

    def result(self, key: str, value) -> None:
        self.results[key] = value

    def array(self, name: str, value) -> None:
        self.arrays[name] = np.asarray(value)

    def figure(self, name: str, fig) -> str:
        """Save a matplotlib figure as ``name``.png (atomically) and close it."""

        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fname = f"{name}.png"
        atomic_write_bytes(self.out_dir / fname, buf.getvalue())
        self.figures.append(fname)
        return fname

    def write(self, **provenance_extra) -> Path:
        self.results["provenance"] = provenance(**provenance_extra)
        atomic_write_json(self.out_dir / "results.json", self.results)
        if self.arrays:
            atomic_savez(self.out_dir / "arrays.npz", self.arrays)
        md = [f"# {self.title}", ""]
        for heading, body in self.sections:
            md += [f"## {heading}", "", body.rstrip(), ""]
        prov = self.results["provenance"]
        md += ["## Provenance", "",
               f"- command: `{prov['command']}`",
               f"- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v),
               f"- backend: {prov['jax_backend']}, float64 enabled: {prov['x64']}, at {prov['time_utc']}",
               "- files: results.json (numbers), arrays.npz (arrays, StateSpace index order)"
               + ("".join(f", {f}" for f in self.figures)), ""]
        atomic_write_text(self.out_dir / "report.md", "\n".join(md))
        return self.out_dir / "report.md"

"""``semio proofs``: validate every proposition of semio_proofs and compare with its recorded status.

Each proposition is a pair ``proofs/<name>.md`` (statement, assumptions, proof
sketch, and a line ``Status: holds`` or ``Status: false as stated (expected)``)
and ``proofs/<name>.py`` (its validation, see :mod:`semio_proofs._lib`). This
runner executes the validations and prints a table

    proposition | recorded | observed | cases | worst slack | time

It writes the same to ``<out>/results.md`` and ``<out>/results.json`` and the
smallest counterexample of each violated proposition to
``<out>/counterexamples/<name>.json`` (atomically), where ``out`` is a report
folder (``--out``, default ``reports/proofs`` in the working directory). The
package folder itself (the .md files with the recorded statuses, and the
shipped counterexamples in ``proofs/counterexamples/``) is only read: a run
never modifies the source tree, and an ``--out`` inside it is refused.
``--replay <name>`` re-checks the shipped counterexample (or, with ``--out``,
the one a run wrote there).

Exit status: 0 when every observed status equals the recorded one, 1 when one
differs (or a replayed counterexample no longer violates its statement), 2 on
bad input.

  semio proofs                    all propositions, full budget; writes reports/proofs/
  semio proofs --quick            reduced budget (what the test suite runs)
  semio proofs --only p02 --only f01 --out /tmp/p
  semio proofs --replay f01_stationary_equals_source
  python -m semio_proofs.runner ...   the same without the semio CLI
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import semio_jax  # noqa: F401  (x64 before anything builds arrays)
from semio_jax._util.compile_cache import enable_compilation_cache
from semio_jax._util.io import atomic_write_json, atomic_write_text

from ._lib import Context, fmt
from .command import DEFAULT_OUT, add_arguments

__all__ = ["PROPOSITIONS", "run", "run_all", "recorded_status", "replay", "main", "Row", "proofs_dir",
           "render_table", "counterexample_path", "shipped_counterexamples", "report_dir", "OutputInSourceTreeError"]

#: Every proposition, in report order (file stems of proofs/<name>.md and .py).
PROPOSITIONS = [
    "p01_uniqueness",
    "p02_convergence_bound",
    "p03_trajectory_decay",
    "p04_greedy_cycles",
    "p05_zero_temperature",
    "p06_truncation_attractors",
    "p07_next_token_vs_continuation",
    "p08_large_deviations",
    "p09_coin_flip",
    "p10_sensitivity",
    "p11_simulation_fidelity",
    "p12_zero_temperature_limit",
    "f01_stationary_equals_source",
    "f02_tv_within_slem_power",
    "f03_map_starts_greedy",
]


def proofs_dir() -> Path:
    """The package folder (statements, validations, shipped counterexamples): read, never written."""
    return Path(__file__).resolve().parent


def shipped_counterexamples() -> Path:
    """The counterexamples shipped with the package (``proofs/counterexamples/``), read by ``--replay``."""
    return proofs_dir() / "counterexamples"


class OutputInSourceTreeError(ValueError):
    """A report folder inside the package folder: runs must not modify the source tree."""


def report_dir(out: Path | str | None = None) -> Path:
    """The report folder: ``out``, or ``reports/proofs`` in the working directory; refused inside proofs/."""
    path = Path(out if out is not None else DEFAULT_OUT).resolve()
    if path == proofs_dir() or proofs_dir() in path.parents:
        raise OutputInSourceTreeError(f"report folder {path} is inside the package folder {proofs_dir()}; "
                                      "choose another --out (the shipped files are read-only at run time)")
    return path


# --------------------------------------------------------------------------- status
_STATUS_RE = re.compile(r"^\s*\**\s*Status\s*:\s*\**\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def recorded_status(name: str) -> tuple[str, str]:
    """("holds" | "false", the status line's text) from proofs/<name>.md."""
    text = (proofs_dir() / f"{name}.md").read_text(encoding="utf-8")
    m = _STATUS_RE.search(text)
    if not m:
        raise ValueError(f"proofs/{name}.md has no 'Status:' line")
    line = m.group(1).strip().strip("*").strip()
    low = line.lower()
    if low.startswith("holds"):
        return "holds", line
    if low.startswith("false"):
        return "false", line
    raise ValueError(f"proofs/{name}.md: status must start with 'holds' or 'false', got {line!r}")


def title_of(name: str) -> str:
    text = (proofs_dir() / f"{name}.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return name


def resolve(names) -> list[str]:
    """Full proposition names from names or unique prefixes (``p02``, ``f01``)."""
    out = []
    for n in names:
        hits = [p for p in PROPOSITIONS if p == n] or [p for p in PROPOSITIONS if p.startswith(n)]
        if len(hits) != 1:
            raise SystemExit(f"semio proofs: {n!r} matches {len(hits)} propositions; choose one of {PROPOSITIONS}")
        out.append(hits[0])
    return out


# --------------------------------------------------------------------------- running
@dataclass
class Row:
    name: str
    title: str
    recorded: str
    recorded_line: str
    observed: str
    cases: int
    worst_slack: float | None
    worst_case: str
    slack: str
    time_s: float
    counterexample: dict | None = None
    details: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    error: str | None = None

    @property
    def agrees(self) -> bool:
        """Observed status = recorded status (and a false proposition's corrected version held)."""
        return (self.error is None and (self.observed == "violated") == (self.recorded == "false")
                and self.details.get("corrected_holds", True) is not False)

    def as_json(self, cex_file: str | None) -> dict:
        return {
            "name": self.name, "title": self.title, "recorded": self.recorded, "recorded_line": self.recorded_line,
            "observed": self.observed, "agrees": self.agrees, "cases": self.cases,
            "worst_slack": self.worst_slack, "worst_case": self.worst_case, "slack_definition": self.slack,
            "time_s": round(self.time_s, 2), "counterexample_file": cex_file, "counterexample": self.counterexample,
            "details": self.details, "notes": self.notes, "error": self.error,
        }


def run_one(name: str, ctx) -> Row:
    recorded, line = recorded_status(name)
    mod = importlib.import_module(f"semio_proofs.{name}")
    t0 = time.perf_counter()
    try:
        res = mod.validate(ctx)
        err = None
    except Exception as e:  # report, don't hide: the row says what broke
        res, err = None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
    dt = time.perf_counter() - t0
    if res is None:
        return Row(name, title_of(name), recorded, line, "error", 0, None, "", getattr(mod, "SLACK", ""), dt,
                   error=err)
    return Row(name, title_of(name), recorded, line, "violated" if res.violated else "holds", res.cases,
               res.worst_slack, res.worst_case, getattr(mod, "SLACK", ""), dt, res.counterexample, res.details,
               res.notes)


def run_all(quick: bool = False, only=None, seed: int = 0, write_dir: Path | str | None = None,
            write_results: bool | None = None, log=print) -> list[Row]:
    """Run the validations; optionally write results and counterexamples to the report folder ``write_dir``.

    ``write_dir`` goes through :func:`report_dir` (never inside proofs/); ``write_results``
    (default True) also writes results.md and results.json there.
    """
    names = resolve(only) if only else list(PROPOSITIONS)
    ctx = Context(quick=quick, seed=seed, log=log)
    rows = []
    for name in names:
        log(f"[{name}] ...")
        row = run_one(name, ctx)
        tag = "ok" if row.agrees else "MISMATCH"
        log(f"[{name}] {row.observed} (recorded {row.recorded}) - {row.cases} cases, worst slack "
            f"{_fmt(row.worst_slack)}, {row.time_s:.1f}s [{tag}]")
        if row.error:
            log(row.error)
        rows.append(row)
    if write_dir is not None:
        write_dir = report_dir(write_dir)
        for row in rows:
            if row.counterexample is not None:
                save_counterexample(write_dir, row, seed)
        if write_results is None or write_results:
            write_results_files(write_dir, rows, quick=quick, seed=seed, only=only)
    return rows


def _fmt(x) -> str:
    return fmt(x)


def counterexample_path(base: Path, name: str) -> Path:
    return Path(base) / "counterexamples" / f"{name}.json"


def save_counterexample(base: Path, row: Row, seed: int) -> Path:
    obj = {
        "proposition": row.name,
        "title": row.title,
        "recorded_status": row.recorded_line,
        "found_with_seed": seed,
        "replay": f"semio proofs --replay {row.name} --out <this report folder>   (the shipped one: without --out)",
        "counterexample": row.counterexample,
    }
    text = json.dumps(obj, indent=1, allow_nan=True, default=_json_default) + "\n"
    path = counterexample_path(base, row.name)
    if not path.exists() or path.read_text(encoding="utf-8") != text:  # rewrite only when it changed
        atomic_write_text(path, text)
    return path


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o).__name__)


def render_table(rows: list[Row], markdown: bool = False) -> str:
    head = ["proposition", "recorded", "observed", "cases", "worst slack", "time (s)", ""]
    body = []
    for r in rows:
        body.append([r.name, "holds" if r.recorded == "holds" else "false (expected)", r.observed, str(r.cases),
                     _fmt(r.worst_slack), f"{r.time_s:.1f}", "ok" if r.agrees else "MISMATCH"])
    if markdown:
        lines = ["| " + " | ".join(head[:-1]) + " | agrees |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt_row = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt_row(head), "-" * (sum(widths) + 2 * (len(widths) - 1)), *map(fmt_row, body)])


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("jax", "numpy", "scipy", "hypothesis"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:
            pass
    return out


def _details_md(row: Row) -> str:
    parts = [f"### {row.name}: {row.title}", "",
             f"- recorded: {row.recorded_line}", f"- observed: **{row.observed}** over {row.cases} cases "
             f"({row.time_s:.1f} s)", f"- slack: {row.slack}",
             f"- worst slack: {fmt(row.worst_slack)} ({row.worst_case})"]
    if row.counterexample is not None:
        parts.append(f"- counterexample: `counterexamples/{row.name}.json` ({row.counterexample.get('case', '')})")
    if row.error:
        parts.append(f"- ERROR: `{row.error.splitlines()[0]}`")
    for note in row.notes[:8]:
        parts.append(f"- note: {note}")
    summary = row.details.get("summary")
    if summary:
        parts.append("")
        for k, v in summary.items():
            parts.append(f"- {k}: {v if isinstance(v, str) else fmt(v) if isinstance(v, (int, float)) else v}")
    for key, table in row.details.items():
        if isinstance(table, dict) and "columns" in table and "rows" in table:
            cell = lambda v: (v if isinstance(v, str) else fmt(v)).replace("|", "\\|")  # noqa: E731
            parts += ["", f"{table.get('title', key)}:", "",
                      "| " + " | ".join(map(cell, table["columns"])) + " |", "|" + "---|" * len(table["columns"])]
            for r in table["rows"][:40]:
                parts.append("| " + " | ".join(map(cell, r)) + " |")
            if len(table["rows"]) > 40:
                parts.append(f"| ... {len(table['rows']) - 40} more rows in results.json | |")
    return "\n".join(parts)


def write_results_files(base: Path, rows: list[Row], quick: bool, seed: int, only=None) -> None:
    total = sum(r.time_s for r in rows)
    cmd = ("semio proofs" + (" --quick" if quick else "") + (f" --seed {seed}" if seed else "")
           + "".join(f" --only {n}" for n in (only or [])))
    data = {
        "command": cmd, "quick": quick, "seed": seed, "validation_time_s": round(total, 1),
        "all_agree": all(r.agrees for r in rows), "versions": _versions(),
        "propositions": [r.as_json(f"counterexamples/{r.name}.json" if r.counterexample else None) for r in rows],
    }
    atomic_write_json(Path(base) / "results.json", data)
    md = [
        "# Results of `" + cmd + "`", "",
        "Generated by `semio proofs` (do not edit by hand). Each proposition's statement, proof sketch and",
        "recorded status are in `proofs/<name>.md`; its validation in `proofs/<name>.py`. *Slack* is how far",
        "the inequality was from failing (defined per proposition); *worst* is the minimum over all cases.", "",
        render_table(rows, markdown=True), "",
        f"Validation time {total:.1f} s ({'quick' if quick else 'full'} budget, seed {seed}). "
        + ("Every observed status equals its recorded status." if data["all_agree"]
           else "SOME OBSERVED STATUSES DIFFER FROM THE RECORDED ONES."), "",
        "## Details", "",
    ]
    md += [_details_md(r) + "\n" for r in rows]
    atomic_write_text(Path(base) / "results.md", "\n".join(md))


# --------------------------------------------------------------------------- replay
def replay(name: str, base: Path | str | None = None):
    """Re-check a saved counterexample of ``name``; returns (Replay, the saved JSON).

    ``base`` None: the shipped one, ``proofs/counterexamples/<name>.json``; else a report
    folder a run wrote (``<base>/counterexamples/<name>.json``).
    """
    name = resolve([name])[0]
    path = shipped_counterexamples() / f"{name}.json" if base is None else counterexample_path(Path(base), name)
    if not path.exists():
        raise FileNotFoundError(f"no saved counterexample {path}")
    saved = json.loads(path.read_text(encoding="utf-8"))
    mod = importlib.import_module(f"semio_proofs.{name}")
    return mod.replay(saved["counterexample"]), saved


# --------------------------------------------------------------------------- CLI
def run(args) -> int:
    if getattr(args, "list", False):
        for name in PROPOSITIONS:
            print(f"{name:34s} {recorded_status(name)[1]}")
        return 0
    if args.replay:
        try:
            res, saved = replay(args.replay, args.out)
        except (FileNotFoundError, SystemExit) as e:
            print(f"semio proofs: {e}", file=sys.stderr)
            return 2
        cex = saved["counterexample"]
        print(f"{saved['proposition']}: {saved['title']}")
        print(f"recorded status: {saved['recorded_status']}")
        print(f"counterexample: {cex.get('case', '')}")
        print(res.message)
        for k, v in res.numbers.items():
            print(f"  {k} = {v}")
        print("VIOLATION REPRODUCED" if res.violated else "the counterexample NO LONGER violates the statement")
        return 0 if res.violated else 1
    out = None
    if not args.no_write:
        try:
            out = report_dir(args.out)
        except OutputInSourceTreeError as e:
            print(f"semio proofs: {e}", file=sys.stderr)
            return 2
    enable_compilation_cache()
    t0 = time.perf_counter()
    rows = run_all(quick=args.quick, only=args.only, seed=args.seed, write_dir=out,
                   log=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    print()
    print(render_table(rows))
    print(f"\nwall time {wall:.1f} s" + (f"; results written to {out}" if out is not None else ""))
    bad = [r.name for r in rows if not r.agrees]
    if bad:
        print("OBSERVED STATUS DIFFERS FROM THE RECORDED ONE: " + ", ".join(bad))
        return 1
    print("every observed status equals its recorded status")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m semio_proofs.runner", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

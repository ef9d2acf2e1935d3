"""Every `semio` command that README.md shows: parsed in the fast suite, run in the slow one."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from semio_jax.app.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = re.compile(r"\b(MODEL|SPEC|NAME|PATH|DIR|PROMPT)\b|\||\.\.\.")


def _parses(args: list[str]) -> bool:
    try:
        build_parser().parse_args(args)
    except SystemExit:
        return False
    return True


def _readme_commands() -> list[str]:
    text = README.read_text()
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        found += [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.startswith("semio ")]
    # inline mentions: a bare `semio check` names a command in prose; only runnable ones count
    found += [c.strip() for c in re.findall(r"`(semio [^`]+)`", text) if len(c.split()) > 2 or _parses(c.split()[1:])]
    out = []
    for cmd in found:
        if PLACEHOLDER.search(cmd) or cmd in out:
            continue
        out.append(cmd)
    return out


COMMANDS = _readme_commands()


def _args(cmd: str) -> list[str]:
    return shlex.split(cmd)[1:]


def test_the_readme_shows_the_main_commands():
    shown = {_args(c)[0] for c in COMMANDS}
    assert {"zoo", "analyze", "check", "sample", "demo"} <= shown


@pytest.mark.parametrize("cmd", COMMANDS)
def test_readme_command_parses(cmd):
    args = _args(cmd)
    assert _parses(args), cmd


@pytest.mark.slow
@pytest.mark.parametrize("cmd", COMMANDS)
def test_readme_command_runs(cmd, tmp_path, monkeypatch):
    args = _args(cmd)
    monkeypatch.chdir(tmp_path)  # relative --out folders land here, never in the source tree
    if args[0] == "proofs":  # it writes beside the proofs by default: keep the source tree untouched
        args = args + ["--out", str(tmp_path / "proofs")]
    assert main(args) == 0, cmd

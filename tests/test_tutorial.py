"""docs/tutorial.md runs as written: each section's code blocks, in order, in a fresh folder."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from semio_jax.app.cli import build_parser, main

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
NEEDS = re.compile(r"<!-- tutorial: needs (.*?) -->")


def _sections() -> dict[str, str]:
    parts = re.split(r"^## ", TUTORIAL.read_text(), flags=re.M)[1:]
    return {p.splitlines()[0].strip(): p for p in parts}


def _commands() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return set(sub.choices)


def _unmet(need: str) -> str | None:
    if need == "semio import":
        return None if "import" in _commands() else "`semio import` is not in this checkout yet"
    if need == "text training":
        return None if importlib.util.find_spec("semio_models.alphabet") else "text sources are not in this checkout yet"
    return None if importlib.util.find_spec(need) else f"{need} is not installed"


def test_the_tutorial_has_its_three_sections():
    titles = list(_sections())
    assert [t.split(".")[0] for t in titles] == ["1", "2", "3"]


@pytest.mark.parametrize("title", list(_sections()))
def test_tutorial_section_runs(title, tmp_path, monkeypatch, capsys):
    text = _sections()[title]
    for marker in NEEDS.findall(text):
        for need in (n.strip() for n in marker.split(",")):
            reason = _unmet(need)
            if reason:
                pytest.skip(f"tutorial section {title!r}: {reason}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": "tutorial"}
    blocks = BLOCK.findall(text)
    assert blocks
    for lang, code in blocks:
        if lang == "python":
            first = code.splitlines()[0]
            if first.startswith("# file: "):
                (tmp_path / first[len("# file: "):].strip()).write_text(code)
            else:
                exec(compile(code, f"{TUTORIAL.name}:{title}", "exec"), namespace)  # noqa: S102
        elif lang == "bash":
            for line in code.splitlines():
                if line.startswith("semio "):
                    assert main(shlex.split(line)[1:]) == 0, line
        else:
            raise AssertionError(f"unexpected code block language {lang!r} in the tutorial")
    out = capsys.readouterr().out
    if title.startswith("1."):
        assert "procedures side by side" in out and "refused:" in out
        assert (tmp_path / "reports" / "copy3" / "results.json").exists()
    sys.modules.pop("copy3", None)

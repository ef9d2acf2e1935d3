"""Tests of ``semio train`` (semio_models.train.run through semio_jax.app.cli) for every kind of source.

Each run trains a tiny model for a few steps, then the saved card is checked
against an independent recomputation of the exact loss from the loaded
checkpoint and the source the card names.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from semio_jax.app import cli
from semio_models import checkpoint
from semio_models.alphabet import Alphabet, alphabet_from_card
from semio_models.sources import source_from_spec
from semio_models.train import EXACT_KEYS, exact_loss

TINY = ["--layers", "1", "--d-model", "8", "--heads", "2", "--steps", "3", "--batch-size", "8", "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]


def train(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["train", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def check_card(folder: Path) -> dict:
    """The card's exact loss equals one recomputed from the loaded weights and the card's source."""
    model = checkpoint.load(folder)
    card = model.card
    source = source_from_spec(card["source"])
    e = exact_loss(model, source)
    assert card["exact_last_position_loss"] == pytest.approx(e.last_position, abs=1e-6)
    np.testing.assert_allclose(card["exact_loss_per_position"], e.per_position, atol=1e-6)
    h = source.conditional_entropy(model.context_length + 1)
    assert card["source_conditional_entropy_last"] == pytest.approx(h)
    assert card["retrain_command"].startswith("semio train --source ")
    return card


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("Once upon a time, a cat sat on a mat.\nThe END!\n" * 3, encoding="utf-8")
    return path


@pytest.mark.parametrize("spec", ["coin:p=0.7", "markov:n_tokens=3,order=1,seed=2", "dyck:max_depth=2"])
def test_train_process_sources(tmp_path, capsys, spec):
    code, out, err = train(capsys, "--source", spec, "--context-length", 3, *TINY, "--out", tmp_path / "m")
    assert code == 0, err
    assert "exact loss   last position" in out and "saved" in out
    card = check_card(tmp_path / "m")
    assert card["source_entropy_rate"] is not None and "corpus" not in card and "alphabet" not in card


@pytest.mark.parametrize("alphabet", [None, " abcdefghijklmnopqrstuvwxyz."])
def test_train_text(tmp_path, capsys, text_file, alphabet):
    extra = [] if alphabet is None else ["--alphabet", alphabet]
    code, out, err = train(capsys, "--source", f"text:{text_file}", *extra, "--context-length", 3, *TINY,
                           "--out", tmp_path / "m")
    assert code == 0, err
    card = check_card(tmp_path / "m")
    alpha = alphabet_from_card(card)
    text = text_file.read_text()
    assert alpha == Alphabet.parse(alphabet, text)
    assert card["config"]["n_tokens"] == alpha.n_tokens == {None: len(set(text)), "letters": 27}.get(alphabet, 28)
    assert card["corpus"]["sha256"] and card["corpus"]["n_chars"] == len(text)
    assert card["source_entropy_rate"] is None  # a corpus has none; the card says so instead of a number
    if alphabet == "letters":
        assert alpha.decode(alpha.encode_prompt("Once ")) == "once "


def test_train_tokens(tmp_path, capsys):
    seq = np.random.default_rng(0).integers(0, 4, size=300)
    np.save(tmp_path / "seq.npy", seq)
    (tmp_path / "seq.txt").write_text(",".join(map(str, seq)))
    for name in ("seq.npy", "seq.txt"):
        code, out, err = train(capsys, "--source", f"tokens:{tmp_path / name}", "--context-length", 2, *TINY,
                               "--out", tmp_path / name.replace(".", "_"))
        assert code == 0, err
        card = check_card(tmp_path / name.replace(".", "_"))
        assert card["config"]["n_tokens"] == 4 and "alphabet" not in card


def test_retrain_command_reproduces_the_weights(tmp_path, capsys, text_file, monkeypatch):
    code, _, err = train(capsys, "--source", f"text:{text_file}", "--alphabet", "letters", "--context-length", 3,
                         *TINY, "--seed", 5, "--out", tmp_path / "a")
    assert code == 0, err
    card = checkpoint.load_card(tmp_path / "a")
    argv = shlex.split(card["retrain_command"])
    assert argv[:2] == ["semio", "train"]
    argv[argv.index("--out") + 1] = str(tmp_path / "b")
    code, _, err = train(capsys, *argv[2:], "--no-progress")
    assert code == 0, err
    again = checkpoint.load_card(tmp_path / "b")
    assert again["weights_sha256"] == card["weights_sha256"]  # same run, bit for bit
    assert {k: again[k] for k in ("source", "config", "alphabet", "seed")} == {
        k: card[k] for k in ("source", "config", "alphabet", "seed")}


def test_long_context_trains_and_saves_without_the_exact_loss(tmp_path, capsys):
    """L = 21 on a coin needs 2^22 windows: the run says so before training and keeps the model."""
    code, out, err = train(capsys, "--source", "coin", "--context-length", 21, *TINY, "--out", tmp_path / "m")
    assert code == 0, err
    assert "exact loss will not be computed" in err and "2097152" in err
    card = checkpoint.load_card(tmp_path / "m")
    assert all(card[k] is None for k in EXACT_KEYS)
    assert "4194304" in card["exact_loss_skipped"] and card["config"]["context_length"] == 21
    assert checkpoint.load(tmp_path / "m").context_length == 21


@pytest.mark.parametrize("args, match", [
    (["--source", "nope"], "unknown source kind"),
    (["--source", "coin", "--alphabet", "letters"], "alphabet applies"),
    (["--source", "text:/no/such/file.txt"], "does not exist"),
    (["--source", "tokens:"], "needs a file"),
    (["--source", "coin", "--steps", "0"], "--steps must be at least 1"),
])
def test_bad_train_options_fail_before_training(tmp_path, capsys, args, match):
    code, out, err = train(capsys, "--context-length", 3, *TINY, *args, "--out", tmp_path / "m")
    assert code == 2 and re.search(match, err) and "train loss" not in out
    assert not (tmp_path / "m" / "card.json").exists()


def test_help_lists_every_source_kind(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for kind in ("coin", "markov:", "dyck", "text:PATH", "tokens:PATH", "pydoc", "--alphabet"):
        assert kind in out


def _commands():
    """Every `semio train` command of the README and of the zoo cards' retrain commands."""
    readme = re.findall(r"`?(semio train [^`\n]+)`?", (ROOT / "README.md").read_text())
    found = [pytest.param("README", c, id=f"README-{i}") for i, c in enumerate(readme)]
    for name in checkpoint.zoo_names():
        found.append(pytest.param(f"zoo {name}", checkpoint.load_card(name)["retrain_command"], id=f"zoo-{name}"))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("where, command", _commands())
def test_documented_train_commands_run(tmp_path, capsys, where, command):
    """The command as documented, only shortened to 2 steps and saved elsewhere."""
    argv = shlex.split(command)
    assert argv[:2] == ["semio", "train"], f"{where}: {command}"
    for flag, value in (("--steps", "2"), ("--out", str(tmp_path / "m"))):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    code, _, err = train(capsys, *argv[2:], "--no-progress")
    assert code == 0, f"{where}: {err}"
    card = checkpoint.load_card(tmp_path / "m")
    if where.startswith("zoo"):
        zoo = checkpoint.load_card(where.split()[1])
        assert card["config"] == zoo["config"] and card["source"] == zoo["source"]
        assert {k: card[k] for k in ("batch_size", "learning_rate", "seed", "warmup_steps")} == {
            k: zoo[k] for k in ("batch_size", "learning_rate", "seed", "warmup_steps")}

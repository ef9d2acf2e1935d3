"""Fuzzing the three doors through which outside data comes in: checkpoint files, logit/probability
arrays, and the command line. Whatever the input, the only exceptions allowed out are:

* semio_jax's named errors (subclasses of ``SemioError``), for any bad DATA: file contents,
  array values and shapes, prompts, procedure specs, option values;
* ``SystemExit`` from argparse (usage error, exit status 2) on the command line;
* ``TypeError`` / ``ValueError`` only for Python-level misuse of the API, i.e. arguments that are not
  data of the documented kind at all (a non-callable model, ``StateSpace(0, 2)``, an unknown
  ``method=``, an object array or ragged list where an array of numbers is documented). None of the
  inputs generated here is such misuse: every array below is numeric, so it must be accepted or
  refused with a named error.

See docs/bad_inputs.md for the catalogue.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import semio_jax as sj
from semio_jax.app.cli import main
from semio_models import checkpoint
from semio_models.transformer import TransformerConfig, TransformerModel

pytestmark = pytest.mark.property

TINY = TransformerConfig(n_tokens=2, context_length=2, n_layers=1, d_model=8, n_heads=2, d_ff=8)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "tiny"
    checkpoint.save(folder, TransformerModel.random(TINY, seed=0), {"name": "tiny"})
    return folder


# ------------------------------------------------------------------------------ checkpoint loader
def _cards():
    config = st.one_of(st.just(TINY.to_dict()),
                       st.dictionaries(st.sampled_from(list(TINY.to_dict()) + ["x"]),
                                       st.one_of(st.integers(-3, 40), st.floats(allow_nan=True), st.text(max_size=3),
                                                 st.none()), max_size=8),
                       st.integers(), st.text(max_size=5))
    return st.fixed_dictionaries({"format_version": st.sampled_from([1, 1, 1, 2, "1", None]), "config": config},
                                 optional={"weights_sha256": st.text(max_size=70), "name": st.text(max_size=5)})


def _mutate(data: bytes, cuts, flips) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    end = len(b) if cuts is None else cuts % (len(b) + 1)
    return bytes(b[:end])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(weights=st.one_of(st.binary(max_size=400), st.none()),
       cut=st.one_of(st.none(), st.integers(0, 10**6)),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       card=st.one_of(_cards(), st.binary(max_size=200)),
       fix_hash=st.booleans())
def test_checkpoint_loader_only_raises_named_errors(tiny_folder, weights, cut, flips, card, fix_hash):
    real = (tiny_folder / "weights.msgpack").read_bytes()
    data = _mutate(real, cut, flips) if weights is None else weights  # damaged real weights, or random bytes
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "weights.msgpack").write_bytes(data)
        if isinstance(card, dict):
            if fix_hash:
                card = {**card, "weights_sha256": checkpoint.sha256_hex(data)}  # get past the hash check
            (folder / "card.json").write_text(json.dumps(card))
        else:
            (folder / "card.json").write_bytes(card)
        try:
            model = checkpoint.load(folder)
        except sj.SemioError:
            return
        assert model.config.n_tokens >= 1  # only an intact checkpoint loads


# ------------------------------------------------------------------------------ arrays
SPACE = sj.StateSpace(2, 2)  # 4 full + 2 prefix states
_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-5, 5).map(float))


def _arrays(shape_hint):
    dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128, np.float16])
    shapes = st.one_of(st.just(shape_hint), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7))

    @st.composite
    def build(draw):
        dtype, shape = draw(dtypes), draw(shapes)
        values = draw(hnp.arrays(np.float64, shape, elements=_numbers))
        with np.errstate(all="ignore"):
            if dtype in (np.int64, np.bool_):
                values = np.nan_to_num(values, posinf=3, neginf=-3)
            return values.astype(dtype)

    return build()


@settings(deadline=None)
@given(_arrays((SPACE.num_states, 2)))
def test_operator_from_any_numeric_table(probs):
    try:
        op = sj.Operator(SPACE, probs)
    except sj.SemioError:
        return
    assert op.max_row_error <= sj.operator.ROW_SUM_TOL and (op.probs >= 0).all()


@settings(deadline=None)
@given(_arrays((4, 2)), st.sampled_from(["temperature=1", "top_k=1", "top_p=0.5", "greedy", "min_p=0.3"]))
def test_build_operator_from_a_model_returning_any_array(logits, spec):
    calls = []

    def fn(contexts):
        calls.append(np.asarray(contexts).shape)
        return logits

    model = sj.FunctionModel(fn, n_tokens=2, jittable=False, name="fuzz")
    try:
        op = sj.build_operator(model, SPACE, spec, batch_size=4)
    except sj.SemioError:
        return
    assert op.probs.shape == (SPACE.num_states, 2) and op.max_row_error <= 1e-12


# ------------------------------------------------------------------------------ command line
def _argv(tiny: str, out: str, blocked: str):
    model = st.sampled_from([tiny] * 6 + ["coin-that-is-not", "", "../", blocked, "dyck/.."])
    spec = st.one_of(st.sampled_from(["temperature=1", "greedy", "top_k=2", "top_k=3", "top_p=0.5", "min_p=1.5",
                                      "temperature=0", "t=-1", "top_k=1.5", "nonsense", "", "top_k=1,top_k=2",
                                      "temperature=1"]),
                     st.text(max_size=6))
    number = st.sampled_from(["-1", "0", "1", "2", "3", "x", "1e9", "nan", "0.05", "2", "1", "3", "2"])
    prompt = st.sampled_from(["0", "1,0", "0,1,0", "2", "a", "", ",", "-1", "0,,1", "1"])
    options = {
        "-p": spec, "--length": number, "--chains": number, "--steps": st.sampled_from(["-1", "0", "1", "3"]),
        "--basin-chains": st.sampled_from(["0", "1", "4"]), "--level": number, "--seed": number,
        "--prompt": prompt, "--state": prompt, "--format": st.sampled_from(["drn", "prism", "npz", "csv"]),
        "--out": st.sampled_from([out, blocked + "/sub", ""]),
        "--analyses": st.sampled_from(["entropy", "nonsense", ",", ""]),
        "--checkpoint-dir": st.sampled_from([out + "/ck", blocked + "/ck"]), "--no-sample": None,
    }
    common = ["-p", "--length", "--out"]
    per_command = {
        "zoo": [], "analyze": common + ["--chains", "--steps", "--basin-chains", "--level", "--seed", "--analyses",
                                        "--checkpoint-dir", "--no-sample"],
        "sample": ["-p", "--prompt", "--steps", "--chains", "--seed"],
        "export": common + ["--state", "--format"], "query": ["-p", "--length", "--state"],
        "frobnicate": [],
    }
    per_command["check"] = [o for o in per_command["analyze"] if o not in ("--analyses", "--no-sample")]
    command = st.sampled_from(["zoo", "analyze", "analyze", "check", "sample", "export", "export", "query",
                               "query", "frobnicate"])
    prop = st.sampled_from(['P=? [F "attractor_0"]', 'P=? [F<=3 "last_token_1"]', "P=? [", 'P=? [F "x"]', "hello",
                            'LRA=? ["last_token_0"]'])

    @st.composite
    def build(draw):
        cmd = draw(command)
        argv = [cmd]
        if cmd in ("analyze", "check", "export"):  # cheap defaults first; fuzzed options may override them
            argv += ["--out", out + "/r"] + (["--steps", "2", "--basin-chains", "4", "--chains", "2"]
                                             if cmd != "export" else [])
        if cmd != "zoo" and draw(st.integers(0, 9)) > 0:
            argv.append(draw(model))
        if cmd == "query" and draw(st.integers(0, 9)) > 0:
            argv.append(draw(prop))
        allowed = per_command[cmd]
        for _ in range(draw(st.integers(0, 4))):
            if not allowed or draw(st.integers(0, 19)) == 0:  # now and then: a foreign option or random text
                argv.append(draw(st.one_of(st.sampled_from(sorted(options)), st.text(max_size=4))))
                continue
            name = draw(st.sampled_from(allowed))
            argv += [name] if options[name] is None else [name, draw(options[name])]
        if cmd == "sample" and "--steps" not in argv:
            argv += ["--steps", "3"]
        return argv

    return build()


_FUZZ_DIR = tempfile.mkdtemp(prefix="semio-fuzz-")
_BLOCKED = os.path.join(_FUZZ_DIR, "a-file")
Path(_BLOCKED).write_text("not a folder")


@pytest.mark.filterwarnings("ignore:No artists with labels:UserWarning")
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_cli_with_random_argv(tiny_folder, monkeypatch, capsys, data):
    monkeypatch.chdir(_FUZZ_DIR)  # a run with --out '' writes reports/... here, not into the checkout
    argv = data.draw(_argv(str(tiny_folder), os.path.join(_FUZZ_DIR, "out"), _BLOCKED))
    try:
        status = main(argv)
    except SystemExit as e:  # argparse: usage errors (exit 2) and --help (exit 0)
        assert e.code in (0, 2), argv
        return
    finally:
        captured = capsys.readouterr()
    assert status in (0, 1, 2) or (status == 3 and argv[0] == "check"), argv  # 3: semio check INCONCLUSIVE
    assert "Traceback" not in captured.err, (argv, captured.err)
    if status == 2:
        assert "semio: error:" in captured.err, (argv, captured.err)
    assert not list(Path(_FUZZ_DIR).rglob(".*.tmp")), "a temporary file was left behind"

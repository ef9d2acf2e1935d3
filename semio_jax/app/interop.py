"""Interop: the exact chain in other tools' formats, and PCTL queries checked by Storm.

Two ``semio`` subcommands (registered through the CLI's plug-in hook):

  semio export MODEL -p SPEC --format drn|prism|npz --out PATH [--state PROMPT ...]
  semio query  MODEL -p SPEC 'P=? [F<=20 "attractor_0"]' [--state PROMPT ...]

Formats (states numbered exactly as in semio_jax: full states first, then the
prefix groups; see :mod:`semio_jax.core.space`):

* ``drn``: Storm's explicit DRN format (:func:`semio_jax.app.export.to_drn`),
  read by ``stormpy.build_model_from_drn``.
* ``prism``: the explicit transition/label files of PRISM as Storm reads them
  (``stormpy.build_model_from_explicit(PATH.tra, PATH.lab)``): ``PATH.tra``
  starts with the model type ``dtmc`` and lists ``source target probability``
  per non-zero transition; ``PATH.lab`` declares the labels between
  ``#DECLARATION`` and ``#END`` and then lists ``state label label ...``.
  (PRISM itself, ``prism -importtrans``, wants ``states transitions`` as the
  first line of the .tra file instead of ``dtmc``.)
* ``npz``: numpy arrays (``np.load(path)``, no pickle): ``probs``
  float64[S, N], ``successors`` int64[S, N], the transition matrix as CSR
  (``csr_data``, ``csr_indices``, ``csr_indptr``), ``attractor_of``
  int64[S] (-1 = transient), ``initial`` (state indices), ``last_token``
  int64[S], and ``meta`` (a JSON string: space, procedure, model, fingerprint).

Probabilities are written with ``repr`` (shortest decimal that reads back as
the same float64), so the chain a tool parses is the operator's table. Two
tokens leading to the same state are merged by adding their probabilities.

State labels (the same in every format):
  * ``init``: the initial states: the states of the prompts given with
    ``--state`` (comma-separated token ids, or digits for N <= 10, oldest first,
    as ``semio sample`` prints them), by default the one-token prompts (every
    full state when the space has no prefix states);
  * ``attractor_<i>``: the states of attractor i, in the order of :func:`semio_jax.attractors`;
  * ``last_token_<y>``: the states whose newest token is y.

Every file is written atomically. ``semio query`` needs stormpy
(``pip install stormpy``, or ``pip install -e '.[storm]'``); without it the
command stops with a MissingDependencyError saying so.
"""

from __future__ import annotations

import re
import sys
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .._util.io import atomic_savez, atomic_write_text, ensure_dir
from ..errors import MissingDependencyError, PropertyError, ReportWriteError
from .export import default_initial, label_sets, to_drn
from .pipeline import tag_of
from .prompts import parse_tokens
from .report import text_table
from ..analysis import attractors, class_structure
from ..build import build_operator
from ..core.procedure import parse
from ..core.space import StateSpace
from semio_models.checkpoint import load as load_model

__all__ = ["FORMATS", "TOKEN_LABEL", "state_labels", "prism_texts", "to_prism", "to_npz", "export_chain",
           "parse_states", "storm_model", "check_property", "register", "run"]

FORMATS = ("drn", "prism", "npz")
TOKEN_LABEL = "last_token_"
_INSTALL_HINT = "pip install stormpy (or, in a checkout, pip install -e '.[storm]')"


# ----------------------------------------------------------------------------- writers
def state_labels(op, initial=None) -> list[list[str]]:
    """The labels of every state: ``init``, ``attractor_<i>``, ``last_token_<y>``."""
    return label_sets(op, initial, None, True, TOKEN_LABEL)


def _rows(op):
    """Yield (state, [(target, probability), ...]) with tokens to the same target merged, targets sorted."""
    probs, succ = op.probs, op.successors
    for i in range(op.num_states):
        row: dict[int, float] = {}
        for y in np.flatnonzero(probs[i] > 0):
            t = int(succ[i, y])
            row[t] = row.get(t, 0.0) + float(probs[i, y])
        yield i, sorted(row.items())


def prism_texts(op, initial=None) -> tuple[str, str]:
    """(.tra text, .lab text) of ``op`` in the explicit format Storm reads (see the module docstring)."""
    names = state_labels(op, initial)
    tra = ["dtmc"]
    for i, row in _rows(op):
        tra += [f"{i} {t} {p!r}" for t, p in row]
    declared: list[str] = []
    seen = set()
    for labels in names:
        for name in labels:
            if name not in seen:
                seen.add(name)
                declared.append(name)
    declared.sort(key=lambda n: (n != "init", n))
    lab = ["#DECLARATION", " ".join(declared), "#END"]
    lab += [f"{i} " + " ".join(labels) for i, labels in enumerate(names) if labels]
    return "\n".join(tra) + "\n", "\n".join(lab) + "\n"


def _prism_paths(path) -> tuple[Path, Path]:
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".tra", ".lab", ".prism") else p
    return base.with_name(base.name + ".tra"), base.with_name(base.name + ".lab")


def to_prism(op, path, *, initial=None) -> list[str]:
    """Write ``PATH.tra`` and ``PATH.lab`` (a suffix .tra/.lab on ``path`` is dropped first); returns both paths."""
    tra_text, lab_text = prism_texts(op, initial)
    tra, lab = _prism_paths(path)
    atomic_write_text(lab, lab_text)
    atomic_write_text(tra, tra_text)
    return [str(tra), str(lab)]


def to_npz(op, path, *, initial=None, meta: dict | None = None) -> list[str]:
    """Write the chain as numpy arrays (see the module docstring); returns the path."""

    init = default_initial(op) if initial is None else np.atleast_1d(np.asarray(initial, dtype=np.int64))
    space = op.space
    csr = op.csr
    last = np.empty(op.num_states, dtype=np.int64)
    for k, offset in space.iter_groups():
        last[offset: offset + space.n_tokens**k] = np.arange(space.n_tokens**k) % space.n_tokens
    info = {"space": {"n_tokens": space.n_tokens, "length": space.length, "prefixes": space.prefixes,
                      "num_states": op.num_states},
            "procedure": op.procedure.spec if op.procedure is not None else None,
            "fingerprint": op.fingerprint, "model": op.model_info, **(meta or {})}
    arrays = {"probs": op.probs, "successors": op.successors, "csr_data": csr.data,
              "csr_indices": csr.indices.astype(np.int64), "csr_indptr": csr.indptr.astype(np.int64),
              "attractor_of": class_structure(op).attractor_of.astype(np.int64), "initial": np.unique(init),
              "last_token": last, "meta": np.array(json.dumps(info, default=str))}
    atomic_savez(path, arrays)
    return [str(path)]


def export_chain(op, path, fmt: str = "drn", *, initial=None, meta: dict | None = None) -> list[str]:
    """Write ``op`` in format ``fmt`` (drn, prism or npz); returns the paths written."""
    if fmt == "drn":
        ensure_dir(Path(path).parent if str(Path(path).parent) else ".")
        try:
            return [to_drn(op, path, initial=initial, token_label=TOKEN_LABEL)]
        except OSError as e:
            raise ReportWriteError(f"cannot write {path}: {e.strerror or e}; choose another --out") from e
    if fmt == "prism":
        return to_prism(op, path, initial=initial)
    if fmt == "npz":
        return to_npz(op, path, initial=initial, meta=meta)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def parse_states(space, prompts) -> np.ndarray | None:
    """State indices of prompts like "0,1,2" or "012" (oldest token first; the syntax of
    semio_jax.app.prompts, as ``semio sample`` prints them); None when no prompt is given."""
    if not prompts:
        return None
    return np.asarray([space.index(parse_tokens(str(text).replace(" ", ""), space.n_tokens)) for text in prompts],
                      dtype=np.int64)


# ----------------------------------------------------------------------------- Storm
def _stormpy():
    try:
        import stormpy
    except ImportError as e:
        raise MissingDependencyError(f"this needs the model checker Storm's Python bindings: {_INSTALL_HINT} "
                                     f"({e})") from None
    return stormpy


def storm_model(op, initial=None):
    """The chain as a stormpy sparse DTMC (built from the DRN export), with the labels above."""
    stormpy = _stormpy()
    with tempfile.TemporaryDirectory(prefix="semio-storm-") as tmp:
        path = os.path.join(tmp, "chain.drn")
        to_drn(op, path, initial=initial, token_label=TOKEN_LABEL)
        return stormpy.build_model_from_drn(path)


def check_property(op, prop: str, initial=None, model=None) -> list[dict]:
    """Check PCTL property (or ';'-separated properties) ``prop`` with Storm on ``op``'s chain.

    Returns one dict per property: ``{"property": text, "values": float64[S] or bool[S]}``
    with a value for every state (index order of semio_jax). ``model`` is a
    stormpy model from :func:`storm_model` (built when None).
    """
    stormpy = _stormpy()
    model = storm_model(op, initial) if model is None else model
    labels = sorted(model.labeling.get_labels())
    try:
        with _quiet_stderr():  # Storm also logs its own copy of every error to stderr
            props = stormpy.parse_properties(prop)
    except Exception as e:  # Storm raises plain RuntimeErrors for syntax errors
        raise PropertyError(f"Storm cannot parse {prop!r}: {_first_line(e)}. Labels of this chain: "
                            f"{', '.join(labels)}; example: 'P=? [F<=20 \"attractor_0\"]'") from None
    if not props:
        raise PropertyError(f"no property in {prop!r}; example: 'P=? [F<=20 \"attractor_0\"]'")
    out = []
    for p in props:
        text = str(p.raw_formula if hasattr(p, "raw_formula") else p.get_raw_formula())
        missing = [name for name in _labels_in(text) if name not in labels]
        if missing:
            raise PropertyError(f"{text} uses the label(s) {', '.join(missing)}, which this chain does not have; "
                                f"its labels: {', '.join(labels)}")
        try:
            with _quiet_stderr():
                res = stormpy.model_checking(model, p, only_initial_states=False)
        except Exception as e:
            raise PropertyError(f"Storm cannot check {text}: {_first_line(e)} (the exported chain is a DTMC "
                                f"without reward models; labels: {', '.join(labels)})") from None
        if res.is_quantitative():
            values = np.asarray(res.get_value_vector(), dtype=np.float64)
        else:
            bits = res.get_truth_values_vector()  # a BitVector; iterating it yields the set indices
            values = np.zeros(op.num_states, dtype=bool)
            values[np.fromiter(iter(bits), dtype=np.int64)] = True
        out.append({"property": text, "values": values})
    return out


def _labels_in(formula: str) -> list[str]:

    return sorted(set(re.findall(r'"([^"]*)"', formula)))


class _quiet_stderr:
    """Silence file descriptors 1 and 2 (Storm's C++ logging) for the duration of a block."""

    def __enter__(self):

        self._saved = []
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            null = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                self._saved.append((fd, os.dup(fd)))
                os.dup2(null, fd)
            os.close(null)
        except OSError:
            self.__exit__()
        return self

    def __exit__(self, *exc):
        for fd, saved in self._saved:
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = []
        return False


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ----------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    for name, helptext in (("export", "write the exact chain for Storm/PRISM (drn, prism) or numpy (npz)"),
                           ("query", "check a PCTL property with Storm on the exact chain")):
        p = subparsers.add_parser(name, help=helptext)
        p.add_argument("model", help="zoo name or checkpoint folder")
        if name == "query":
            p.add_argument("property", help="PCTL property, e.g. 'P=? [F<=20 \"attractor_0\"]' (';' separates several)")
        p.add_argument("-p", "--procedure", default="temperature=1", help="sampling procedure spec (default temperature=1)")
        p.add_argument("--length", type=int, default=None, help="context length L (default: the model's)")
        p.add_argument("--state", action="append", default=None, metavar="PROMPT",
                       help="initial state as comma-separated token ids, oldest first (repeatable; "
                            "default: the one-token prompts)")
        if name == "export":
            p.add_argument("--format", choices=FORMATS, default="drn", help="drn (Storm), prism (.tra/.lab) or npz")
            p.add_argument("--out", default=None, help="output file (prism: PATH.tra and PATH.lab); "
                                                       "default <model>_<procedure>.<format>")
        p.set_defaults(plugin="semio_jax.app.interop")


def _build(args):

    proc = parse(args.procedure)  # a bad spec fails before the model is loaded
    model = load_model(args.model)
    length = int(args.length or model.context_length)
    space = StateSpace(int(model.n_tokens), length)
    initial = parse_states(space, args.state)  # bad prompts fail before the build
    op = build_operator(model, space, proc)
    card = getattr(model, "card", None) or {}
    meta = {"model_name": Path(args.model).name, "weights_sha256": card.get("weights_sha256")}
    return model, op, initial, meta


def _describe(op, meta) -> str:

    atts = attractors(op)
    sha = (meta.get("weights_sha256") or "")[:12]
    return (f"model {meta['model_name']}" + (f" (weights sha256 {sha}...)" if sha else "")
            + f", procedure {op.procedure.spec}, N={op.n_tokens} L={op.space.length}: {op.num_states} states, "
            f"{int(op.csr.nnz)} transitions, {len(atts)} attractor(s) of sizes {[len(a) for a in atts][:12]}")


def run(args) -> int:
    if args.command == "export":
        return _run_export(args)
    if args.command == "query":
        return _run_query(args)
    raise ValueError(f"semio_jax.app.interop has no command {args.command!r}")


def _run_export(args) -> int:

    _, op, initial, meta = _build(args)
    out = args.out or f"{tag_of(meta['model_name'] + '_' + op.procedure.spec)}.{args.format}"
    paths = export_chain(op, out, args.format, initial=initial, meta=meta)
    init = default_initial(op) if initial is None else initial
    print(_describe(op, meta))
    print(f"labels: init ({len(np.unique(init))} states), attractor_<i>, {TOKEN_LABEL}<y>")
    for p in paths:
        print(f"wrote {p}")
    return 0


def _run_query(args) -> int:

    _, op, initial, meta = _build(args)
    init = default_initial(op) if initial is None else np.unique(initial)
    results = check_property(op, args.property, initial=init)
    print(_describe(op, meta))
    for res in results:
        rows = [[op.space.label(int(s)), res["values"][int(s)].item()] for s in init]
        print()
        print(text_table(["state", "value"], rows, title=f"{res['property']}  (Storm, exported chain)"))
    return 0

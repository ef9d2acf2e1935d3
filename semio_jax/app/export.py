"""Export an Operator to external tools (currently: Storm's explicit DRN format).

The DRN ("direct encoding") file describes the operator as an explicit
discrete-time Markov chain, one block per state, states numbered exactly as in
semio_jax (full states first, then prefix groups; see :mod:`semio_jax.core.space`):

    @type: DTMC
    ...
    @model
    state 5 attractor_0 token_1
    	action 0
    		3 : 0.25
    		7 : 0.75

Each row lists the successor states with non-zero probability, written with
``repr`` (the shortest decimal that reads back as the same float64), so the
chain Storm parses is the operator's table up to Storm's own parsing. Two
tokens that lead to the same state (possible only in hand-made spaces) are
merged by adding their probabilities.

State labels:
  * ``init``: the initial states (default: the one-token prompts when the
    space has prefix states, else every full state);
  * ``attractor_<i>``: the states of attractor i (in the order of
    :func:`semio_jax.attractors`);
  * ``token_<y>``: states whose last (newest) token is y;
  * any extra labels passed in ``labels`` (name -> state indices).

The file is written atomically (temporary file in the same folder, then
``os.replace``), so a reader never sees half a model.

Example (stormpy 2.0)::

    sj.export.to_drn(op, "chain.drn")
    model = stormpy.build_model_from_drn("chain.drn")
    prop = stormpy.parse_properties('P=? [F "attractor_0"]')[0]
    h0 = stormpy.model_checking(model, prop, only_initial_states=False).get_value_vector()
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Mapping

import numpy as np

from .._util.io import atomic_write_text
from ..analysis import attractors

__all__ = ["to_drn", "drn_text"]

_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def default_initial(op) -> np.ndarray:
    space = op.space
    if space.prefixes and space.length > 1:
        g = space.group(1)
        return np.arange(g.start, g.stop, dtype=np.int64)
    return np.arange(space.num_full, dtype=np.int64)


def label_sets(op, initial, labels: Mapping[str, Iterable[int]] | None, with_attractors: bool,
                  token_label: str = "token_"):

    s = op.num_states
    names: list[list[str]] = [[] for _ in range(s)]
    init = default_initial(op) if initial is None else np.atleast_1d(np.asarray(initial, dtype=np.int64))
    if init.size == 0:
        raise ValueError("a DRN model needs at least one initial state")
    if init.min() < 0 or init.max() >= s:
        raise IndexError(f"initial states must lie in [0, {s}), got {init.tolist()}")
    for i in np.unique(init):
        names[int(i)].append("init")
    if with_attractors:
        for a, members in enumerate(attractors(op)):
            for i in members:
                names[int(i)].append(f"attractor_{a}")
    space = op.space
    for k, offset in space.iter_groups():
        last = np.arange(space.n_tokens**k) % space.n_tokens  # newest token = least significant digit
        for local, y in enumerate(last):
            names[offset + local].append(f"{token_label}{int(y)}")
    for name, states in (labels or {}).items():
        if not _LABEL.match(name) or name == "init":
            raise ValueError(f"bad DRN label {name!r}: use letters, digits and '_' (and not 'init')")
        for i in np.unique(np.asarray(list(states), dtype=np.int64)):
            if not 0 <= i < s:
                raise IndexError(f"label {name!r}: state {int(i)} outside [0, {s})")
            names[int(i)].append(name)
    return names


def drn_text(op, *, initial=None, labels: Mapping[str, Iterable[int]] | None = None,
             attractor_labels: bool = True, token_label: str = "token_") -> str:
    """The DRN text of ``op`` as one string (see the module docstring).

    ``token_label`` names the newest-token labels (``semio export`` uses ``last_token_``).
    """
    names = label_sets(op, initial, labels, attractor_labels, token_label)
    probs, succ = op.probs, op.successors
    s = op.num_states
    lines = [
        "// semio_jax operator export (explicit DTMC)",
        f"// space: n_tokens={op.space.n_tokens} length={op.space.length} prefixes={op.space.prefixes}",
        f"// procedure: {op.procedure.spec if op.procedure is not None else 'given table'}",
        f"// fingerprint: {op.fingerprint}",
        "@type: DTMC",
        "@parameters",
        "",
        "@reward_models",
        "",
        "@nr_states",
        str(s),
        "@nr_choices",
        str(s),
        "@model",
    ]
    for i in range(s):
        row: dict[int, float] = {}
        for y in np.flatnonzero(probs[i] > 0):
            t = int(succ[i, y])
            row[t] = row.get(t, 0.0) + float(probs[i, y])
        lines.append(f"state {i}" + "".join(f" {n}" for n in names[i]))
        lines.append("\taction 0")
        for t in sorted(row):
            lines.append(f"\t\t{t} : {row[t]!r}")
    return "\n".join(lines) + "\n"


def to_drn(op, path: str | os.PathLike, *, initial=None, labels: Mapping[str, Iterable[int]] | None = None,
           attractor_labels: bool = True, token_label: str = "token_") -> str:
    """Write ``op`` as an explicit DTMC in Storm's DRN format, atomically; returns the path.

    Args:
      op: the Operator.
      path: the file to write.
      initial: state index or indices labelled ``init`` (default: the
        one-token prompts, or every full state when there are no prefix states).
      labels: extra state labels, name -> iterable of state indices.
      attractor_labels: label the attractors ``attractor_<i>`` (runs the class decomposition).
      token_label: prefix of the newest-token labels (default ``token_``).
    """
    text = drn_text(op, initial=initial, labels=labels, attractor_labels=attractor_labels, token_label=token_label)
    path = os.fspath(path)
    atomic_write_text(path, text, make_parents=False)  # temp file + fsync + rename; a missing folder is an error
    return path

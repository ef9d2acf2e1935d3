"""Shared machinery of the proposition validations.

Each proposition module ``proofs/<name>.py`` defines

    NAME, TITLE, SLACK        name (= file stem), one-line title, definition of its slack
    validate(ctx) -> Result   the numerical check (``ctx`` is a :class:`Context`)
    replay(cex) -> Replay     re-check a saved counterexample (modules that can violate)

and its statement, proof sketch and recorded status live in ``proofs/<name>.md``.

Conventions used by every validation:

* **cases**: one case is one (operator or model, parameters) combination whose
  inequality was evaluated exactly; hypothesis examples count one case each.
* **slack**: the margin by which an inequality held (right side minus left side,
  in the units named by ``SLACK``); negative slack beyond the stated numerical
  tolerance is a violation, and so is a NaN slack (the inequality could not be
  evaluated, which is never evidence that it holds). ``worst_slack`` is the minimum over all cases.
* **counterexample**: a JSON-able dict with everything needed to rebuild the
  case (an operator table, an n-gram table, or a zoo model name and procedure)
  plus the numbers that show the violation. The runner saves it as
  ``proofs/counterexamples/<name>.json`` and ``replay`` re-checks it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from random import Random
from typing import Any, Callable

import numpy as np
from scipy.spatial.distance import cdist

import semio_jax as sj
from semio_jax.testing import references
from semio_models.checkpoint import load, load_card
from semio_models.transformer import TransformerConfig, TransformerModel

__all__ = [
    "Context", "Result", "Replay", "Tracker", "search", "SearchError", "is_violation", "least",
    "op_to_json", "op_from_json", "ngram_op", "full_block", "row_powers", "full_powers",
    "dobrushin_exact", "doeblin_bound", "min_overlap", "doeblin_mass", "delta_L", "fmt", "stationary_full",
    "reference_probs", "window_powers",
]

ZOO = {"coin": (2, 8), "markov2": (4, 5), "dyck": (3, 6)}

#: Random-weight transformers used by the validations: (label, N, L, layers, d_model, seed).
RANDOM_MODELS = [
    ("rand-N2L4", 2, 4, 1, 16, 0),
    ("rand-N3L3", 3, 3, 2, 32, 1),
    ("rand-N2L6", 2, 6, 2, 16, 2),
    ("rand-N4L3", 4, 3, 1, 32, 3),
]
RANDOM_MODELS_QUICK = RANDOM_MODELS[:1]


# --------------------------------------------------------------------------- results
@dataclass
class Result:
    """What a validation returns (see module docstring)."""

    cases: int
    violated: bool
    worst_slack: float | None
    worst_case: str = ""
    counterexample: dict | None = None
    details: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


@dataclass
class Replay:
    """Outcome of re-checking a saved counterexample."""

    violated: bool
    message: str
    numbers: dict = field(default_factory=dict)


class Tracker:
    """Accumulates cases, the worst slack and the first (or smallest) violation."""

    def __init__(self, tol: float = 0.0):
        self.cases = 0
        self.worst = math.inf
        self.worst_case = ""
        self.violation: dict | None = None
        self.violation_size = math.inf
        self.tol = tol
        self.notes: list[str] = []

    def add(self, label: str, slack: float, counterexample: Callable[[], dict] | dict | None = None,
            size: float = math.inf, tol: float | None = None) -> bool:
        """Record one case; returns True if it is a violation (slack < -tol, or NaN)."""
        self.cases += 1
        slack = float(slack)
        if slack < self.worst or (math.isnan(slack) and not math.isnan(self.worst)):
            self.worst, self.worst_case = slack, label
        bad = is_violation(slack, self.tol if tol is None else tol)
        if bad and (self.violation is None or size < self.violation_size):
            cex = counterexample() if callable(counterexample) else (counterexample or {})
            self.violation = {"case": label, "slack": slack, **cex}
            self.violation_size = size
        return bad

    def count(self, n: int = 1) -> None:
        self.cases += n

    def result(self, **details) -> Result:
        worst = None if self.worst == math.inf else self.worst
        return Result(cases=self.cases, violated=self.violation is not None, worst_slack=worst,
                      worst_case=self.worst_case, counterexample=self.violation, details=details,
                      notes=list(self.notes))


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if math.isinf(x) or math.isnan(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


# --------------------------------------------------------------------------- context
class Context:
    """Run settings plus caches of the models and operators shared by every validation."""

    def __init__(self, quick: bool = False, seed: int = 0, log: Callable[[str], None] | None = None):
        self.quick = quick
        self.seed = seed
        self.log = log or (lambda s: None)
        self._memo: dict = {}

    # -- hypothesis budget
    def examples(self, full: int, quick: int | None = None) -> int:
        return (quick if quick is not None else max(5, full // 4)) if self.quick else full

    # -- zoo
    def zoo_card(self, name: str) -> dict:
        return self.memo(("card", name), lambda: load_card(name))

    def zoo_op(self, name: str, spec: str = "temperature=1", prefixes: bool = True) -> sj.Operator:
        t = time.perf_counter()
        fresh = (json_key({"kind": "zoo", "name": name}), None, prefixes) not in _OP_CACHE
        op = op_from_model_spec({"kind": "zoo", "name": name}, spec, prefixes=prefixes)
        if fresh:
            self.log(f"  built {name} in {time.perf_counter() - t:.1f}s")
        return op

    # -- random transformers
    def random_specs(self):
        return RANDOM_MODELS_QUICK if self.quick else RANDOM_MODELS

    def random_op(self, label: str, spec: str = "temperature=1") -> sj.Operator:
        t = time.perf_counter()
        mspec = self.random_model_spec(label)
        fresh = (json_key(mspec), None, True) not in _OP_CACHE
        op = op_from_model_spec(mspec, spec)
        if fresh:
            self.log(f"  built {label} in {time.perf_counter() - t:.1f}s")
        return op

    def random_model_spec(self, label: str) -> dict:
        spec = {r[0]: r for r in RANDOM_MODELS}[label]
        _, n, L, layers, d, seed = spec
        return {"kind": "random_transformer", "n_tokens": n, "context_length": L, "n_layers": layers,
                "d_model": d, "n_heads": 2, "seed": seed + 1000 * self.seed}

    def delta_L(self, op: sj.Operator) -> float:
        """delta(P^L) upper bound, memoised per operator table (several propositions need it)."""
        return self.memo(("delta_L", op.fingerprint), lambda: delta_L(op, exact_max=256 if self.quick else 1024))

    def memo(self, key, fn):
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]


def json_key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def model_from_spec(spec: dict):
    """Rebuild a model from a counterexample's model spec."""
    kind = spec["kind"]
    if kind == "zoo":
        return load(spec["name"])
    if kind == "random_transformer":
        cfg = TransformerConfig(spec["n_tokens"], spec["context_length"], n_layers=spec["n_layers"],
                                d_model=spec["d_model"], n_heads=spec["n_heads"])
        return TransformerModel.random(cfg, spec["seed"])
    if kind == "ngram":
        return sj.NGramModel(np.array(spec["logits"], dtype=np.float64), context_length=spec.get("context_length"))
    raise ValueError(f"unknown model kind {kind!r}")


_OP_CACHE: dict = {}


def op_from_model_spec(spec: dict, procedure: str = "temperature=1", length: int | None = None,
                       prefixes: bool = True) -> sj.Operator:
    """The operator of a model spec under ``procedure``, built once per process.

    The model is evaluated once (at temperature 1, logits kept) and every other procedure
    is derived with ``Operator.with_procedure``; validations and replays share the cache.
    """
    key = (json_key(spec), length, prefixes)
    if key not in _OP_CACHE:
        model = model_from_spec(spec)
        n = model.n_tokens
        L = length or model.context_length
        _OP_CACHE[key] = {"temperature=1": sj.build_operator(model, sj.StateSpace(n, L, prefixes), "temperature=1")}
    ops = _OP_CACHE[key]
    spec_str = sj.sampling.parse(procedure).spec
    if spec_str not in ops:
        ops[spec_str] = ops["temperature=1"].with_procedure(spec_str)
    return ops[spec_str]


# --------------------------------------------------------------------------- serialisation
def _clean(a: np.ndarray) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


def op_to_json(op: sj.Operator) -> dict:
    """An operator as JSON (space, procedure, probability table, logits when kept)."""
    sp = op.space
    out = {"kind": "operator", "n_tokens": sp.n_tokens, "length": sp.length, "prefixes": sp.prefixes,
           "procedure": None if op.procedure is None else op.procedure.spec, "probs": _clean(op.probs)}
    if op.logits is not None:
        out["logits"] = _clean(op.logits)
    return out


def op_from_json(d: dict) -> sj.Operator:
    space = sj.StateSpace(d["n_tokens"], d["length"], d["prefixes"])
    proc = sj.sampling.parse(d["procedure"]) if d.get("procedure") else None
    logits = np.array(d["logits"], dtype=np.float64) if d.get("logits") is not None else None
    return sj.Operator(space, np.array(d["probs"], dtype=np.float64), proc, logits=logits)


def ngram_op(logits, length: int, procedure: str = "temperature=1", prefixes: bool = True) -> sj.Operator:
    """Operator of ``NGramModel(logits)`` on StateSpace(N, length), built without compiling anything.

    The model is called eagerly on every context (its float32 tables, its rule for
    contexts shorter than the order) and the procedure is applied by the engine's
    numpy oracle ``semio_jax.testing.references.probabilities_reference`` (the definition the JAX path
    is tested against), so this is the operator ``build_operator`` would return.
    """
    model = sj.NGramModel(np.asarray(logits, dtype=np.float64), context_length=length)
    n = model.n_tokens
    space = sj.StateSpace(n, length, prefixes)
    rows = np.empty((space.num_states, n))
    for k, off in space.iter_groups():
        rows[off:off + n**k] = np.asarray(model(space.contexts(k)), dtype=np.float64)
    proc = sj.sampling.parse(procedure)
    probs = references.probabilities_reference(proc, rows)
    return sj.Operator(space, probs, proc, logits=rows)


# --------------------------------------------------------------------------- dense helpers
def full_block(op: sj.Operator) -> np.ndarray:
    """Dense one-step matrix of the chain restricted to the N^L full states (closed under the dynamics)."""
    nf = op.space.num_full
    P = np.zeros((nf, nf))
    rows = np.repeat(np.arange(nf), op.n_tokens)
    np.add.at(P, (rows, op.successors[:nf].ravel()), op.probs[:nf].ravel())
    return P


def dense(op: sj.Operator) -> np.ndarray:
    S = op.num_states
    P = np.zeros((S, S))
    rows = np.repeat(np.arange(S), op.n_tokens)
    np.add.at(P, (rows, op.successors.ravel()), op.probs.ravel())
    return P


def row_powers(op: sj.Operator, n: int, starts=None):
    """Yield (t, R_t) for t = 0..n, R_t[i] = P^t(starts[i], .) (rows over all states), by structured pushes."""
    S = op.num_states
    starts = np.arange(S) if starts is None else np.asarray(starts)
    D = np.zeros((S, len(starts)))
    D[starts, np.arange(len(starts))] = 1.0
    yield 0, D.T
    for t in range(1, n + 1):
        D = op.push(D)
        yield t, D.T


def full_powers(op: sj.Operator, k: int) -> np.ndarray:
    """P^k restricted to full states, dense [N^L, N^L] (rows = starts)."""
    R = None
    for t, R in row_powers(op, k, np.arange(op.space.num_full)):
        pass
    return np.array(R[:, :op.space.num_full])


def min_overlap(M: np.ndarray, block: int = 16) -> float:
    """min_{x,x'} sum_y min(M_x(y), M_x'(y)) = 1 - delta(M).

    Up to 256 rows: directly (sums of minima, no cancellation: accurate even at 1e-35). Above: from
    the pairwise L1 distances (scipy cdist, ~10x faster) as min (|M_x| + |M_x'| - ||M_x - M_x'||_1)/2,
    minus 1e-14 to cover its cancellation error, so the value is still a lower bound of the overlap
    (an upper bound of delta).
    """
    n = M.shape[0]
    if n > 256:
        s = M.sum(1)
        ov = (s[:, None] + s[None, :] - cdist(M, M, "cityblock")) / 2
        return max(0.0, float(ov.min()) - 1e-14)
    best = np.inf
    for s in range(0, n, block):
        overlap = np.minimum(M[s:s + block, None, :], M[None, :, :]).sum(-1)  # [b, n]
        best = min(best, float(overlap.min()))
    return best


def delta_L(op: sj.Operator, exact_max: int = 1024) -> float:
    """An upper bound on delta(P^L) on T^L: exact (see min_overlap) up to exact_max full states, else Doeblin."""
    PL = full_powers(op, op.space.length)
    nf = op.space.num_full
    return 1.0 - (min_overlap(PL) if nf <= exact_max else doeblin_mass(PL))


def dobrushin_exact(M: np.ndarray, block: int = 16) -> float:
    """delta(M) = max_{x,x'} TV(M_x, M_x') = 1 - min_overlap(M)."""
    return max(0.0, 1.0 - min_overlap(M, block))


def doeblin_mass(M: np.ndarray) -> float:
    """beta = sum_y min_x M(x, y) <= min_overlap(M) (Doeblin minorisation mass)."""
    return float(M.min(axis=0).sum())


def doeblin_bound(M: np.ndarray) -> float:
    """Upper bound 1 - sum_y min_x M(x, y) >= delta(M) (Doeblin minorisation)."""
    return max(0.0, 1.0 - doeblin_mass(M))


def stationary_full(op: sj.Operator) -> np.ndarray:
    """The unique stationary distribution (engine), as a vector over all states; requires one attractor."""
    pi = sj.stationary(op)
    if pi.shape[0] != 1:
        raise ValueError(f"expected one attractor, found {pi.shape[0]}")
    return pi[0]


def reference_probs(op: sj.Operator) -> np.ndarray:
    """[S, N] next-token laws recomputed from the operator's logits by the numpy oracle
    (``references.probabilities_reference``, the procedure's definition token by token): independent of the
    engine's table ``op.probs``, which validations compare against it."""
    if op.logits is None or op.procedure is None:
        raise ValueError("the operator keeps no logits or no procedure: nothing to recompute its table from")
    logits = np.asarray(op.logits, dtype=np.float64)
    key = (op.procedure.spec, logits.shape, hashlib.sha256(logits.tobytes()).hexdigest())
    if key not in _REF_CACHE:  # the oracle works in 100-digit decimals: once per (procedure, logits)
        _REF_CACHE[key] = references.probabilities_reference(op.procedure, logits)
        _REF_CACHE[key].setflags(write=False)
    return _REF_CACHE[key]


_REF_CACHE: dict = {}


def window_powers(q: np.ndarray, n_tokens: int, length: int) -> np.ndarray:
    """[N^L, N^L] L-step law between full windows by the product formula, from next-token laws ``q``:

        P^L(x, y) = prod_{i=0}^{L-1} q(y_{i+1} | (x_{i+1..L}, y_1..y_i)),

    written with the windows' base-N indices (oldest token most significant): after i steps from x towards
    y the window is (x N^i + y div N^(L-i)) mod N^L and the next token is (y div N^(L-i-1)) mod N. No matrix
    product and no engine push: an independent computation of what ``full_powers(op, L)`` returns.
    """
    N, L = n_tokens, length
    nf = N**L
    x = np.arange(nf, dtype=np.int64)[:, None]
    y = np.arange(nf, dtype=np.int64)[None, :]
    P = np.ones((nf, nf))
    for i in range(L):
        state = (x * N**i + y // N ** (L - i)) % nf  # [nf, nf]
        token = (y // N ** (L - i - 1)) % N  # [1, nf]
        P *= q[state, np.broadcast_to(token, state.shape)]
    return P


def spectral_radius(Q: np.ndarray) -> float:
    if Q.size == 0:
        return 0.0
    return float(np.max(np.abs(np.linalg.eigvals(Q))))


# --------------------------------------------------------------------------- hypothesis
def least(*values: float) -> float:
    """The smallest value, NaN if any is NaN (Python's ``min`` keeps or drops a NaN depending on the order)."""
    vals = [float(v) for v in values]
    return math.nan if any(math.isnan(v) for v in vals) else min(vals)


class SearchError(RuntimeError):
    """A check raised inside a counterexample search: the search is broken, not "no violation found"."""


def is_violation(slack: float, tol: float = 0.0) -> bool:
    """slack < -tol, or slack is NaN (a NaN margin means the inequality could not be evaluated)."""
    slack = float(slack)
    return math.isnan(slack) or slack < -tol


def search(strategy, check: Callable[[Any], float], *, tracker: Tracker, label: Callable[[Any], str],
           to_json: Callable[[Any], dict], size: Callable[[Any], float], max_examples: int, seed: int,
           tol: float = 0.0):
    """Look for an example with slack < -tol (or NaN) with ``hypothesis.find`` (which then shrinks it).

    ``check(example) -> slack``. Every evaluated example (generation and shrinking)
    counts as a case in ``tracker``; a violation found by hypothesis is the
    smallest one hypothesis could shrink to and replaces any larger violation.
    Returns the shrunk example or None.

    An exception raised by ``check`` is an error of the validation: it is raised
    again as :class:`SearchError` naming the (shrunk) example, so the runner
    reports the proposition as "error", never as "no violation found".
    """
    from hypothesis import HealthCheck, Phase, find, settings  # the test extra; only searches need it
    from hypothesis.errors import NoSuchExample

    def condition(x) -> bool:
        try:
            slack = float(check(x))
        except Exception as e:
            raise SearchError(f"check raised on a generated example {label(x)}: {type(e).__name__}: {e}") from e
        tracker.cases += 1
        if slack < tracker.worst or (math.isnan(slack) and not math.isnan(tracker.worst)):
            tracker.worst, tracker.worst_case = slack, "hypothesis: " + label(x)
        return is_violation(slack, tol)

    cfg = settings(max_examples=max_examples, database=None, deadline=None,
                   suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    try:
        found = find(strategy, condition, settings=cfg, random=Random(seed))
    except NoSuchExample:
        return None
    slack = float(check(found))
    tracker.violation = {"case": "hypothesis (shrunk): " + label(found), "slack": slack, **to_json(found)}
    tracker.violation_size = size(found)
    return found

"""Sampling procedures: maps from next-token logits to the distribution drawn from.

A procedure turns the model's logits z in R^N (float32 from the model, promoted
to float64 here) into probabilities q in [0, 1]^N. The exact operator and the
Monte Carlo sampler call the *same* :meth:`Procedure.probabilities`, so the two
paths cannot disagree on what a procedure means.

Definitions (applied in this order; each stage renormalises):

1. ``temperature(t)``, t > 0:   q = softmax(z / t).
2. ``top_k(k)``, 1 <= k <= N:   keep the k tokens with the largest logits.
3. ``top_p(p)``, 0 < p <= 1:    sort q descending; keep the shortest prefix
   whose mass reaches p (a token is kept iff the mass strictly before it is < p).
4. ``min_p(p)``, 0 < p <= 1:    keep the tokens with q_y >= p * max_y q_y.

``greedy()`` puts all mass on argmax z. **Ties** (equal logits at a truncation
boundary, or several maximisers for greedy) go to the lowest token id: the sort
used throughout is stable on the token id. A logit of -inf is probability 0;
such tokens are never kept by a truncation.

**Exact support.** Whether a token can be drawn is decided from the logits,
never from a float64 probability (which underflows below 1e-308 although the
model's probability is positive):

* the logits are shifted by their maximum before the division by t,
  u = (z - max z) / t <= 0, so no temperature overflows (the maximiser has u = 0);
* top-k and greedy compare logits; min-p compares in log space,
  u_y >= log p (q_y / q_max = exp(u_y));
* top-p keeps y iff (1 - p) S_<y < p S_>=y, with S_<y and S_>=y the sums of
  exp(u) over the tokens before y and from y on (in the stage-2 order): both
  are log-sum-exps, so tiny masses neither underflow nor cancel, and
  ``top_p(1)`` keeps every finite token (S_>=y > 0): it is the identity.

The jitted map decides in float64 with these log-space comparisons;
:func:`exact_log_probabilities` (the operator build) re-decides every
comparison that float64 cannot settle (within a rounding margin of the
boundary) in exact decimal arithmetic, so the operator's support is the exact
one. The float64 **log-probabilities** log q_y = u_y - log sum_kept exp(u)
are finite exactly on the support (an error is raised if a logit gap / t
overflows float64, which only absurd temperatures reach); probabilities are
their exponentials and may underflow to 0 where the log-probability is below
-745: the support, not the zero, says the transition is possible.

Procedures are immutable, hashable (so they can be static arguments of jitted
functions) and composable: ``temperature(0.8) | top_k(3)``. A short text spec
round-trips: ``parse("temperature=0.8,top_k=3").spec == "temperature=0.8,top_k=3"``.
"""

from __future__ import annotations

import decimal
import functools
import math
from dataclasses import dataclass, fields, replace

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InvalidProcedureError

__all__ = [
    "Procedure",
    "temperature",
    "greedy",
    "top_k",
    "top_p",
    "min_p",
    "compose",
    "parse",
    "exact_log_probabilities",
    "compiled_map",
    "AMBIGUOUS",
]

#: a top-p / min-p comparison closer than this (in log units) to its boundary is re-decided exactly
AMBIGUOUS = 1e-9
_DIGITS = 80  # decimal precision of the exact re-decision


@dataclass(frozen=True)
class Procedure:
    """A sampling procedure; build it with the factory functions of this module.

    Attributes:
      temperature: divisor of the logits (1.0 = the model's own distribution).
      top_k: keep this many most likely tokens (None = no top-k stage).
      top_p: nucleus mass (None = no top-p stage).
      min_p: relative probability floor (None = no min-p stage).
      greedy: deterministic argmax decoding (the other stages do not change
        the argmax, so they are ignored when this is set).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    greedy: bool = False

    def __post_init__(self):
        t = self.temperature
        if not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise InvalidProcedureError(f"temperature must be a finite number > 0, got {t!r}; use greedy() for t -> 0")
        if self.top_k is not None and (int(self.top_k) != self.top_k or self.top_k < 1):
            raise InvalidProcedureError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        for name in ("top_p", "min_p"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not (0.0 < v <= 1.0)):
                raise InvalidProcedureError(f"{name} must lie in (0, 1], got {v!r}")

    # ------------------------------------------------------------- algebra
    def __or__(self, other: "Procedure") -> "Procedure":
        return compose(self, other)

    def validate_for(self, n_tokens: int) -> "Procedure":
        """Check the parameters that depend on the alphabet size; returns self."""
        if self.top_k is not None and self.top_k > n_tokens:
            raise InvalidProcedureError(
                f"top_k={self.top_k} exceeds the alphabet size N={n_tokens}; choose 1 <= k <= {n_tokens}"
            )
        return self

    @property
    def is_deterministic(self) -> bool:
        """True for greedy decoding and for top_k=1 (both pick the argmax)."""
        return self.greedy or self.top_k == 1

    @property
    def spec(self) -> str:
        """Canonical short text form, parsed back by :func:`parse`."""
        if self.greedy:
            return "greedy"
        parts = []
        if self.temperature != 1.0:
            parts.append(f"temperature={_fmt(self.temperature)}")
        for name in ("top_k", "top_p", "min_p"):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name}={_fmt(v)}" if isinstance(v, float) else f"{name}={v}")
        return ",".join(parts) if parts else "temperature=1"

    def __str__(self) -> str:
        return self.spec

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ------------------------------------------------------------ the map
    def keep_mask(self, logits) -> tuple[jax.Array, jax.Array]:
        """(keep bool[..., N], margin float64[..., N]) from logits [..., N] (jit/vmap safe).

        ``keep`` is the support decided in float64 log space (see the module docstring);
        ``margin`` is, per token, how far its deciding top-p / min-p comparison is from its
        boundary (in log units; +inf where no such comparison decided it).
        :func:`exact_log_probabilities` re-decides the tokens whose margin is within rounding.
        """
        z = jnp.asarray(logits).astype(jnp.float64)  # [..., N]
        n = z.shape[-1]
        if self.greedy:
            keep = jax.nn.one_hot(jnp.argmax(z, axis=-1), n, dtype=jnp.bool_)  # [..., N]
            return keep, jnp.full(z.shape, jnp.inf)
        u = _shifted(z, self.temperature)  # [..., N] <= 0, -inf for impossible tokens
        order = jnp.argsort(-z, axis=-1, stable=True)  # [..., N] stable: ties keep increasing token id
        rank = jnp.argsort(order, axis=-1)  # [..., N] position of each token in `order`
        keep = jnp.isfinite(z)
        if self.top_k is not None:
            keep = keep & (rank < self.top_k)
        margin = jnp.full(z.shape, jnp.inf)
        if self.top_p is not None and self.top_p < 1.0:
            us = jnp.where(jnp.take_along_axis(keep, order, axis=-1), jnp.take_along_axis(u, order, axis=-1),
                           -jnp.inf)  # [..., N] descending, dropped tokens -inf
            before = _log_cumsum_exp_exclusive(us)  # [..., N] log S_<y
            after = _log_cumsum_exp_exclusive(us[..., ::-1])[..., ::-1]  # log S_>y
            after = jnp.logaddexp(after, us)  # log S_>=y
            lhs = jnp.log1p(-self.top_p) + before
            rhs = jnp.log(self.top_p) + after
            keep_sorted = lhs < rhs
            gap = jnp.where(jnp.isfinite(us), rhs - lhs, jnp.inf)
            keep = keep & jnp.take_along_axis(keep_sorted, rank, axis=-1)
            margin = jnp.minimum(margin, jnp.abs(jnp.take_along_axis(gap, rank, axis=-1)))
        if self.min_p is not None and self.min_p < 1.0:
            lp = math.log(self.min_p)
            keep = keep & (u >= lp)
            margin = jnp.minimum(margin, jnp.where(jnp.isfinite(u), jnp.abs(u - lp), jnp.inf))
        elif self.min_p == 1.0:
            keep = keep & (u >= 0.0)
        return keep, margin

    def log_probabilities(self, logits) -> jax.Array:
        """float64 log q [..., N] from logits [..., N]: -inf exactly off the support (jit/vmap safe)."""
        z = jnp.asarray(logits).astype(jnp.float64)  # [..., N]
        keep, _ = self.keep_mask(z)
        if self.greedy:
            return jnp.where(keep, 0.0, -jnp.inf)
        return _masked_log_softmax(_shifted(z, self.temperature), keep)

    def probabilities(self, logits) -> jax.Array:
        """float64 probabilities [..., N] from logits [..., N]: exp of :meth:`log_probabilities` (jit/vmap safe)."""
        return jnp.exp(self.log_probabilities(logits))


def _shifted(z: jax.Array, t: float) -> jax.Array:
    """(z - max z) / t: <= 0, the maximiser at 0, -inf for impossible tokens; never +inf."""
    m = jnp.max(z, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return (z - m) / t


def _log_cumsum_exp_exclusive(x: jax.Array) -> jax.Array:
    """log sum_{j < i} exp(x_j) along the last axis (-inf for i = 0), without underflow."""
    inclusive = jax.lax.cumlogsumexp(x, axis=x.ndim - 1)
    return jnp.concatenate([jnp.full(x.shape[:-1] + (1,), -jnp.inf), inclusive[..., :-1]], axis=-1)


def _masked_log_softmax(u: jax.Array, keep: jax.Array) -> jax.Array:
    """log softmax of u restricted to ``keep`` (float64), -inf elsewhere."""
    um = jnp.where(keep, u, -jnp.inf)
    m = jnp.max(um, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    lse = m + jnp.log(jnp.sum(jnp.where(keep, jnp.exp(um - m), 0.0), axis=-1, keepdims=True))
    return jnp.where(keep, um - lse, -jnp.inf)


def _fmt(v: float) -> str:
    """Short text of a float that parses back to the same float (``:g`` when it is exact, else repr)."""
    short = f"{v:g}"
    return short if float(short) == v else repr(float(v))


# ------------------------------------------------------------------ factories
def _real(name: str, value) -> float:
    """``value`` as a float, or InvalidProcedureError naming the parameter (not a bare TypeError/ValueError)."""
    if isinstance(value, bool):
        raise InvalidProcedureError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidProcedureError(f"{name} must be a number, got {value!r}") from None


def temperature(t: float) -> Procedure:
    """Softmax of logits / t."""
    return Procedure(temperature=_real("temperature", t))


def greedy() -> Procedure:
    """Argmax decoding (ties to the lowest token id)."""
    return Procedure(greedy=True)


def top_k(k: int) -> Procedure:
    """Keep the k most likely tokens."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidProcedureError(f"top_k must be an integer, got {k!r}")
    return Procedure(top_k=int(k))


def top_p(p: float) -> Procedure:
    """Nucleus sampling: keep the smallest most-likely set of mass >= p."""
    return Procedure(top_p=_real("top_p", p))


def min_p(p: float) -> Procedure:
    """Keep tokens whose probability is at least p times the largest."""
    return Procedure(min_p=_real("min_p", p))


def compose(*procedures: Procedure) -> Procedure:
    """One procedure with every stage of ``procedures`` (each stage set at most once).

    The stages always run in the fixed order temperature -> top-k -> top-p ->
    min-p, whatever the order of the arguments.
    """
    default = Procedure()
    merged: dict = {}
    for proc in procedures:
        if not isinstance(proc, Procedure):
            raise InvalidProcedureError(f"compose() takes Procedure objects, got {type(proc).__name__}")
        for f in fields(proc):
            v = getattr(proc, f.name)
            if v != getattr(default, f.name):
                if f.name in merged and merged[f.name] != v:
                    raise InvalidProcedureError(f"{f.name} is set twice ({merged[f.name]} and {v}) in compose()")
                merged[f.name] = v
    return replace(default, **merged)


_ALIASES = {
    "temperature": "temperature", "t": "temperature", "temp": "temperature",
    "top_k": "top_k", "k": "top_k", "topk": "top_k",
    "top_p": "top_p", "p": "top_p", "topp": "top_p",
    "min_p": "min_p", "minp": "min_p",
}


def parse(spec: str | Procedure) -> Procedure:
    """Parse a short spec: ``"temperature=0.8,top_k=3"``, ``"greedy"``, ``"top_p=0.9"``.

    Keys: temperature (t), top_k (k), top_p (p), min_p; the word ``greedy``, which
    stands alone (combined with another key it raises InvalidProcedureError:
    greedy decoding would ignore that key).
    """
    if isinstance(spec, Procedure):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidProcedureError(
            f"empty procedure spec {spec!r}; write e.g. 'temperature=0.8,top_k=3' or 'greedy'"
        )
    parts = []
    for item in spec.replace(" ", "").split(","):
        if not item:
            continue
        if item == "greedy":
            parts.append(greedy())
            continue
        key, sep, value = item.partition("=")
        if not sep or key.lower() not in _ALIASES:
            raise InvalidProcedureError(
                f"cannot parse {item!r} in procedure spec {spec!r}; keys are temperature, top_k, top_p, min_p "
                f"(as key=value, comma separated) or the word greedy"
            )
        name = _ALIASES[key.lower()]
        try:
            if name == "top_k":
                num = float(value)
                if not num.is_integer():
                    raise ValueError
                parts.append(top_k(int(num)))
            else:
                parts.append({"temperature": temperature, "top_p": top_p, "min_p": min_p}[name](float(value)))
        except ValueError:
            raise InvalidProcedureError(f"bad value {value!r} for {name} in procedure spec {spec!r}") from None
    if any(p.greedy for p in parts) and not all(p.greedy for p in parts):  # greedy ignores every other stage: refuse, never drop
        raise InvalidProcedureError(
            f"procedure spec {spec!r} combines greedy with other stages, which greedy decoding ignores "
            f"(argmax of the logits); write 'greedy' alone, or drop 'greedy' to sample with those settings"
        )
    return compose(*parts)


# ------------------------------------------------------------ exact support
def exact_log_probabilities(procedure: Procedure, logits: np.ndarray, batch: int = 65536,
                            fn=None) -> np.ndarray:
    """float64 log q [R, N] for a logit table [R, N], with every support decision exact.

    The table is mapped in chunks by the jitted :meth:`Procedure.keep_mask` /
    :meth:`Procedure.log_probabilities` (``fn``: a compiled ``z -> (log q, margin)``, made here
    when not given). Rows holding a top-p or min-p comparison within :data:`AMBIGUOUS` of its
    boundary are re-decided in exact decimal arithmetic (each distinct such row once; the
    float32 logits, t and p are exact decimals, exp and log are evaluated to 80 digits), and
    their log-probabilities recomputed on the exact support. Raises InvalidProcedureError if a
    possible token's log-probability overflows float64 (a logit gap / t beyond 1.8e308).
    """
    logits = np.asarray(logits)
    fn = fn if fn is not None else compiled_map(procedure)
    out = np.empty(logits.shape, dtype=np.float64)
    for start in range(0, logits.shape[0], batch):
        chunk = logits[start:start + batch]
        logq, margin, keep = (np.asarray(a) for a in fn(jnp.asarray(chunk)))
        rows = np.flatnonzero((margin <= AMBIGUOUS).any(axis=-1))
        if rows.size:
            uniq, inverse = np.unique(np.asarray(chunk[rows], dtype=np.float64), axis=0, return_inverse=True)
            exact = np.stack([_exact_keep(procedure, z) for z in uniq])
            # the jitted map's own formula on the exact support (greedy never has an ambiguous margin)
            fixed = np.asarray(_masked_log_softmax(_shifted(jnp.asarray(uniq), procedure.temperature),
                                                   jnp.asarray(exact)))
            inverse = np.asarray(inverse).reshape(-1)
            logq, keep = logq.copy(), keep.copy()
            logq[rows], keep[rows] = fixed[inverse], exact[inverse]
        overflow = keep & ~np.isfinite(logq)
        if overflow.any():
            r = start + int(np.argwhere(overflow)[0, 0])
            raise InvalidProcedureError(
                f"temperature={procedure.temperature!r} is too small for these logits: a possible token's "
                f"log-probability (logit gap / t) overflows float64 in row {r}; use a larger temperature, "
                f"greedy(), or semio_jax.zero_temperature_limit")
        out[start:start + chunk.shape[0]] = logq
    return out


@functools.lru_cache(maxsize=256)
def compiled_map(procedure: Procedure):
    """One compiled ``z -> (log q, margin, keep)`` per procedure (procedures are hashable and immutable)."""
    def both(z):
        keep, margin = procedure.keep_mask(z)
        return procedure.log_probabilities(z), margin, keep

    return jax.jit(both)


def _exact_keep(procedure: Procedure, z: np.ndarray) -> np.ndarray:
    """bool [N]: the support of one row decided in exact decimal arithmetic (see the module docstring)."""
    n = z.size
    keep = np.isfinite(z)
    if procedure.greedy:
        out = np.zeros(n, dtype=bool)
        out[int(np.argmax(z))] = True
        return out
    order = sorted(range(n), key=lambda y: (-z[y], y))  # stable on the token id
    if procedure.top_k is not None:
        rank = {y: r for r, y in enumerate(order)}
        keep &= np.array([rank[y] < procedure.top_k for y in range(n)])
    with decimal.localcontext() as ctx:
        ctx.prec = _DIGITS
        zmax = decimal.Decimal(float(np.max(z[np.isfinite(z)])))
        t = decimal.Decimal(float(procedure.temperature))
        w = {y: ((decimal.Decimal(float(z[y])) - zmax) / t).exp() for y in range(n) if keep[y]}
        if procedure.top_p is not None and procedure.top_p < 1.0:
            p = decimal.Decimal(float(procedure.top_p))
            kept = [y for y in order if keep[y]]
            total = sum(w[y] for y in kept)
            before = decimal.Decimal(0)
            for y in kept:
                if not before < p * total:  # the mass strictly before y is not below p
                    keep[y] = False
                before += w[y]
        if procedure.min_p is not None:
            p = decimal.Decimal(float(procedure.min_p))
            top = max(w[y] for y in range(n) if keep[y])
            for y in range(n):
                if keep[y] and not w[y] >= p * top:
                    keep[y] = False
    return keep

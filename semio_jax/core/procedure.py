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
such tokens are never kept by a truncation. The top-p decision is made in
float64 on the stage-2 probabilities.

Procedures are immutable, hashable (so they can be static arguments of jitted
functions) and composable: ``temperature(0.8) | top_k(3)``. A short text spec
round-trips: ``parse("temperature=0.8,top_k=3").spec == "temperature=0.8,top_k=3"``.
"""

from __future__ import annotations

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
]


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
    def probabilities(self, logits) -> jax.Array:
        """float64 probabilities [..., N] from logits [..., N] (jit/vmap safe)."""
        z = jnp.asarray(logits).astype(jnp.float64)  # [..., N]
        n = z.shape[-1]
        if self.greedy:
            return jax.nn.one_hot(jnp.argmax(z, axis=-1), n, dtype=jnp.float64)  # [..., N]
        z = z / self.temperature
        # Stable descending order: equal logits keep increasing token id.
        order = jnp.argsort(-z, axis=-1, stable=True)  # [..., N]
        rank = jnp.argsort(order, axis=-1)  # [..., N] position of each token in `order`
        keep = jnp.isfinite(z)  # -inf never kept
        if self.top_k is not None:
            keep = keep & (rank < self.top_k)
        q = _masked_softmax(z, keep)  # [..., N]
        if self.top_p is not None:
            q_sorted = jnp.take_along_axis(q, order, axis=-1)  # [..., N] descending
            csum = jnp.cumsum(q_sorted, axis=-1)  # [..., N]
            before = jnp.concatenate([jnp.zeros_like(csum[..., :1]), csum[..., :-1]], axis=-1)  # mass strictly before
            keep_sorted = before < self.top_p
            keep = keep & jnp.take_along_axis(keep_sorted, rank, axis=-1)
            q = _masked_softmax(z, keep)
        if self.min_p is not None:
            keep = keep & (q >= self.min_p * jnp.max(q, axis=-1, keepdims=True))
            q = _masked_softmax(z, keep)
        return q

    def log_probabilities(self, logits) -> jax.Array:
        """log of :meth:`probabilities` (-inf where the probability is 0)."""
        return jnp.log(self.probabilities(logits))


def _fmt(v: float) -> str:
    """Short text of a float that parses back to the same float (``:g`` when it is exact, else repr)."""
    short = f"{v:g}"
    return short if float(short) == v else repr(float(v))


def _masked_softmax(z: jax.Array, keep: jax.Array) -> jax.Array:
    """softmax of z restricted to `keep` (float64), zero elsewhere."""
    zm = jnp.where(keep, z, -jnp.inf)
    m = jnp.max(zm, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    e = jnp.where(keep, jnp.exp(zm - m), 0.0)
    return e / jnp.sum(e, axis=-1, keepdims=True)


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

"""Per-operator memoisation of analyses.

An :class:`~semio_jax.core.operator.Operator` is immutable (its table is read-only),
so an analysis computed once can be reused by every later analysis of the same
object: classes feed stationary distributions, which feed basins, and so on.
Results are stored on the operator in a private dict keyed by analysis name
and keyword arguments.
"""

from __future__ import annotations

import functools


def cached_analysis(name: str):
    """Decorator: memoise ``fn(op, **kwargs)`` on ``op`` (kwargs must be hashable)."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(op, **kwargs):
            cache = op.__dict__.setdefault("_analysis_cache", {})
            key = (name, tuple(sorted(kwargs.items())))
            if key not in cache:
                cache[key] = fn(op, **kwargs)
            return cache[key]

        return inner

    return wrap

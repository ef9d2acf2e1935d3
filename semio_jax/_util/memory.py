"""The memory budget: how much this process may allocate, and refusing up front what would not fit.

Every large allocation in semio_jax (the operator's tables, dense views of
results, Krylov bases) is checked here *before* the work starts, so an
over-large request fails with a :class:`~semio_jax.errors.StateSpaceTooLargeError`
that names the bytes needed and the budget, never with an out-of-memory kill
halfway through. Budgets are fractions of ``available_memory()``:
80% for an operator build (:func:`check_fits`), 50% for a derived dense view
(:func:`refuse_if_over`).

Counting convention (:func:`estimate_memory`): per state and token, the
float64 probability table (8 bytes), the float64 log-probabilities that carry
the exact support (8 bytes), the model's float32 logits when kept (4 bytes); plus
15 vectors of 8 bytes per state for the analyses: a certified Krylov solve peaks at 12
(BiCGSTAB's six, its right-hand side, the greedy factor's two, pi and the row sums;
tests/test_krylov.py measures it) beside the class structure's three int64 vectors.
Successors are arithmetic and never stored.

Freed memory: a large build frees many temporaries (the model's batches, the
procedure's chunks), and glibc keeps freed heap pages mapped, so the process's
resident size stays far above what it holds (at 1.4 million states of N=4, 112 MiB
above, 2.6 probability tables). :func:`release_free_memory` hands them back
(``malloc_trim``); the build calls it before returning the operator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

from ..errors import StateSpaceTooLargeError

__all__ = ["available_memory", "estimate_memory", "refuse_if_over", "check_fits", "fmt_bytes", "num_states",
           "release_free_memory"]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system (glibc's malloc_trim(0)).

    Nothing that is held is touched: only pages of freed blocks are released, so the
    resident size drops to about what the process holds. Costs a walk over the heap
    (milliseconds). False where the C library has no malloc_trim (not glibc).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable, else total physical)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def fmt_bytes(b: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} PiB"


def num_states(n_tokens: int, length: int, prefixes: bool) -> int:
    """|S| = N^L, plus N + N^2 + ... + N^(L-1) with the prefix states."""
    return sum(n_tokens**k for k in range(1, length + 1)) if prefixes else n_tokens**length


def estimate_memory(space, keep_logits: bool = True) -> dict:
    """Bytes the operator of ``space`` needs, itemised (see the module docstring)."""
    s, n = space.num_states, space.n_tokens
    items = {
        "probs (float64)": 8 * s * n,
        "log-probs (float64)": 8 * s * n,
        "logits (float32)": 4 * s * n if keep_logits else 0,
        "work vectors": 15 * 8 * s,
    }
    items["total"] = sum(items.values())
    return items


def refuse_if_over(need: int, what: str, hint: str, memory_limit: int | None = None) -> None:
    """Raise StateSpaceTooLargeError if ``need`` bytes (for ``what``) exceed half the available memory.

    For the dense views of analysis results: they are derived from compact storage, so the
    message says what to use instead (``hint``).
    """
    limit = int(memory_limit) if memory_limit is not None else int(0.5 * available_memory())
    if need > limit:
        raise StateSpaceTooLargeError(
            f"{what} needs {fmt_bytes(need)}, over the budget of {fmt_bytes(limit)} (half the available "
            f"memory); {hint}")


def check_fits(space, memory_limit: int | None = None, keep_logits: bool = True) -> None:
    """Raise StateSpaceTooLargeError if the operator of ``space`` would not fit (80% of available memory)."""
    need = estimate_memory(space, keep_logits)
    limit = int(memory_limit) if memory_limit is not None else int(0.8 * available_memory())
    if need["total"] > limit:
        per_state = need["total"] / space.num_states
        fits = int(limit // per_state)
        n = space.n_tokens
        max_len = 1
        while num_states(n, max_len + 1, space.prefixes) <= fits and max_len < 64:
            max_len += 1
        raise StateSpaceTooLargeError(
            f"the operator on {space!r} needs about {fmt_bytes(need['total'])} "
            f"({', '.join(f'{k}: {fmt_bytes(v)}' for k, v in need.items() if k != 'total' and v)}), "
            f"but the memory budget is {fmt_bytes(limit)}. About {fits:,} states fit "
            f"(with N={n}: context length L <= {max_len}); reduce L or N, or raise memory_limit"
        )

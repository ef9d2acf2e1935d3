"""XLA's persistent compilation cache for the CLI and long scripts: compiled programs kept on disk."""

from __future__ import annotations

import os

import jax

__all__ = ["enable_compilation_cache"]


def enable_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk so a second run skips compilation.

    The folder is $SEMIO_JAX_CACHE or ~/.cache/semio_jax/xla; set SEMIO_JAX_CACHE=off to disable.
    """
    where = os.environ.get("SEMIO_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "semio_jax", "xla"))
    if where.lower() in ("off", "0", "none", ""):
        return
    try:
        os.makedirs(where, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", where)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    except (OSError, AttributeError):
        pass  # an unwritable home or an older jax: run without the cache

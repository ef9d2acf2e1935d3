"""Progress bars for long builds and solves: tqdm when enabled, a no-op otherwise."""

from __future__ import annotations

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


class _Null:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, desc: str = "evaluating states", unit: str = "state"):
    """A tqdm bar over ``total`` items when ``enabled``, else an object whose update/close do nothing."""
    if enabled:
        return tqdm(total=total, desc=desc, unit=unit)
    return _Null()

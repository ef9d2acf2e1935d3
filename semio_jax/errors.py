"""The named errors of semio_jax.

Every error the engine raises on purpose is a subclass of :class:`SemioError`
and of the built-in exception a Python user would expect (``ValueError`` for a
bad value, ``MemoryError`` for a state space that does not fit, ...), so both
``except sj.SemioError`` and ``except ValueError`` catch it.

Conventions:
  * errors are raised *before* expensive work wherever the problem can be seen
    from the inputs alone (sizes, parameters, shapes, hashes);
  * every message says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "SemioError",
    "InvalidProcedureError",
    "StateSpaceTooLargeError",
    "LogitsError",
    "NonFiniteLogitsError",
    "LogitsShapeError",
    "SpaceMismatchError",
    "NotStochasticError",
    "UnknownTokenError",
    "PromptError",
    "CheckpointError",
    "ChecksumMismatchError",
    "ArchitectureMismatchError",
    "UnknownModelError",
    "ReportWriteError",
    "ConvergenceError",
    "ResumeError",
    "PropertyError",
    "MissingDependencyError",
    "PrefixContextError",
    "UnrepresentableWarning",
    "DataError",
]


class SemioError(Exception):
    """Base class of every error semio_jax raises on purpose."""


class InvalidProcedureError(SemioError, ValueError):
    """A sampling procedure with an invalid parameter or an unparsable spec."""


class StateSpaceTooLargeError(SemioError, MemoryError):
    """The requested state space (or its operator) does not fit in the memory budget."""


class LogitsError(SemioError, ValueError):
    """The model returned logits that cannot define a transition rule."""


class NonFiniteLogitsError(LogitsError):
    """NaN or +inf logits, or a row whose logits are all -inf."""


class LogitsShapeError(LogitsError):
    """Logits of the wrong shape (batch size or alphabet size)."""


class SpaceMismatchError(LogitsShapeError):
    """A state space that does not fit the model: another alphabet size N, or L beyond the model's context."""


class NotStochasticError(SemioError, ValueError):
    """A probability table whose rows are not probability distributions."""


class UnknownTokenError(SemioError, ValueError):
    """A token id outside the alphabet {0, ..., N-1}."""


class PromptError(SemioError, ValueError):
    """A prompt that is not a state of the space (empty, or longer than L)."""


class CheckpointError(SemioError, ValueError):
    """A checkpoint that cannot be loaded: missing, truncated or damaged files."""


class ChecksumMismatchError(CheckpointError):
    """The weights' SHA-256 differs from the one recorded in the model card."""


class ArchitectureMismatchError(CheckpointError):
    """The weights do not fit the architecture described by the model card."""


class UnknownModelError(SemioError, LookupError):
    """A model name that is neither a folder nor a zoo entry."""


class ReportWriteError(SemioError, OSError):
    """A report or checkpoint folder that cannot be written."""


class ConvergenceError(SemioError, RuntimeError):
    """An iterative solver that did not reach its residual target."""


class ResumeError(SemioError, ValueError):
    """A build checkpoint folder that belongs to another build (model, space, method) or is damaged."""


class PropertyError(SemioError, ValueError):
    """A temporal-logic property that Storm cannot parse or check on the exported chain."""


class MissingDependencyError(SemioError, ImportError):
    """An optional dependency (e.g. stormpy) that a command needs is not installed."""


class PrefixContextError(SemioError, ValueError):
    """A model that fails on contexts shorter than L (the prefix states): it needs a space with prefixes=False."""


class UnrepresentableWarning(UserWarning):
    """A result that depends on transitions below the float64 range and could not be computed in the log
    domain (a class larger than the log-domain GTH limit): it is reported, flagged and not certified."""


class DataError(SemioError, ValueError):
    """A training corpus or token file that cannot be used: unreadable, empty, or not the one a card records."""

"""``semio_jax.sampling``: the public name of :mod:`semio_jax.core.procedure` (sampling procedures).

Kept so that ``sj.sampling.top_p(0.5)`` and ``from semio_jax.sampling import top_k``
keep working; the implementation lives in ``semio_jax/core/procedure.py``.
"""

from .core.procedure import *  # noqa: F401,F403
from .core.procedure import __all__  # noqa: F401

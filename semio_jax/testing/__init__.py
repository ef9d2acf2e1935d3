"""Testing utilities for semio_jax: public hypothesis strategies (needs the ``hypothesis`` package)."""

from .strategies import (  # noqa: F401
    OPERATOR_KINDS,
    logit_rows,
    logit_tables,
    ngram_models,
    operators,
    procedures,
    spaces,
    token_permutations,
)
from .strategies import __all__  # noqa: F401

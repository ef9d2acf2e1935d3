"""From a model to its exact Operator: :func:`build_operator`, the one dispatcher.

``build_operator(model, space, procedure)`` checks the memory budget and the
procedure before any model call, evaluates the model on every state of the
space (:mod:`.logits`: plain batches or the shared-prefix walk; :mod:`.checkpointed`:
the same loops with every chunk saved and resumable; :mod:`.sharded`: spread
over a device mesh), applies the procedure in float64 and returns the
:class:`~semio_jax.core.operator.Operator`, after handing the freed temporaries'
pages back to the operating system (:func:`~semio_jax._util.memory.release_free_memory`).
"""

from __future__ import annotations

import os

from .._util.memory import check_fits, release_free_memory
from ..core.model import describe_model
from ..core.operator import Operator
from ..core.procedure import Procedure, parse
from ..core.space import StateSpace
from .checkpointed import default_checkpoint_dir, evaluate_logits_resumable, using_checkpoint_dir
from .logits import DEFAULT_BATCH, evaluate_logits
from .sharded import build_operator_sharded, evaluate_logits_sharded

__all__ = ["build_operator", "evaluate_logits", "evaluate_logits_resumable", "using_checkpoint_dir",
           "build_operator_sharded", "evaluate_logits_sharded"]


def build_operator(model, space: StateSpace, procedure: Procedure | str | None = None, *,
                   batch_size: int = DEFAULT_BATCH, memory_limit: int | None = None,
                   keep_logits: bool = True, progress: bool = False, method: str = "auto",
                   checkpoint_dir: str | os.PathLike | None = None, mesh=None) -> Operator:
    """Evaluate ``model`` on every state of ``space`` and apply ``procedure``.

    Args:
      model: any callable ``contexts int32[B, k] -> logits[B, N]`` (see semio_jax.core.model).
      space: the StateSpace (its N must match the model's alphabet).
      procedure: a Procedure or spec string (default: temperature 1).
      batch_size: contexts per model call (bounds memory).
      memory_limit: bytes the operator may use (default: 80% of available memory).
      keep_logits: keep the float32 logits so ``with_procedure`` needs no model.
      progress: show a progress bar.
      method: how the model is evaluated: "auto", "plain" or "prefix" (see evaluate_logits).
      checkpoint_dir: write the logits chunk by chunk under this folder and resume
        from what an interrupted build left there (bitwise the same result; see
        semio_jax.build.checkpointed). Default: the folder set by ``resume.using_checkpoint_dir``, else none.
      mesh: a ``jax.sharding.Mesh`` (see ``semio_jax.sharding.device_mesh``): spread the
        model calls over its devices (``semio_jax.build.sharded.build_operator_sharded``: the
        shared-prefix walk over the mesh when the model's walk accepts ``mesh=``, else plain;
        no checkpoints). ``batch_size`` is then per device.

    Raises before any model call: StateSpaceTooLargeError if the operator would
    not fit, InvalidProcedureError for bad parameters. During evaluation:
    NonFiniteLogitsError / LogitsShapeError naming the offending context.
    """
    procedure = parse(procedure if procedure is not None else "temperature=1").validate_for(space.n_tokens)
    if mesh is not None:
        if checkpoint_dir is not None:
            raise ValueError("a sharded build (mesh=...) does not write checkpoints; drop checkpoint_dir")
        op = build_operator_sharded(model, space, procedure, mesh=mesh, batch_size=batch_size,
                                    memory_limit=memory_limit, keep_logits=keep_logits, progress=progress,
                                    method=method)
        release_free_memory()  # (the build's freed temporaries stay mapped otherwise; see _util.memory)
        return op
    check_fits(space, memory_limit, keep_logits)
    checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else default_checkpoint_dir()
    if checkpoint_dir is not None:
        logits = evaluate_logits_resumable(model, space, checkpoint_dir, batch_size=batch_size, progress=progress,
                                           method=method)
    else:
        logits = evaluate_logits(model, space, batch_size=batch_size, progress=progress, method=method)
    op = Operator.from_logits(space, procedure, logits, keep_logits=keep_logits, model_info=describe_model(model))
    del logits
    release_free_memory()  # (the build's freed temporaries stay mapped otherwise; see _util.memory)
    return op

"""``semio_jax.sharding``: everything for several devices, gathered under one public name.

* meshes: :func:`device_mesh`, :func:`initialize_distributed` (``semio_jax._util.mesh``);
* the build over a mesh: :func:`build_operator_sharded`, :func:`evaluate_logits_sharded`
  (``semio_jax.build.sharded``; also ``build_operator(..., mesh=mesh)``);
* structured products on a sharded table: :class:`ShardedOperator`, :func:`shard_operator`,
  :func:`sharded_push`, :func:`sharded_pull` (``semio_jax.linalg.sharded``);
* the stationary solve on a mesh: :func:`stationary_sharded`
  (``semio_jax.analysis.stationary``; also ``stationary_result(op, mesh=mesh)``).

See docs/sharding.md.
"""

from ._util.mesh import AXIS, device_mesh, initialize_distributed
from .analysis.stationary import stationary_sharded
from .build.sharded import build_operator_sharded, evaluate_logits_sharded
from .linalg.sharded import ShardedOperator, shard_operator, sharded_pull, sharded_push

__all__ = [
    "AXIS", "device_mesh", "initialize_distributed", "ShardedOperator", "shard_operator", "sharded_push",
    "sharded_pull", "evaluate_logits_sharded", "build_operator_sharded", "stationary_sharded",
]

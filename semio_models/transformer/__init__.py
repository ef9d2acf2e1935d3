"""A tiny causal transformer language model over the alphabet T = {0, ..., N-1}, in Flax linen.

Conventions
-----------
* A *context* is a sequence of k tokens x_0 .. x_{k-1} (oldest first) with
  1 <= k <= L, where L = ``context_length``. Token x_i sits at absolute
  position i: position embeddings are learned, one per position 0 .. L-1, and
  a context shorter than L always starts at position 0.
* ``Transformer`` maps int tokens [B, k] to logits [B, k, N]: the logits at
  position i are the model's next-token scores after reading x_0 .. x_i, and
  depend on no later token (causal attention).
* ``TransformerModel`` is the engine-facing wrapper. It is a plain callable
  ``contexts int[B, k] -> float32 logits [B, N]`` that returns the logits at
  the LAST position, i.e. the scores of the token that follows the context.
* Everything is float32 (parameters, activations, logits), also when
  ``jax_enable_x64`` is on.
* Token ids outside {0 .. N-1} are caught with ``UnknownTokenError`` when the
  contexts are host data (lists / numpy arrays). Inside ``jax.jit`` nothing
  can be checked on values, so an out-of-range id there makes the logits of
  its position and of every later position NaN (earlier positions are
  unaffected), which the engine reports as non-finite logits.

Modules, in reading order
-------------------------
    config.py       TransformerConfig: every number and switch of the architecture
    network.py      the Flax network (the math, and the parameter tree it defines)
    functional.py   the same layers as pure functions of the parameter tree
    prefix_tree.py  the shared-prefix walk (every context of length 1..L, a position each), one or many devices
    kv_cache.py     the key/value-cache decoder the Monte Carlo sampler uses
    wrapper.py      TransformerModel, the engine's model; init_params, param_shapes
"""

from .config import ACTIVATIONS, TransformerConfig
from .kv_cache import decode_step, prefill_cache
from .network import MLP, Block, CausalSelfAttention, Transformer
from .prefix_tree import descend, prefill_kv, tree_step, walk, walk_on_mesh
from .wrapper import TransformerModel, init_params, param_shapes

__all__ = [
    "TransformerConfig", "ACTIVATIONS", "Transformer", "Block", "CausalSelfAttention", "MLP", "TransformerModel",
    "init_params", "param_shapes", "tree_step", "descend", "prefill_kv", "walk", "walk_on_mesh", "decode_step",
    "prefill_cache",
]

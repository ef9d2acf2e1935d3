"""The transformer's configuration: every number and switch that fixes its parameter tree and forward pass.

A ``TransformerConfig`` is frozen and hashable (it keys compiled functions) and
round-trips through JSON (``to_dict`` / ``from_dict``), which is how a model
card stores it. Unknown keys are refused, and keys added after a checkpoint
was written take their defaults, so every shipped checkpoint keeps loading
with the architecture it was trained with.

The defaults are the zoo's architecture; the switches after ``layer_norm_eps``
(activation, bias, tie_embeddings, unembed_bias) exist so that GPT-2-style
checkpoints of other libraries run on this network unchanged (see
semio_models.importers): GPT-2 is ``activation="gelu_tanh", tie_embeddings=True,
unembed_bias=False``; nanoGPT is ``activation="gelu"``, tied, no logit bias,
``bias`` as it was trained. Positions are always learned absolute embeddings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TransformerConfig", "ACTIVATIONS"]

# names of the MLP nonlinearities the network knows (see network.activation)
ACTIVATIONS = ("gelu_tanh", "gelu", "relu")


@dataclass(frozen=True)
class TransformerConfig:
    # N, the alphabet size: tokens are 0 .. N-1
    n_tokens: int
    # L, the longest context the model reads (= the number of learned positions)
    context_length: int
    # number of transformer blocks
    n_layers: int = 2
    # width d of the residual stream
    d_model: int = 32
    # attention heads per block; must divide d_model (each head has width d_model / n_heads)
    n_heads: int = 2
    # hidden width of the MLP; 0 means 4 * d_model
    d_ff: int = 0
    # epsilon of every LayerNorm (GPT-2's is 1e-5)
    layer_norm_eps: float = 1e-5
    # the MLP's nonlinearity: "gelu_tanh" (GPT-2's tanh approximation), "gelu" (exact, erf), or "relu"
    activation: str = "gelu_tanh"
    # biases on every linear layer of the blocks (qkv, out, fc, proj) and on every LayerNorm
    bias: bool = True
    # unembedding = the token embedding transposed (GPT-2, nanoGPT) instead of its own kernel
    tie_embeddings: bool = False
    # a bias added to the logits
    unembed_bias: bool = True

    def __post_init__(self) -> None:
        for name in ("n_tokens", "context_length", "n_layers", "d_model", "n_heads", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"TransformerConfig.{name} must be an int, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.n_tokens < 2:
            raise ValueError(f"TransformerConfig.n_tokens must be >= 2, got {self.n_tokens}")
        for name in ("context_length", "n_layers", "d_model", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"TransformerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_ff < 0:
            raise ValueError(f"TransformerConfig.d_ff must be >= 1 (or 0 for 4*d_model), got {self.d_ff}")
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"TransformerConfig.n_heads={self.n_heads} must divide d_model={self.d_model}"
            )
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
            raise ValueError(f"TransformerConfig.layer_norm_eps must be a float in (0, 1), got {eps!r}")
        object.__setattr__(self, "layer_norm_eps", float(eps))
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"TransformerConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("bias", "tie_embeddings", "unembed_bias"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"TransformerConfig.{name} must be a bool, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; ``from_dict`` reverses it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        """Build a config from a dict, rejecting unknown or missing keys."""
        if not isinstance(d, dict):
            raise ValueError(f"a TransformerConfig dict is expected, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown TransformerConfig key(s) {unknown}; known keys are {sorted(known)}"
            )
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"TransformerConfig dict lacks required key(s) {missing}")
        return cls(**d)

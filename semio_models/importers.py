"""Import GPT-2-architecture checkpoints of other libraries as this project's checkpoints.

    semio import PATH --out DIR [--format huggingface|nanogpt|transformer_lens] [--context-length L]

Three layouts of the same architecture (pre-LayerNorm GPT-2 with learned
absolute positions) are read and mapped onto ``semio_models.transformer``'s
parameter tree; the result is written with ``checkpoint.save`` (msgpack +
card.json, never pickle), so ``checkpoint.load(DIR)`` and every ``semio``
command work on it, and the engine's own JAX network, with its shared-prefix
build, evaluates it.

* **huggingface**: a folder with ``config.json`` (``model_type`` "gpt2") and
  ``model.safetensors``, as ``GPT2LMHeadModel.save_pretrained`` writes it;
  read with the ``safetensors`` package's numpy API, no torch. Conv1D weights
  are stored [in, out], as Flax's kernels. The unembedding is tied unless
  ``tie_word_embeddings`` is false (then ``lm_head.weight`` [N, d] is used); no
  logit bias. The activation is ``activation_function``: "gelu_new" and
  "gelu_pytorch_tanh" -> "gelu_tanh", "gelu" -> exact GELU, "relu".
* **nanogpt**: a ``ckpt.pt`` of nanoGPT's train.py (``{"model": state_dict,
  "model_args": {...}, ...}``). nn.Linear weights are [out, in] and are
  transposed; nanoGPT's MLP uses the exact (erf) GELU, ``bias`` from
  model_args covers the linear layers and LayerNorms, the unembedding is tied
  and has no bias. A ``_orig_mod.`` prefix (torch.compile) is dropped.
* **transformer_lens**: a ``HookedTransformer.state_dict()`` saved with
  ``torch.save`` (``normalization_type="LN"``, standard positions). Shapes
  give the sizes; the state dict does not record the activation, so it is
  ``--activation`` (default "gelu_tanh", TransformerLens's "gelu_new" of
  GPT-2) and the LayerNorm epsilon ``--layer-norm-eps`` (default 1e-5). The
  per-head W_Q/W_K/W_V [H, d, dh] become the fused qkv kernel [d, 3d] (heads
  in order within q, k and v), W_O [H, dh, d] the out kernel; the unembedding
  W_U [d, N] keeps its own weights and the bias b_U.

The torch files are read only through ``torch.load(weights_only=True)`` (no
code runs from the file), and only when torch is installed (the optional extra
``torch``); otherwise the import stops with a MissingDependencyError. Tensors
in float16 or float64 are converted to float32 (the engine's convention);
bfloat16 safetensors need torch and are refused.

``--context-length L`` keeps the first L learned positions of a longer model:
the logits of contexts up to L do not change (causal attention, positions
counted from 0).

Everything that is not GPT-2 is refused with an ArchitectureMismatchError
before any weight is converted (cross-attention, scaled-by-layer or
reordered attention, rotary positions, a head width other than d / heads), and
every tensor of the source must be used: an unknown key is an error, not a
silently dropped weight (registered buffers such as attention masks excepted).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors import safe_open

from semio_jax.errors import ArchitectureMismatchError, CheckpointError, MissingDependencyError

from . import checkpoint
from .transformer import TransformerConfig, TransformerModel, param_shapes

__all__ = ["FORMATS", "detect_format", "read_huggingface", "read_torch", "from_huggingface", "from_nanogpt",
           "from_transformer_lens", "import_model", "import_checkpoint", "register", "run"]

FORMATS = ("huggingface", "nanogpt", "transformer_lens")
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": None,
                  "gelu": "gelu", "relu": "relu"}
TL_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu",
                  "gelu_tanh": "gelu_tanh"}
_INSTALL_HINT = "pip install torch (or, in a checkout, pip install -e '.[torch]')"


# ----------------------------------------------------------------------------- reading files


def detect_format(path: str | os.PathLike) -> str:
    """``huggingface`` for a folder with config.json, else the torch file's layout (needs torch)."""
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return "huggingface"
        raise CheckpointError(f"{str(path)!r} is a folder without config.json: not a Hugging Face model folder")
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{str(path)!r}: give the Hugging Face folder (config.json + model.safetensors)")
    obj = read_torch(path)
    if isinstance(obj, dict) and "model" in obj and "model_args" in obj:
        return "nanogpt"
    if isinstance(obj, dict) and "embed.W_E" in obj:
        return "transformer_lens"
    raise CheckpointError(
        f"{str(path)!r} is neither a nanoGPT checkpoint (a dict with 'model' and 'model_args') nor a "
        "TransformerLens state dict (with 'embed.W_E'); name the format with --format"
    )


def read_huggingface(folder: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as a dict, the tensors of model.safetensors as float32 numpy arrays); no torch."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{str(folder)!r} has no config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {str(folder / 'config.json')!r}: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(folder / 'config.json')!r} is not a JSON object")
    path = folder / "model.safetensors"
    if not path.is_file():
        found = sorted(p.name for p in folder.iterdir())
        raise CheckpointError(f"{str(folder)!r} has no model.safetensors (found {found}); sharded or "
                              "pytorch_model.bin weights are not read: save with safe_serialization=True")
    return config, read_safetensors(path)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file as float32 numpy arrays (safetensors' numpy API)."""
    out = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for key in f.keys():
                out[key] = _float32(f.get_tensor(key), key, path)
    except CheckpointError:
        raise
    except Exception as e:  # the reader raises its own types on damaged or bfloat16 files
        raise CheckpointError(f"cannot read {str(path)!r} as safetensors with numpy (bfloat16 tensors "
                              f"need torch): {e}") from e
    return out


def read_torch(path: str | os.PathLike) -> Any:
    """A torch file loaded with ``torch.load(weights_only=True)``, tensors -> float32 numpy arrays."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f"reading the torch file {str(path)!r} needs torch: {_INSTALL_HINT}") from None
    if not Path(path).is_file():
        raise CheckpointError(f"{str(path)!r} is not a file")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors of several types, refused globals included
        raise CheckpointError(f"cannot load {str(path)!r} with torch.load(weights_only=True): {e}") from e

    def convert(x):
        if isinstance(x, torch.Tensor):
            return x.detach().to(torch.float32).numpy() if x.is_floating_point() else x.detach().numpy()
        if isinstance(x, dict):
            return {k: convert(v) for k, v in x.items()}
        return x

    return convert(obj)


def _float32(a: np.ndarray, key: str, path: Any) -> np.ndarray:
    if a.dtype not in (np.float16, np.float32, np.float64):
        return a  # integer buffers (masks); checked where they are used
    a = np.asarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise CheckpointError(f"tensor {key!r} of {str(path)!r} holds NaN or inf")
    return a


# ----------------------------------------------------------------------------- conversions


def _model(config: TransformerConfig, flat: dict[str, np.ndarray], source: str) -> TransformerModel:
    """The model of ``flat`` ({'a/b/c': array}), checked against ``Transformer(config)``'s tree."""
    want = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(param_shapes(config)).items()}
    if set(want) != set(flat):
        raise CheckpointError(f"{source}: converted parameters {sorted(set(flat) ^ set(want))} do not match "
                              "the network's tree (a bug of the importer, please report it)")
    for key, shape in want.items():
        if tuple(flat[key].shape) != tuple(shape):
            raise ArchitectureMismatchError(f"{source}: parameter {key!r} has shape {tuple(flat[key].shape)}; "
                                            f"the architecture needs {tuple(shape)}")
        if not np.all(np.isfinite(flat[key])):
            raise CheckpointError(f"{source}: parameter {key!r} holds NaN or inf")
    tree = traverse_util.unflatten_dict({tuple(k.split("/")): np.asarray(v, np.float32) for k, v in flat.items()})
    return TransformerModel(config, tree)


class _Take:
    """Pops tensors from a state dict by name; ``rest()`` lists what was never used."""

    def __init__(self, state: dict[str, Any], source: str, ignore: tuple[str, ...] = ()):
        self.state, self.source = dict(state), source
        for key in [k for k in self.state if any(re.fullmatch(p, k) for p in ignore)]:
            del self.state[key]

    def __call__(self, key: str, shape: tuple | None = None) -> np.ndarray:
        if key not in self.state:
            raise CheckpointError(f"{self.source}: the tensor {key!r} is missing")
        a = self.state.pop(key)
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            raise CheckpointError(f"{self.source}: {key!r} is not a floating-point tensor")
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ArchitectureMismatchError(f"{self.source}: {key!r} has shape {tuple(a.shape)}, expected {shape}")
        return a

    def has(self, key: str) -> bool:
        return key in self.state

    def finish(self) -> None:
        if self.state:
            raise ArchitectureMismatchError(f"{self.source}: tensors {sorted(self.state)[:8]} have no place in a "
                                            "GPT-2 network (unknown architecture?)")


def _positions(wpe: np.ndarray, context_length: int | None, source: str) -> np.ndarray:
    if context_length is None:
        return wpe
    if isinstance(context_length, bool) or not isinstance(context_length, int) or \
            not 1 <= context_length <= wpe.shape[0]:
        raise CheckpointError(f"{source}: context_length must be an int in 1..{wpe.shape[0]} (the model's "
                              f"positions), got {context_length!r}")
    return wpe[:context_length]


def _gpt2_blocks(take: _Take, n_layers: int, pre: str, d: int, bias: bool, transpose: bool) -> dict:
    """The blocks of a GPT-2 state dict (HF's Conv1D [in, out], or nanoGPT's nn.Linear [out, in])."""
    flat = {}
    t = (lambda a: a.T) if transpose else (lambda a: a)
    for i in range(n_layers):
        p, q = f"{pre}h.{i}.", f"block_{i}/"
        for ln in ("ln_1", "ln_2"):
            flat[q + ln + "/scale"] = take(p + ln + ".weight", (d,))
            if bias:
                flat[q + ln + "/bias"] = take(p + ln + ".bias", (d,))
        for src, dst in (("attn.c_attn", "attn/qkv"), ("attn.c_proj", "attn/out"), ("mlp.c_fc", "mlp/fc"),
                         ("mlp.c_proj", "mlp/proj")):
            flat[q + dst + "/kernel"] = t(take(p + src + ".weight"))
            if bias:
                flat[q + dst + "/bias"] = take(p + src + ".bias")
    flat["ln_f/scale"] = take(pre + "ln_f.weight", (d,))
    if bias:
        flat["ln_f/bias"] = take(pre + "ln_f.bias", (d,))
    return flat


def from_huggingface(config: dict, state: dict[str, np.ndarray], *, context_length: int | None = None,
                     source: str = "huggingface") -> TransformerModel:
    """A Hugging Face GPT-2 (config.json dict + safetensors tensors) on this project's network."""
    if config.get("model_type") != "gpt2":
        raise ArchitectureMismatchError(f"{source}: model_type {config.get('model_type')!r} is not 'gpt2'")
    for key, ok in (("add_cross_attention", False), ("scale_attn_by_inverse_layer_idx", False),
                    ("reorder_and_upcast_attn", False), ("scale_attn_weights", True)):
        if config.get(key, ok) != ok:
            raise ArchitectureMismatchError(f"{source}: {key}={config[key]!r} is not supported (GPT-2 has {ok})")
    act = config.get("activation_function", "gelu_new")
    if HF_ACTIVATIONS.get(act) is None:
        raise ArchitectureMismatchError(f"{source}: activation_function {act!r} is not supported; known: "
                                        f"{sorted(k for k, v in HF_ACTIVATIONS.items() if v)}")
    try:
        d, n_layers, n_heads = int(config["n_embd"]), int(config["n_layer"]), int(config["n_head"])
        n_tokens = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: config.json lacks a GPT-2 size ({e})") from None
    tied = bool(config.get("tie_word_embeddings", True))
    pre = "transformer." if "transformer.wte.weight" in state else ""
    take = _Take(state, source, ignore=(r"(transformer\.)?h\.\d+\.attn\.(masked_)?bias",))
    wte = take(pre + "wte.weight", (n_tokens, d))
    wpe = _positions(take(pre + "wpe.weight"), context_length, source)
    flat = {"tok_embed": wte, "pos_embed": wpe, **_gpt2_blocks(take, n_layers, pre, d, True, False)}
    if not tied:
        flat["unembed/kernel"] = take("lm_head.weight", (n_tokens, d)).T
    elif take.has("lm_head.weight"):
        if not np.array_equal(take("lm_head.weight"), wte):
            raise CheckpointError(f"{source}: tie_word_embeddings is true but lm_head.weight differs from wte")
    take.finish()
    d_ff = flat["block_0/mlp/fc/kernel"].shape[1]
    if config.get("n_inner") not in (None, d_ff):
        raise ArchitectureMismatchError(f"{source}: n_inner={config['n_inner']} but c_fc has width {d_ff}")
    cfg = _config(source, n_tokens=n_tokens, context_length=wpe.shape[0], n_layers=n_layers, d_model=d,
                  n_heads=n_heads, d_ff=d_ff, layer_norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
                  activation=HF_ACTIVATIONS[act], bias=True, tie_embeddings=tied, unembed_bias=False)
    return _model(cfg, flat, source)


def from_nanogpt(state: dict[str, np.ndarray], model_args: dict, *, context_length: int | None = None,
                 source: str = "nanogpt") -> TransformerModel:
    """A nanoGPT model (its state dict and model_args) on this project's network."""
    try:
        d, n_layers, n_heads = int(model_args["n_embd"]), int(model_args["n_layer"]), int(model_args["n_head"])
        n_tokens, bias = int(model_args["vocab_size"]), bool(model_args.get("bias", True))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: model_args lacks a size ({e})") from None
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    # without flash attention nanoGPT registers its causal mask as the buffer attn.bias (not attn.c_attn.bias)
    take = _Take(state, source, ignore=(r"transformer\.h\.\d+\.attn\.bias",))
    wte = take("transformer.wte.weight", (n_tokens, d))
    wpe = _positions(take("transformer.wpe.weight"), context_length, source)
    flat = {"tok_embed": wte, "pos_embed": wpe, **_gpt2_blocks(take, n_layers, "transformer.", d, bias, True)}
    tied = True
    if take.has("lm_head.weight"):
        head = take("lm_head.weight", (n_tokens, d))
        if not np.array_equal(head, wte):
            tied = False
            flat["unembed/kernel"] = head.T
    take.finish()
    cfg = _config(source, n_tokens=n_tokens, context_length=wpe.shape[0], n_layers=n_layers, d_model=d,
                  n_heads=n_heads, d_ff=flat["block_0/mlp/fc/kernel"].shape[1], layer_norm_eps=1e-5,
                  activation="gelu", bias=bias, tie_embeddings=tied, unembed_bias=False)
    return _model(cfg, flat, source)


def from_transformer_lens(state: dict[str, np.ndarray], *, activation: str = "gelu_tanh",
                          layer_norm_eps: float = 1e-5, context_length: int | None = None,
                          source: str = "transformer_lens") -> TransformerModel:
    """A TransformerLens HookedTransformer state dict (normalization_type='LN') on this project's network."""
    if activation not in TL_ACTIVATIONS:
        raise ArchitectureMismatchError(f"{source}: activation {activation!r} is not supported; known: "
                                        f"{sorted(TL_ACTIVATIONS)}")
    if "blocks.0.ln1.w" not in state and "blocks.0.attn.W_Q" in state:
        raise ArchitectureMismatchError(f"{source}: no LayerNorm weights (ln1.w): folded or absent LayerNorms "
                                        "are not supported; save the model with normalization_type='LN' and "
                                        "fold_ln=False")
    take = _Take(state, source, ignore=(r"blocks\.\d+\.attn\.(IGNORE|mask)",))
    wte = take("embed.W_E")
    n_tokens, d = wte.shape
    wpe = _positions(take("pos_embed.W_pos"), context_length, source)
    n_layers = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if n_layers < 1:
        raise CheckpointError(f"{source}: no blocks.<i> tensors")
    n_heads, _, dh = take.state["blocks.0.attn.W_Q"].shape
    if n_heads * dh != d:
        raise ArchitectureMismatchError(f"{source}: n_heads * d_head = {n_heads} * {dh} != d_model = {d}")
    flat = {"tok_embed": wte, "pos_embed": wpe}
    for i in range(n_layers):
        p, q = f"blocks.{i}.", f"block_{i}/"
        for src, dst in (("ln1", "ln_1"), ("ln2", "ln_2")):
            flat[q + dst + "/scale"] = take(p + src + ".w", (d,))
            flat[q + dst + "/bias"] = take(p + src + ".b", (d,))
        w = [take(p + f"attn.W_{x}", (n_heads, d, dh)).transpose(1, 0, 2).reshape(d, d) for x in "QKV"]
        b = [take(p + f"attn.b_{x}", (n_heads, dh)).reshape(d) for x in "QKV"]
        flat[q + "attn/qkv/kernel"] = np.concatenate(w, axis=1)  # [d, 3d]
        flat[q + "attn/qkv/bias"] = np.concatenate(b)  # [3d]
        flat[q + "attn/out/kernel"] = take(p + "attn.W_O", (n_heads, dh, d)).reshape(d, d)  # [H dh, d]
        flat[q + "attn/out/bias"] = take(p + "attn.b_O", (d,))
        flat[q + "mlp/fc/kernel"] = take(p + "mlp.W_in")
        flat[q + "mlp/fc/bias"] = take(p + "mlp.b_in")
        flat[q + "mlp/proj/kernel"] = take(p + "mlp.W_out")
        flat[q + "mlp/proj/bias"] = take(p + "mlp.b_out", (d,))
    flat["ln_f/scale"] = take("ln_final.w", (d,))
    flat["ln_f/bias"] = take("ln_final.b", (d,))
    flat["unembed/kernel"] = take("unembed.W_U", (d, n_tokens))
    flat["unembed/bias"] = take("unembed.b_U", (n_tokens,))
    take.finish()
    cfg = _config(source, n_tokens=n_tokens, context_length=wpe.shape[0], n_layers=n_layers, d_model=d,
                  n_heads=n_heads, d_ff=flat["block_0/mlp/fc/kernel"].shape[1], layer_norm_eps=layer_norm_eps,
                  activation=TL_ACTIVATIONS[activation], bias=True, tie_embeddings=False, unembed_bias=True)
    return _model(cfg, flat, source)


def _config(source: str, **kwargs) -> TransformerConfig:
    try:
        return TransformerConfig(**kwargs)
    except ValueError as e:
        raise ArchitectureMismatchError(f"{source}: {e}") from None


# ----------------------------------------------------------------------------- whole imports


def import_model(path: str | os.PathLike, *, format: str | None = None, context_length: int | None = None,
                 activation: str = "gelu_tanh", layer_norm_eps: float = 1e-5) -> tuple[TransformerModel, dict]:
    """Read and convert ``path``; return (model, provenance for the card)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{str(path)!r} does not exist")
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    fmt = format or detect_format(path)
    source = f"{fmt} checkpoint {str(path)!r}"
    info: dict[str, Any] = {"format": fmt, "path": path.name}
    if fmt == "huggingface":
        config, state = read_huggingface(path)
        model = from_huggingface(config, state, context_length=context_length, source=source)
        info["files"] = {name: checkpoint.sha256_hex((path / name).read_bytes())
                         for name in ("config.json", "model.safetensors")}
        info["source_config"] = config
        return model, info
    obj = read_torch(path)
    info["files"] = {path.name: checkpoint.sha256_hex(path.read_bytes())}
    if fmt == "nanogpt":
        if not (isinstance(obj, dict) and isinstance(obj.get("model"), dict) and isinstance(obj.get("model_args"), dict)):
            raise CheckpointError(f"{source}: a nanoGPT checkpoint is a dict with 'model' and 'model_args'")
        info["source_config"] = {k: v for k, v in obj["model_args"].items() if isinstance(v, (int, float, bool, str))}
        return from_nanogpt(obj["model"], obj["model_args"], context_length=context_length, source=source), info
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: a TransformerLens state dict is a dict of tensors")
    info["source_config"] = {"act_fn": activation, "eps": layer_norm_eps}
    return from_transformer_lens(obj, activation=activation, layer_norm_eps=layer_norm_eps,
                                 context_length=context_length, source=source), info


def import_checkpoint(path: str | os.PathLike, out: str | os.PathLike, *, name: str | None = None,
                      command: str | None = None, **kwargs) -> Path:
    """``import_model`` then ``checkpoint.save`` into ``out``; returns the folder (loadable by checkpoint.load)."""
    model, info = import_model(path, **kwargs)
    card = {"name": name or Path(out).name, "imported_from": info}
    if command:
        card["import_command"] = command
    return checkpoint.save(out, model, card)


# ----------------------------------------------------------------------------- the CLI plug-in


def register(sub: Any) -> None:
    """Add ``semio import`` to the CLI's subparsers (semio_jax.app.cli's plug-in hook)."""
    p = sub.add_parser("import", help="convert a GPT-2 checkpoint (Hugging Face folder, nanoGPT ckpt.pt, "
                                      "TransformerLens state dict) into a semio checkpoint folder")
    p.add_argument("path", help="Hugging Face folder (config.json + model.safetensors) or a torch file")
    p.add_argument("--out", required=True, help="checkpoint folder to write (weights.msgpack + card.json)")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: detected from the path")
    p.add_argument("--context-length", type=int, default=None,
                   help="keep the first L positions only (default: all the model's positions)")
    p.add_argument("--name", default=None, help="model name in the card (default: the folder name)")
    p.add_argument("--activation", choices=sorted(TL_ACTIVATIONS), default="gelu_new",
                   help="TransformerLens only: the model's act_fn (default gelu_new)")
    p.add_argument("--layer-norm-eps", type=float, default=1e-5, help="TransformerLens only (default 1e-5)")
    p.set_defaults(plugin=__name__)


def run(args: argparse.Namespace) -> int:
    out = import_checkpoint(args.path, args.out, name=args.name, command=getattr(args, "command_line", None),
                            format=args.format, context_length=args.context_length, activation=args.activation,
                            layer_norm_eps=args.layer_norm_eps)
    model = checkpoint.load(out)
    print(f"imported {model!r} into {out}")
    return 0

"""semio_models.importers: GPT-2 checkpoints of other libraries on the engine's own transformer.

The references are golden fixtures made by the real libraries (tests/fixtures/make_gpt2_fixtures.py:
Hugging Face transformers' GPT2LMHeadModel, nanoGPT's model.py, TransformerLens's HookedTransformer), each
a tiny random model with every context's next-token logits computed by that library. The imported model
must reproduce them to 1e-5 on every context up to its length, through the plain forward pass and through
the engine's shared-prefix build. No torch is needed except where a test says so.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import semio_jax as sj
from semio_jax.app import cli
from semio_jax.build import evaluate_logits
from semio_jax.errors import ArchitectureMismatchError, CheckpointError, MissingDependencyError
from semio_models import checkpoint, importers

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gpt2"
ATOL = 1e-5
HAVE_TORCH = importlib.util.find_spec("torch") is not None  # the optional extra
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed (optional extra 'torch')")


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name / "reference_logits.npz", allow_pickle=False) as f:
        return dict(f)


def tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@functools.lru_cache(maxsize=None)
def converted(name: str):
    """The fixture ``name`` converted without torch (the torch files' tensors from their safetensors twin)."""
    if name.startswith("huggingface"):
        return importers.import_model(FIXTURES / name)[0]
    if name == "nanogpt":
        state, meta = tensors(FIXTURES / "nanogpt" / "ckpt_tensors.safetensors")
        return importers.from_nanogpt(state, json.loads(meta["model_args"]))
    state, meta = tensors(FIXTURES / "transformer_lens" / "state_dict.safetensors")
    return importers.from_transformer_lens(state, activation=meta["act_fn"], layer_norm_eps=float(meta["eps"]))


def worst_error(model, ref: dict[str, np.ndarray]) -> float:
    """Largest |ours - library's| over every context of every length, plain forward pass."""
    worst = 0.0
    for k in range(1, model.context_length + 1):
        ours = np.asarray(model(ref[f"contexts_{k}"]))  # [N^k, N]
        worst = max(worst, float(np.max(np.abs(ours - ref[f"logits_{k}"]))))
    return worst


FIXTURE_NAMES = ["huggingface", "huggingface_untied", "nanogpt", "transformer_lens"]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_imported_logits_match_the_library_on_every_context(name):
    model, ref = converted(name), reference(name)
    L = model.context_length
    assert sorted(k for k in ref if k.startswith("logits_")) == [f"logits_{k}" for k in range(1, L + 1)]
    assert all(ref[f"contexts_{k}"].shape == (model.n_tokens**k, k) for k in range(1, L + 1))
    assert worst_error(model, ref) <= ATOL


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_the_shared_prefix_build_applies_to_imported_models(name):
    model, ref = converted(name), reference(name)
    space = sj.StateSpace(model.n_tokens, model.context_length)
    # chunks of 8 contexts: the walk starts from level 1 and every deeper level goes through tree_step
    logits = evaluate_logits(model, space, method="prefix", batch_size=8)  # [S, N]
    for k in space.lengths:
        np.testing.assert_array_equal(space.contexts(k), ref[f"contexts_{k}"])
        assert np.max(np.abs(logits[space.group(k)] - ref[f"logits_{k}"])) <= ATOL


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_the_sampler_cache_applies_to_imported_models(name):
    """prefill of x_0..x_{L-2}, then one cached step of x_{L-1}: the library's logits after x_0..x_{L-1}."""
    model, ref = converted(name), reference(name)
    L = model.context_length
    ctx = ref[f"contexts_{L}"]
    logits, _ = model.cached_step(model.prefill(ctx[:, :-1]), ctx[:, -1], L - 1)  # [N^L, N]
    assert np.max(np.abs(np.asarray(logits) - ref[f"logits_{L}"])) <= ATOL


def test_the_fixtures_cover_every_gpt2_switch():
    """The four fixtures differ in the switches the importers set, so a wrong mapping of any shows."""
    cfgs = {name: converted(name).config for name in FIXTURE_NAMES}
    assert {c.activation for c in cfgs.values()} == {"gelu_tanh", "gelu"}
    assert {c.tie_embeddings for c in cfgs.values()} == {True, False}
    assert {c.unembed_bias for c in cfgs.values()} == {True, False}
    assert {c.bias for c in cfgs.values()} == {True, False}
    assert cfgs["huggingface_untied"].d_ff == 24 and cfgs["huggingface_untied"].n_heads == 4


def test_a_wrong_activation_is_visible_in_the_logits():
    """The fixtures' scale makes the GELU variants differ by far more than the tolerance."""
    state, meta = tensors(FIXTURES / "transformer_lens" / "state_dict.safetensors")
    wrong = importers.from_transformer_lens(state, activation="gelu")  # the fixture used gelu_new
    assert worst_error(wrong, reference("transformer_lens")) > 100 * ATOL


def test_context_length_keeps_the_first_positions():
    full = reference("huggingface_untied")
    model, _ = importers.import_model(FIXTURES / "huggingface_untied", context_length=3)
    assert model.context_length == 3 and model.config.tie_embeddings is False
    assert worst_error(model, full) <= ATOL
    with pytest.raises(CheckpointError, match="context_length"):
        importers.import_model(FIXTURES / "huggingface_untied", context_length=6)


def test_cli_import_then_load_and_analyze(tmp_path, capsys):
    out = tmp_path / "gpt2"
    assert cli.main(["import", str(FIXTURES / "huggingface"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "weights.msgpack"]
    model = checkpoint.load(out)
    assert worst_error(model, reference("huggingface")) <= ATOL
    card = model.card
    src = card["imported_from"]
    assert src["format"] == "huggingface" and card["name"] == "gpt2"
    assert src["files"]["model.safetensors"] == checkpoint.sha256_hex(
        (FIXTURES / "huggingface" / "model.safetensors").read_bytes())
    assert card["config"]["tie_embeddings"] is True and card["config"]["activation"] == "gelu_tanh"
    assert card["import_command"].startswith("semio import ")
    report = tmp_path / "report"
    assert cli.main(["analyze", str(out), "-p", "greedy", "--no-sample", "--out", str(report)]) == 0
    results = json.loads((report / "results.json").read_text())
    assert "greedy" in json.dumps(results)


def test_the_source_tree_is_not_modified(tmp_path):
    before = {p: p.stat().st_mtime_ns for p in FIXTURES.rglob("*")}
    importers.import_checkpoint(FIXTURES / "huggingface", tmp_path / "x")
    assert {p: p.stat().st_mtime_ns for p in FIXTURES.rglob("*")} == before


def _hf_copy(tmp_path: Path, edit_config=None, edit_state=None) -> Path:
    folder = tmp_path / "hf"
    shutil.copytree(FIXTURES / "huggingface", folder)
    if edit_config:
        cfg = json.loads((folder / "config.json").read_text())
        edit_config(cfg)
        (folder / "config.json").write_text(json.dumps(cfg))
    if edit_state:
        state, meta = tensors(folder / "model.safetensors")
        edit_state(state)
        save_file(state, str(folder / "model.safetensors"), metadata=meta)
    return folder


@pytest.mark.parametrize("edit, error, match", [
    (lambda c: c.update(model_type="llama"), ArchitectureMismatchError, "model_type"),
    (lambda c: c.update(scale_attn_by_inverse_layer_idx=True), ArchitectureMismatchError, "inverse_layer_idx"),
    (lambda c: c.update(activation_function="swish"), ArchitectureMismatchError, "activation_function"),
    (lambda c: c.update(n_head=3), ArchitectureMismatchError, "n_heads"),
    (lambda c: c.update(n_layer=1), ArchitectureMismatchError, "h.1"),
    (lambda c: c.update(n_layer=3), CheckpointError, "h.2"),
    (lambda c: c.pop("n_embd"), CheckpointError, "n_embd"),
])
def test_bad_configs_are_refused_by_name(tmp_path, edit, error, match):
    with pytest.raises(error, match=match):
        importers.import_model(_hf_copy(tmp_path, edit_config=edit))


def test_bad_tensors_are_refused_by_name(tmp_path):
    extra = _hf_copy(tmp_path / "a", edit_state=lambda s: s.update({"transformer.h.0.crossattention.w": s["transformer.ln_f.bias"]}))
    with pytest.raises(ArchitectureMismatchError, match="crossattention"):
        importers.import_model(extra)
    missing = _hf_copy(tmp_path / "b", edit_state=lambda s: s.pop("transformer.h.1.mlp.c_fc.bias"))
    with pytest.raises(CheckpointError, match="c_fc.bias.*missing"):
        importers.import_model(missing)

    def poison(s):
        s["transformer.wpe.weight"] = s["transformer.wpe.weight"].copy()
        s["transformer.wpe.weight"][0, 0] = np.nan

    with pytest.raises(CheckpointError, match="NaN"):
        importers.import_model(_hf_copy(tmp_path / "c", edit_state=poison))
    no_weights = _hf_copy(tmp_path / "d")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        importers.import_model(no_weights)
    with pytest.raises(CheckpointError, match="does not exist"):
        importers.import_model(tmp_path / "nowhere")


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    folder = _hf_copy(tmp_path, edit_config=lambda c: c.update(model_type="bert"))
    assert cli.main(["import", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ArchitectureMismatchError" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_torch_files_without_torch_name_the_missing_dependency(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(MissingDependencyError, match="torch"):
        importers.import_model(FIXTURES / "nanogpt" / "ckpt.pt")
    assert cli.main(["import", str(FIXTURES / "transformer_lens" / "state_dict.pt"), "--out", str(tmp_path)]) == 2
    assert "MissingDependencyError" in capsys.readouterr().err


@needs_torch
@pytest.mark.parametrize("name, path", [("nanogpt", "ckpt.pt"), ("transformer_lens", "state_dict.pt")])
def test_torch_files_through_the_weights_only_loader(tmp_path, name, path):
    out = importers.import_checkpoint(FIXTURES / name / path, tmp_path / name)
    model = checkpoint.load(out)
    assert model.card["imported_from"]["format"] == name
    assert worst_error(model, reference(name)) <= ATOL
    assert model.config == converted(name).config


@needs_torch
def test_torch_files_with_code_are_refused(tmp_path):
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_args": {}, "hook": print}, path)  # a global the safe loader refuses
    with pytest.raises(CheckpointError, match="weights_only"):
        importers.import_model(path, format="nanogpt")


@pytest.mark.slow
@needs_torch
def test_live_against_hugging_face_transformers(tmp_path):
    """A fresh GPT2LMHeadModel (not the stored fixture), saved and imported, against the library itself."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(7)
    config = transformers.GPT2Config(vocab_size=4, n_positions=5, n_embd=16, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model = checkpoint.load(importers.import_checkpoint(tmp_path / "hf", tmp_path / "ours"))
    space = sj.StateSpace(4, 5)
    ours = evaluate_logits(model, space, method="prefix")
    for k in space.lengths:
        ctx = space.contexts(k)
        with torch.no_grad():
            theirs = hf(torch.from_numpy(ctx.astype(np.int64))).logits[:, -1, :].numpy()
        assert np.max(np.abs(ours[space.group(k)] - theirs)) <= ATOL

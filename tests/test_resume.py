"""Resumable operator builds (semio_jax.build.checkpointed): interrupt a build, resume it, get bitwise the same operator."""

from __future__ import annotations

import json

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.build.checkpointed import MANIFEST, checkpoint_folder, using_checkpoint_dir
from semio_models.transformer import TransformerConfig, TransformerModel


class Boom(RuntimeError):
    pass


class FlakyFunction:
    """A numpy model that raises after ``limit`` calls (simulates a crash mid-build)."""

    jittable = False

    def __init__(self, n_tokens: int, limit: int | None = None, seed: int = 0):
        self.n_tokens, self.context_length = n_tokens, None
        self.limit, self.calls = limit, 0
        self.w = np.random.default_rng(seed).normal(size=(n_tokens,) * 3).astype(np.float32)

    def __call__(self, contexts):
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise Boom(f"crash after {self.limit} calls")
        c = np.asarray(contexts)
        prev = c[:, -2] if c.shape[1] > 1 else np.zeros(len(c), int)
        return self.w[prev, c[:, -1]] + np.float32(0.01) * c.shape[1]


class FlakyTransformer(TransformerModel):
    """The same weights; its prefix-tree step raises after ``limit`` calls."""

    def __init__(self, base: TransformerModel, limit: int):
        super().__init__(base.config, base.params)
        self.base, self.limit, self.steps = base, limit, 0

    @property
    def _tree_step(self):
        inner = self.base._tree_step  # the base model's compiled step (compiled once for all builds)

        def step(*args):
            self.steps += 1
            if self.steps > self.limit:
                raise Boom(f"crash after {self.limit} prefix-tree steps")
            return inner(*args)

        return step


@pytest.fixture(scope="module")
def tiny_transformer():
    cfg = TransformerConfig(n_tokens=3, context_length=4, n_layers=1, d_model=16, n_heads=2)
    return TransformerModel.random(cfg, seed=3)


def test_plain_resume_is_bitwise_identical(tmp_path):
    space = sj.StateSpace(3, 4)
    ref = sj.build_operator(FlakyFunction(3), space, "top_k=2", batch_size=7)
    flaky = FlakyFunction(3, limit=6)
    with pytest.raises(Boom):
        sj.build_operator(flaky, space, "top_k=2", batch_size=7, checkpoint_dir=tmp_path)
    folder = checkpoint_folder(tmp_path, space, "plain")
    saved = sorted(p.name for p in folder.glob("L*.npy"))
    assert len(saved) == 5  # 1 probe call + 5 chunks, then the crash
    assert json.loads((folder / MANIFEST).read_text())["complete"] is False
    healthy = FlakyFunction(3)
    op = sj.build_operator(healthy, space, "top_k=2", batch_size=7, checkpoint_dir=tmp_path)
    total_chunks = sum(-(-3**k // 7) for k in space.lengths)
    assert healthy.calls == 1 + total_chunks - 5  # the probe, then only the missing chunks
    assert np.array_equal(op.logits, ref.logits) and op.logits.dtype == ref.logits.dtype
    assert np.array_equal(op.probs, ref.probs)
    assert json.loads((folder / MANIFEST).read_text())["complete"] is True
    again = FlakyFunction(3)  # a completed checkpoint is a cache: only the fingerprint probe is evaluated
    assert np.array_equal(sj.build_operator(again, space, "top_k=2", batch_size=7, checkpoint_dir=tmp_path).probs,
                          ref.probs)
    assert again.calls == 1
    assert not list(folder.glob(".*.tmp")), "no temporary file may be left behind"


def test_prefix_resume_is_bitwise_identical(tmp_path, tiny_transformer):
    space = sj.StateSpace(3, 4)
    ref = sj.build_operator(tiny_transformer, space, "temperature=0.7", batch_size=6, method="prefix")
    flaky = FlakyTransformer(tiny_transformer, limit=9)
    with pytest.raises(Boom):
        sj.build_operator(flaky, space, "temperature=0.7", batch_size=6, method="prefix", checkpoint_dir=tmp_path)
    folder = checkpoint_folder(tmp_path, space, "prefix")
    assert 0 < len(list(folder.glob("T*.npy"))) and list(folder.glob("done_*"))
    resumed = FlakyTransformer(tiny_transformer, limit=10**6)
    op = sj.build_operator(resumed, space, "temperature=0.7", batch_size=6, method="prefix", checkpoint_dir=tmp_path)
    uninterrupted = FlakyTransformer(tiny_transformer, limit=10**6)
    sj.build_operator(uninterrupted, space, "temperature=0.7", batch_size=6, method="prefix")
    assert resumed.steps < uninterrupted.steps  # finished subtrees were skipped
    assert np.array_equal(op.logits, ref.logits)
    assert np.array_equal(op.probs, ref.probs)


def test_resume_with_another_model_is_refused(tmp_path, tiny_transformer):
    space = sj.StateSpace(3, 4)
    with pytest.raises(Boom):
        sj.build_operator(FlakyFunction(3, limit=3), space, batch_size=7, checkpoint_dir=tmp_path)
    with pytest.raises(sj.ResumeError, match="another model.*another --checkpoint-dir"):
        sj.build_operator(FlakyFunction(3, seed=1), space, batch_size=7, checkpoint_dir=tmp_path)
    with pytest.raises(sj.ResumeError, match="chunk size"):
        sj.build_operator(FlakyFunction(3), space, batch_size=8, checkpoint_dir=tmp_path)
    # another space or method gets its own sub-folder, so it is no conflict
    sj.build_operator(FlakyFunction(3), sj.StateSpace(3, 3), batch_size=7, checkpoint_dir=tmp_path)
    # a damaged manifest is refused with a clear message
    folder = checkpoint_folder(tmp_path, space, "plain")
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(sj.ResumeError, match="unreadable"):
        sj.build_operator(FlakyFunction(3), space, batch_size=7, checkpoint_dir=tmp_path)


def test_damaged_chunk_is_recomputed(tmp_path):
    space = sj.StateSpace(2, 3)
    ref = sj.build_operator(FlakyFunction(2), space, batch_size=4, checkpoint_dir=tmp_path)
    folder = checkpoint_folder(tmp_path, space, "plain")
    victim = sorted(folder.glob("L*.npy"))[0]
    victim.write_bytes(victim.read_bytes()[:20])  # truncated by hand
    model = FlakyFunction(2)
    op = sj.build_operator(model, space, batch_size=4, checkpoint_dir=tmp_path)
    assert model.calls == 2 and np.array_equal(op.probs, ref.probs)


def test_cli_context_sets_the_default(tmp_path):
    space = sj.StateSpace(2, 3)
    with using_checkpoint_dir(tmp_path):
        sj.build_operator(FlakyFunction(2), space)
    assert (checkpoint_folder(tmp_path, space, "plain") / MANIFEST).exists()
    sj.build_operator(FlakyFunction(2), sj.StateSpace(2, 2))  # outside the block: no checkpoint
    assert not checkpoint_folder(tmp_path, sj.StateSpace(2, 2), "plain").exists()


def test_cli_checkpoint_dir_and_provenance(tmp_path):
    from semio_jax.app.cli import main
    from semio_models.checkpoint import load_card

    out, ck = tmp_path / "rep", tmp_path / "ck"
    argv = ["check", "coin", "-p", "temperature=1", "--chains", "4", "--steps", "50", "--seed", "7",
            "--out", str(out), "--checkpoint-dir", str(ck)]
    assert main(argv) in (0, 1)
    results = json.loads((out / "results.json").read_text())
    prov = results["provenance"]
    assert prov["command"] == "semio " + " ".join(argv)
    assert prov["weights_sha256"] == load_card("coin")["weights_sha256"] == prov["model_card"]["weights_sha256"]
    assert prov["space"] == {"n_tokens": 2, "length": 8, "prefixes": True}
    assert prov["procedures"] == ["temperature=1"]
    assert prov["seeds"]["seed"] == 7 and prov["seeds"]["n_chains"] == 4 and prov["seeds"]["n_steps"] == 50
    assert prov["versions"]["jax"] and prov["versions"]["numpy"] and prov["python"]
    assert results["coin_temperature1"]["checks"][0]["settings"]["seed"] == 7
    manifest = json.loads((checkpoint_folder(ck, sj.StateSpace(2, 8), "prefix") / MANIFEST).read_text())
    assert manifest["complete"] and manifest["model"]["weights_sha256"] == prov["weights_sha256"]
    probs = np.load(out / "arrays.npz")["coin_temperature1/probs"]
    from semio_models.checkpoint import load

    again = sj.build_operator(load("coin"), sj.StateSpace(2, 8), checkpoint_dir=ck)  # reads the finished build
    np.testing.assert_array_equal(again.probs, probs)

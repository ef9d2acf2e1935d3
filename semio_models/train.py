"""Train a tiny transformer on a source, and measure its loss exactly.

Training
--------
Each step draws ``batch_size`` independent stretches of length L+1 from the
stationary source (``source.sample`` with ``np.random.default_rng(seed)``) and
minimises the next-token cross-entropy at every position,

    loss = mean_{b, i} -log q(x[b, i+1] | x[b, 0..i]),   inputs x[:, :L], targets x[:, 1:],

with optax AdamW (gradient clipping at global norm 1, linear warm-up then
cosine decay of the learning rate to 0, weight decay on matrices only).
Parameters start from ``TransformerModel.random(config, seed)``, so a run is a
deterministic function of its arguments (on a given machine / XLA build); it
always runs with ``jax_enable_x64`` off, whatever the global setting.

Exact loss
----------
For a model q with context length L and a source with window law p,

    loss_i  = sum_{x_1..x_{i+2}} p(x_1..x_{i+2}) (-log q(x_{i+2} | x_1..x_{i+1})),   i = 0..L-1
    H_i     = H(X_{i+2} | X_1..X_{i+1})   (the least possible loss_i)
    loss_i - H_i = E_context KL(p(. | context) || q(. | context)) >= 0.

``exact_loss`` computes loss_i by enumerating every context of length L of
positive probability (one forward pass gives every position) against the joint
law P(context, next token) of ``source.context_table(L)``.
"Last position" is i = L-1 (a full context of L tokens); "mean" averages over
i = 0..L-1, which is what the training loss estimates.

For a corpus (``sources.CorpusSource``: ``text:PATH``, ``tokens:PATH``, ``pydoc``)
the window law is the corpus's cyclic window frequencies, so loss_i is the exact
cross-entropy on the corpus and H_i its empirical conditional entropy; only the
contexts that occur are evaluated (``source.context_table``). ``exact_loss_problem``
says, before training, whether the exact loss fits (``MAX_EXACT_WINDOWS`` cells);
when it does not, training runs and saves all the same, and the card says why.

CLI:  semio train --source coin --context-length 8 --layers 2 \
          --d-model 32 --heads 2 --steps 3000 --batch-size 64 --lr 3e-3 --seed 0 \
          --name coin --out semio_models/zoo/coin
      (also ``python -m semio_models.train ...``; text: ``--source text:PATH --alphabet letters``)
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import optax
from scipy.special import log_softmax
from tqdm.auto import tqdm

from semio_jax._util.io import ensure_dir
from semio_jax.errors import SemioError, StateSpaceTooLargeError

from .checkpoint import save
from .sources import Source, parse_source
from .transformer import Transformer, TransformerConfig, TransformerModel

__all__ = ["TrainResult", "ExactLoss", "train", "exact_loss", "exact_loss_problem", "make_optimizer", "build_card",
           "add_arguments", "run", "main"]

FINAL_LOSS_WINDOW = 100  # final_loss = mean training loss over this many last steps
MAX_EXACT_WINDOWS = 2**21  # exact_loss refuses more (context, next token) cells (N^(L+1) for a process)


@dataclass
class TrainResult:
    model: TransformerModel  # the trained model
    losses: np.ndarray  # float32 [steps], training loss of each step (before its update)
    final_loss: float  # mean of the last min(FINAL_LOSS_WINDOW, steps) losses
    hyperparams: dict[str, Any] = field(default_factory=dict)  # everything needed to rerun
    wall_time_s: float = 0.0  # seconds spent in train()


@dataclass
class ExactLoss:
    per_position: np.ndarray  # float64 [L], exact expected loss at position i (context of i+1 tokens)
    optimal_per_position: np.ndarray  # float64 [L], H(X_{i+2} | X_1..X_{i+1}) of the source
    entropy_rate: float | None  # source entropy rate, nats (None for a corpus, which has none)

    @property
    def last_position(self) -> float:
        """Exact expected loss with a full context of L tokens."""
        return float(self.per_position[-1])

    @property
    def mean(self) -> float:
        """Exact expected loss averaged over the L positions (what training minimises)."""
        return float(self.per_position.mean())

    @property
    def conditional_entropy_last(self) -> float:
        """H(X_{L+1} | X_1..X_L): the least possible last-position loss."""
        return float(self.optimal_per_position[-1])

    @property
    def excess_last(self) -> float:
        """Last-position loss minus its optimum = expected KL per token (nats)."""
        return self.last_position - self.conditional_entropy_last

    @property
    def excess_mean(self) -> float:
        """Mean loss minus its optimum (nats)."""
        return self.mean - float(self.optimal_per_position.mean())


def make_optimizer(
    learning_rate: float, weight_decay: float, steps: int, warmup_steps: int
) -> optax.GradientTransformation:
    """Clip at global norm 1, then AdamW with warm-up + cosine decay; decay matrices only."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(steps, warmup_steps + 1),
        end_value=0.0,
    )
    decay_mask = lambda params: jax.tree_util.tree_map(lambda a: a.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=weight_decay, mask=decay_mask),
    )


@functools.lru_cache(maxsize=8)
def _train_step(config: TransformerConfig, learning_rate: float, weight_decay: float, steps: int, warmup_steps: int):
    """(optimizer, jitted step) for these hyper-parameters; cached so reruns skip compilation."""
    optimizer = make_optimizer(learning_rate, weight_decay, steps, warmup_steps)
    module = Transformer(config)
    L = config.context_length

    def loss_fn(params, x):
        logits = module.apply({"params": params}, x[:, :L])  # [B, L, N]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, x[:, 1:])  # [B, L]
        return ce.mean()

    @jax.jit
    def step_fn(params, opt_state, x):
        loss, grads = jax.value_and_grad(loss_fn)(params, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return optimizer, step_fn


def train(
    config: TransformerConfig,
    source: Source,
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    warmup_steps: int | None = None,
    progress: bool = True,
    callback: Callable[[int, float, Any], Any] | None = None,
) -> TrainResult:
    """Train ``Transformer(config)`` on ``source``; deterministic given ``seed``.

    ``warmup_steps`` defaults to min(100, steps // 10). ``callback(step, loss,
    params)`` is called after every step with the 1-based step count, that
    step's loss (float) and the updated parameters.
    """
    if config.n_tokens != source.n_tokens:
        raise ValueError(
            f"config.n_tokens={config.n_tokens} differs from the source alphabet size {source.n_tokens}"
        )
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not learning_rate > 0 or not weight_decay >= 0:
        raise ValueError(f"need learning_rate > 0 and weight_decay >= 0, got {learning_rate}, {weight_decay}")
    if warmup_steps is None:
        warmup_steps = min(100, steps // 10)
    L = config.context_length
    t0 = time.perf_counter()

    data_rng = np.random.default_rng(seed)
    optimizer, step_fn = _train_step(config, float(learning_rate), float(weight_decay), steps, warmup_steps)
    # Training always runs in 32-bit mode, so its result does not depend on
    # whether the caller (e.g. the engine) switched jax_enable_x64 on.
    with jax.enable_x64(False):
        params = TransformerModel.random(config, seed).params
        opt_state = optimizer.init(params)

    losses = np.empty(steps, dtype=np.float32)
    pending: list[tuple[int, jax.Array]] = []  # losses not yet copied to the host

    def flush():
        for i, l in pending:
            losses[i] = float(l)
        pending.clear()

    bar = None
    if progress:
        bar = tqdm(total=steps, desc=f"train {source.name}", unit="step", dynamic_ncols=True)
    for step in range(steps):
        x = source.sample(data_rng, batch_size, L + 1)  # [B, L+1]
        with jax.enable_x64(False):
            params, opt_state, loss = step_fn(params, opt_state, x)
        pending.append((step, loss))
        if callback is not None:
            flush()
            callback(step + 1, float(losses[step]), params)
        if (step + 1) % 100 == 0 or step + 1 == steps:
            flush()
            if bar is not None:
                bar.update(step + 1 - bar.n)
                bar.set_postfix(loss=f"{losses[max(0, step - 99):step + 1].mean():.4f}")
    flush()
    if bar is not None:
        bar.close()

    window = min(FINAL_LOSS_WINDOW, steps)
    hyper = {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "warmup_steps": int(warmup_steps),
        "seed": int(seed),
        "optimizer": "adamw(b1=0.9, b2=0.99) + clip_by_global_norm(1.0), warmup + cosine decay to 0",
    }
    return TrainResult(
        model=TransformerModel(config, params),
        losses=losses,
        final_loss=float(losses[-window:].mean()),
        hyperparams=hyper,
        wall_time_s=time.perf_counter() - t0,
    )


def exact_loss_problem(n_tokens: int, context_length: int, source: Source,
                       max_windows: int = MAX_EXACT_WINDOWS) -> str | None:
    """Why ``exact_loss`` cannot run for this alphabet, context length and source (None when it can).

    Cheap (no model needed), so a training run checks it before training.
    """
    N, L = n_tokens, context_length
    if N != source.n_tokens:
        return f"the model's alphabet size {N} differs from the source's {source.n_tokens}"
    try:
        cells = source.exact_loss_cells(L)
    except StateSpaceTooLargeError as e:
        return str(e)
    if cells > max_windows:
        what = "windows" if source.exact_entropy_rate else "(context, next token) cells of the corpus"
        return (f"the exact loss needs {cells} {what} at context length {L}, more than the limit "
                f"max_windows={max_windows}; train with a shorter --context-length or a smaller alphabet "
                f"to get it")
    return None


def exact_loss(
    model: Any, source: Source, *, max_windows: int = MAX_EXACT_WINDOWS, batch_size: int = 4096
) -> ExactLoss:
    """Exact expected cross-entropy of ``model`` at every position under the stationary ``source``.

    ``model`` needs ``n_tokens``, ``context_length`` and ``logits_all(contexts
    [B, L]) -> [B, L, N]``. Only contexts of probability > 0 are evaluated
    (``source.context_table``); StateSpaceTooLargeError (before any model call)
    when ``exact_loss_problem`` finds the space too large.
    """
    N, L = model.n_tokens, model.context_length
    if N != source.n_tokens:
        raise ValueError(f"model alphabet size {N} differs from source alphabet size {source.n_tokens}")
    problem = exact_loss_problem(N, L, source, max_windows)
    if problem is not None:
        raise StateSpaceTooLargeError(problem)
    contexts, joint = source.context_table(L)  # [C, L], [C, N]: P(context, next token), P(context) > 0
    p_ctx = joint.sum(1)  # [C]
    totals = np.zeros(L, dtype=np.float64)
    chunk = min(batch_size, len(contexts))
    for start in range(0, len(contexts), chunk):
        rows = slice(start, start + chunk)
        n = len(contexts[rows])
        x = np.zeros((chunk, L), dtype=np.int32)  # padded to a fixed shape: one compilation
        x[:n] = contexts[rows]
        logits = np.asarray(model.logits_all(x), dtype=np.float64)[:n]  # [n, L, N]
        logq = log_softmax(logits, axis=-1)  # [n, L, N]
        # last position: the next token is outside the context, weight by the joint law
        # (impossible next tokens are skipped, so a q of 0 there costs nothing, not 0 * inf)
        pj = joint[rows]  # [n, N]
        terms = np.multiply(pj, logq[:, L - 1, :], out=np.zeros_like(pj), where=pj > 0)  # [n, N]
        totals[L - 1] -= terms.sum()
        # earlier positions: the target is the context's own next token
        if L > 1:
            target = contexts[rows][:, 1:]  # [n, L-1]
            logq_t = np.take_along_axis(logq[:, : L - 1, :], target[..., None], axis=-1)[..., 0]  # [n, L-1]
            totals[: L - 1] -= p_ctx[rows] @ logq_t
    optimal = np.array([source.conditional_entropy(i + 2) for i in range(L)])
    rate = source.entropy_rate if source.exact_entropy_rate else None
    return ExactLoss(per_position=totals, optimal_per_position=optimal, entropy_rate=rate)


EXACT_KEYS = ("exact_last_position_loss", "exact_mean_loss", "exact_loss_per_position", "source_entropy_rate",
              "source_conditional_entropy_last", "source_conditional_entropy_per_position",
              "excess_last_position_loss", "excess_mean_loss")


def build_card(
    name: str, source: Source, result: TrainResult, exact: ExactLoss | None, command: str,
    exact_skipped: str | None = None,
) -> dict[str, Any]:
    """The model-card fields of a training run (checkpoint.save adds config, hash, versions).

    Without ``exact`` the exact-loss fields are null and ``exact_loss_skipped``
    says why. A corpus source adds ``corpus`` (provenance, license, mapping) and
    a text corpus ``alphabet`` (``alphabet.Alphabet.to_dict``, so prompts and
    outputs print as text); a corpus has no entropy rate (null).
    """
    card: dict[str, Any] = {
        "name": name,
        "source": source.spec(),
        "source_name": source.name,
        **result.hyperparams,
        "final_train_loss": result.final_loss,
        "final_train_loss_window": min(FINAL_LOSS_WINDOW, len(result.losses)),
        **dict.fromkeys(EXACT_KEYS),
    }
    if exact is not None:
        card.update({
            "exact_last_position_loss": exact.last_position,
            "exact_mean_loss": exact.mean,
            "exact_loss_per_position": exact.per_position.tolist(),
            "source_entropy_rate": exact.entropy_rate,
            "source_conditional_entropy_last": exact.conditional_entropy_last,
            "source_conditional_entropy_per_position": exact.optimal_per_position.tolist(),
            "excess_last_position_loss": exact.excess_last,
            "excess_mean_loss": exact.excess_mean,
        })
    else:
        card["exact_loss_skipped"] = exact_skipped or "not computed"
    corpus = getattr(source, "corpus", None)
    if corpus is not None:
        card["corpus"] = corpus
    alphabet = getattr(source, "alphabet", None)
    if alphabet is not None:
        card["alphabet"] = alphabet.to_dict()
    card.update({"units": "nats per token", "retrain_command": command,
                 "train_wall_time_s": round(result.wall_time_s, 1)})
    return card


SOURCE_HELP = ("coin, coin:p=0.6, markov:n_tokens=4,order=2,seed=0, dyck:max_depth=3, text:PATH (characters of a "
               "UTF-8 file), tokens:PATH (integer token ids: a .npy array or integers in text), pydoc (CPython's "
               "documentation text)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The training options (shared by ``semio train`` and ``python -m semio_models.train``)."""
    p.add_argument("--source", required=True, help=SOURCE_HELP)
    p.add_argument("--alphabet", default=None,
                   help="text:PATH and pydoc only: 'file' (the file's distinct characters; text's default), "
                        "'letters' (space and a-z, case folded, every other character a space, runs of spaces "
                        "collapsed; pydoc's default) or the symbols themselves (see semio_models.alphabet)")
    p.add_argument("--context-length", type=int, required=True, help="L, the model's context length")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--d-ff", type=int, default=0, help="MLP width (0: 4 * d_model)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default min(100, steps/10))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="model name recorded in the card (default: the folder name)")
    p.add_argument("--out", default=None, help="checkpoint folder to write (nothing is saved without it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parser(prog: str = "python -m semio_models.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Train a tiny causal transformer on a source with exact statistics.")
    add_arguments(p)
    return p


def _retrain_command(args: argparse.Namespace, source: Source, config: TransformerConfig, name: str,
                     warmup: int) -> str:
    return shlex.join([
        "semio", "train", "--source", source.cli_string(),
        *(["--alphabet", args.alphabet] if args.alphabet is not None else []),
        "--context-length", str(config.context_length), "--layers", str(config.n_layers),
        "--d-model", str(config.d_model), "--heads", str(config.n_heads), "--d-ff", str(config.d_ff),
        "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--lr", repr(args.lr),
        "--weight-decay", repr(args.weight_decay), "--warmup", str(warmup),
        "--seed", str(args.seed), "--name", name,
        *(["--out", args.out] if args.out else []),
    ])


def run(args: argparse.Namespace) -> int:
    """Train as the parsed options say, print the losses, save the checkpoint; the exit status.

    Bad options end with exit status 2 before any training. The exact loss is
    computed when ``exact_loss_problem`` allows it; otherwise the run says why,
    and the checkpoint is saved all the same (its card's exact fields null).
    """
    try:
        source = parse_source(args.source, args.alphabet)
        config = TransformerConfig(
            n_tokens=source.n_tokens,
            context_length=args.context_length,
            n_layers=args.layers,
            d_model=args.d_model,
            n_heads=args.heads,
            d_ff=args.d_ff,
        )
        for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
            if value < 1:
                raise ValueError(f"{flag} must be at least 1, got {value}")
        if args.out:
            ensure_dir(args.out)
    except (ValueError, SemioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    problem = exact_loss_problem(config.n_tokens, config.context_length, source)
    if problem is not None:
        print(f"note: the exact loss will not be computed: {problem}", file=sys.stderr)
    result = train(
        config, source, steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        weight_decay=args.weight_decay, seed=args.seed, warmup_steps=args.warmup,
        progress=not args.no_progress,
    )
    exact, failure = None, None
    if problem is None:
        try:
            exact = exact_loss(result.model, source)
        except MemoryError as e:  # StateSpaceTooLargeError included: the run is kept all the same
            problem = f"the exact loss did not fit: {e}"
        except Exception as e:  # noqa: BLE001 - save the trained model first, then report the failure
            problem, failure = f"the exact loss failed: {e!r}", e
    name = args.name or (Path(args.out).name if args.out else source.name)
    command = _retrain_command(args, source, config, name, result.hyperparams["warmup_steps"])
    print(f"model        {result.model!r}")
    print(f"source       {source.name}   (train time {result.wall_time_s:.1f} s)")
    print(f"train loss   {result.final_loss:.5f}  (mean of last {min(FINAL_LOSS_WINDOW, args.steps)} steps)")
    if exact is not None:
        rate = "none (a corpus)" if exact.entropy_rate is None else f"{exact.entropy_rate:.5f}"
        print(f"exact loss   last position {exact.last_position:.5f}   mean over positions {exact.mean:.5f}")
        print(f"optimum      H(X_L+1 | X_1..L) = {exact.conditional_entropy_last:.5f}   "
              f"mean {exact.optimal_per_position.mean():.5f}   entropy rate {rate}")
        print(f"excess (KL)  last position {exact.excess_last:.5f}   mean {exact.excess_mean:.5f}  nats/token")
    else:
        print(f"exact loss   not computed: {problem}")
    if args.out:
        save(args.out, result.model, build_card(name, source, result, exact, command, problem))
        print(f"saved        {args.out}")
    if failure is not None:
        raise failure
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m semio_models.train") -> int:
    return run(_parser(prog).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

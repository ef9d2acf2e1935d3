"""The ``semio`` command.

  semio zoo                                   list the shipped models
  semio train  --source SPEC --out DIR ...    train a tiny transformer on a source, text or token file
  semio analyze MODEL [-p SPEC ...] [--out DIR] [--no-sample]
  semio sample  MODEL -p SPEC --prompt 0,1 --steps 20 --chains 4 --seed 0
  semio check   MODEL -p SPEC [--chains C --steps T --level A] [--out DIR]
  semio demo    [--out DIR]

MODEL is a zoo name (``coin``, ``markov2``, ``dyck``) or a folder holding
``weights.msgpack`` and ``card.json``. SPEC is a procedure such as
``temperature=0.8,top_k=3`` or ``greedy`` (see semio_jax.sampling).
Exit status: 0 on success, 1 when an agreement check fails, 2 on bad input
(a named semio_jax error, printed without a traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .._util.compile_cache import enable_compilation_cache

__all__ = ["main", "build_parser", "load_model"]


def load_model(name: str):
    """A zoo name or checkpoint folder -> model (hash verified on load)."""
    from semio_models.checkpoint import load

    return load(name)


def _int_at_least(low: int):
    """argparse type: an integer >= low (bad values end in argparse's usage error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small (at least {low})")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a significance level lies in (0, 1), got {value}")
    return value


def _add_sampling_args(p: argparse.ArgumentParser, chains: int, steps: int) -> None:
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="master seed of every sampled quantity (default 0)")
    p.add_argument("--chains", type=_int_at_least(2), default=chains,
                   help=f"independent chains per stationary check (default {chains})")
    p.add_argument("--steps", type=_int_at_least(1), default=steps, help=f"steps per chain (default {steps})")
    p.add_argument("--basin-chains", type=_int_at_least(1), default=2000,
                   help="chains per start in the basin check (default 2000)")
    p.add_argument("--level", type=_level, default=0.01, help="family-wise significance level (default 0.01)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semio", description="Exact dynamical-systems analysis of tiny language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("zoo", help="list the shipped models")

    from semio_models.train import add_arguments as add_train_arguments

    p = sub.add_parser("train", help="train a tiny transformer on a data source (see semio_models.train)",
                       description="Train a tiny causal transformer on a source (a process with exact statistics, "
                                   "a text file, a token file or CPython's documentation text) and write a "
                                   "checkpoint whose card records the exact loss.")
    add_train_arguments(p)

    for name, helptext in (("analyze", "exact analysis (+ sampling checks) written to a report"),
                           ("check", "exact-vs-sampled agreement tests only; exit 1 on failure")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("model", help="zoo name or checkpoint folder")
        p.add_argument("-p", "--procedure", action="append", default=None,
                       help="sampling procedure spec, repeatable (default temperature=1)")
        p.add_argument("--length", type=_int_at_least(1), default=None, help="context length L (default: the model's)")
        p.add_argument("--out", default=None, help="report folder (default reports/<model>)")
        p.add_argument("--checkpoint-dir", "--resume", dest="checkpoint_dir", default=None, metavar="DIR",
                       help="write the model's logits to DIR chunk by chunk while the operator is built, and resume "
                            "an interrupted build from there (bitwise the same result; see semio_jax.build.checkpointed)")
        _add_sampling_args(p, chains=64, steps=2000)
        if name == "analyze":
            p.add_argument("--no-sample", action="store_true", help="exact analyses only, no sampling checks")
            p.add_argument("--all", action="store_true",
                           help="also the whole toolkit: entropy rate, evolution, mixing, bounds, hitting, "
                                "committor, trajectories, sensitivity, metastability, sweeps (each with its check)")
            p.add_argument("--analyses", default=None,
                           help="comma-separated subset of the toolkit: entropy, evolution, mixing, hitting, "
                                "trajectories, sensitivity, metastable, sweep (implies --all for those)")

    p = sub.add_parser("sample", help="print sampled continuations of a prompt")
    p.add_argument("model")
    p.add_argument("-p", "--procedure", default="temperature=1")
    p.add_argument("--prompt", default=None, help="comma-separated token ids (default: token 0)")
    p.add_argument("--steps", type=_int_at_least(0), default=20)
    p.add_argument("--chains", type=_int_at_least(1), default=4)
    p.add_argument("--seed", type=_int_at_least(0), default=0)

    p = sub.add_parser("demo", help="the main job on the shipped zoo, written to a report")
    p.add_argument("--out", default="reports/demo", help="report folder (default reports/demo)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    for mod in _plugins():
        mod.register(sub)
    return parser


# Subcommands defined in other modules. Each module provides
#   register(subparsers) -> None   (adds its parser(s); set_defaults(plugin=<module name>))
# and the module named by plugin (imported only when its subcommand runs) provides
#   run(args) -> int               (exit status)
# A module that is missing (e.g. an optional extra) is skipped silently.
PLUGINS = ("semio_jax.app.interop", "semio_proofs.command")


def _plugins():
    import importlib

    mods = []
    for name in PLUGINS:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise
    return mods


DEMO_PLAN = [
    # (zoo model, procedures): one ergodic procedure and one with several attractors each.
    ("coin", ["temperature=1", "greedy"]),
    ("markov2", ["temperature=1", "greedy"]),
    ("dyck", ["temperature=1", "top_p=0.5"]),
]


def _toolkit_sections(args):
    """None (no toolkit), or the tuple of toolkit analyses asked for with --all / --analyses."""
    from .toolkit import SECTIONS

    chosen = getattr(args, "analyses", None)
    if chosen:
        names = tuple(x.strip() for x in chosen.split(",") if x.strip())
        bad = sorted(set(names) - set(SECTIONS))
        if bad:
            from ..errors import SemioError

            raise SemioError(f"unknown analyses {bad}; choose from {', '.join(SECTIONS)}")
        return names
    return SECTIONS if getattr(args, "all", False) else None


def _run_analyze(args, sample: bool) -> int:
    from .pipeline import analyze
    from .report import Report
    from ..build.checkpointed import using_checkpoint_dir
    from ..core.procedure import parse

    model = load_model(args.model)
    name = Path(args.model).name
    out = args.out or f"reports/{name}"
    report = Report(out, title=f"semio {args.command}: {name}")
    ok = True
    procs = [parse(spec).spec for spec in args.procedure or ["temperature=1"]]  # all checked before any work
    with using_checkpoint_dir(args.checkpoint_dir):
        for spec in procs:
            summary = analyze(model, spec, length=args.length, sample=sample, seed=args.seed, n_chains=args.chains,
                              n_steps=args.steps, basin_chains=args.basin_chains, level=args.level, report=report,
                              model_name=name, toolkit=_toolkit_sections(args))
            ok &= summary["all_checks_passed"]
    card = getattr(model, "card", None) or {}
    path = report.write(
        command=args.command_line, model_card=card or None, model=name, weights_sha256=card.get("weights_sha256"),
        space={"n_tokens": int(model.n_tokens), "length": int(args.length or model.context_length), "prefixes": True},
        procedures=procs, checkpoint_dir=args.checkpoint_dir,
        seeds={"seed": args.seed, "n_chains": args.chains, "n_steps": args.steps, "basin_chains": args.basin_chains,
               "level": args.level, "rule": "chain starts default_rng([seed, a]); rollouts seed * 100003 + i "
                                            "(see each check's settings)"} if sample else None)
    print(f"\nreport written to {path}")
    if sample:
        print("all agreement checks passed" if ok else "SOME AGREEMENT CHECKS FAILED")
    return 0 if ok else 1


def _parse_prompt(text: str) -> list[int]:
    from ..errors import PromptError

    try:
        prompt = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise PromptError(f"cannot read the prompt {text!r}: write comma-separated token ids, e.g. 0,1,2") from None
    if not prompt:
        raise PromptError("the prompt is empty: give at least one token id, e.g. --prompt 0")
    return prompt


def _run_sample(args) -> int:
    import numpy as np

    from ..montecarlo import Sampler
    from ..core.procedure import parse

    model = load_model(args.model)
    prompt = [0] if args.prompt is None else _parse_prompt(args.prompt)
    sampler = Sampler(model, parse(args.procedure), model.context_length)
    toks = sampler.sample(np.tile(np.asarray(prompt), (args.chains, 1)), args.steps, seed=args.seed)
    print(f"model {args.model}, procedure {parse(args.procedure).spec}, prompt {prompt}, seed {args.seed}")
    for c in range(args.chains):
        print(f"  chain {c}: " + "".join(map(str, prompt)) + " | " + "".join(str(int(t)) for t in toks[c]))
    return 0


def _run_demo(args) -> int:
    from .pipeline import analyze
    from .report import Report

    t0 = time.perf_counter()
    report = Report(args.out, title="semio demo: the shipped zoo as exact dynamical systems")
    ok = True
    for name, procs in DEMO_PLAN:
        model = load_model(name)
        for spec in procs:
            summary = analyze(model, spec, seed=args.seed, report=report, model_name=name)
            ok &= summary["all_checks_passed"]
    report.section("Run", f"Total wall time {time.perf_counter() - t0:.1f} s. Re-run with `semio demo --seed {args.seed}`.")
    cards = {name: (getattr(load_model(name), "card", None) or {}) for name, _ in DEMO_PLAN}
    import inspect

    budget = {k: v.default for k, v in inspect.signature(analyze).parameters.items()
              if k in ("n_chains", "n_steps", "basin_chains", "level")}  # the demo runs with analyze's defaults
    path = report.write(command=args.command_line, plan=DEMO_PLAN, seeds={"seed": args.seed, **budget},
                        models={name: {"weights_sha256": c.get("weights_sha256"),
                                       "space": {"n_tokens": c.get("config", {}).get("n_tokens"),
                                                 "length": c.get("config", {}).get("context_length"),
                                                 "prefixes": True}} for name, c in cards.items()})
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s; report written to {path}")
    print("all agreement checks passed" if ok else "SOME AGREEMENT CHECKS FAILED")
    return 0 if ok else 1


def _run_zoo() -> int:
    from semio_models.checkpoint import load_card, zoo_names

    from .report import text_table

    rows = []
    for name in zoo_names():
        card = load_card(name)
        cfg = card.get("config", {})
        rows.append([name, cfg.get("n_tokens"), cfg.get("context_length"), str(card.get("source", {}).get("kind", card.get("source"))),
                     card.get("exact_last_position_loss", card.get("exact_loss_last")), card.get("source_conditional_entropy_last",
                     card.get("source_entropy_rate"))])
    print(text_table(["name", "N", "L", "source", "exact loss (nats)", "source entropy (nats)"], rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..errors import SemioError

    args = build_parser().parse_args(argv)
    import shlex

    args.command_line = "semio " + shlex.join(sys.argv[1:] if argv is None else list(argv))  # for provenance
    enable_compilation_cache()
    try:
        if args.command == "train":
            from semio_models.train import run as train_run

            return int(train_run(args) or 0)
        if args.command == "zoo":
            return _run_zoo()
        if args.command == "analyze":
            return _run_analyze(args, sample=not args.no_sample)
        if args.command == "check":
            return _run_analyze(args, sample=True)
        if args.command == "sample":
            return _run_sample(args)
        if args.command == "demo":
            return _run_demo(args)
        if getattr(args, "plugin", None):
            import importlib

            return int(importlib.import_module(args.plugin).run(args) or 0)
    except SemioError as e:
        print(f"semio: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``semio`` command.

  semio zoo                                   list the shipped models
  semio train  --source SPEC --out DIR ...    train a tiny transformer on a source, text or token file
  semio analyze MODEL [-p SPEC ...] [--prompt P ...] [--target T] [--out DIR [--force]] [--no-sample]
  semio sample  MODEL -p SPEC --prompt 0,1 --steps 20 --chains 4 --seed 0
  semio check   MODEL -p SPEC [--chains C --steps T --level A] [--out DIR [--force]]
  semio sweep   MODEL --param top_p=0.3,0.5,0.9 [-p BASE] [--out DIR [--force]]
  semio demo    [--out DIR] [--force]

MODEL is a zoo name (``coin``, ``markov2``, ``dyck``), a folder holding
``weights.msgpack`` and ``card.json``, or a Python file ``FILE.py[:NAME]``
whose object NAME (default ``model``) is a model with ``n_tokens`` and
``context_length`` (e.g. ``FunctionModel(fn, n_tokens=3, context_length=4)``;
a plain numpy ``fn`` is detected and run outside jit). SPEC is a procedure
such as ``temperature=0.8,top_k=3`` or ``greedy`` (see semio_jax.sampling).
Prompts and targets are written as ``semio sample`` prints them (see
semio_jax.app.prompts): ``0,1,2``, ``012`` for N <= 10, text for text models.

A report folder is never silently replaced: a non-empty ``--out`` is refused
unless ``--force``. The report is written again after each procedure, so
Ctrl-C (one line, exit status 130) keeps the procedures already finished.
Progress bars and step announcements go to stderr when it is a terminal
(``--quiet`` turns them off).

Exit status: 0 on success (``semio check``: every check PASSed), 1 when an
agreement check FAILs, 2 on bad input (a named semio_jax error, printed without
a traceback), 3 when ``semio check`` is INCONCLUSIVE (no check failed, but the
budget could not support a valid test of some part: the message says which
budget would; see semio_jax.agreement), 130 on Ctrl-C.
"""

from __future__ import annotations

import _thread
import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from .._util.compile_cache import enable_compilation_cache

__all__ = ["main", "build_parser", "load_model"]


def load_model(name: str):
    """A zoo name, checkpoint folder (hash verified on load) or ``FILE.py[:NAME]`` -> model."""
    path, _, attr = name.partition(":") if ".py:" in name or name.endswith(".py") else (name, "", "")
    if path.endswith(".py"):
        return _load_python_model(Path(path), attr or "model")
    from semio_models.checkpoint import load

    return load(name)


def _load_python_model(path: Path, attr: str):
    """The object ``attr`` of the Python file ``path`` (run without writing bytecode next to it)."""
    import importlib.util

    from ..errors import UnknownModelError

    if not path.is_file():
        raise UnknownModelError(f"no Python file {path}")
    spec = importlib.util.spec_from_file_location(f"semio_user_model_{abs(hash(str(path.resolve())))}", path)
    module = importlib.util.module_from_spec(spec)
    old, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # running a command never writes beside the file
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = old
    model = getattr(module, attr, None)
    if model is None:
        raise UnknownModelError(f"{path} defines no {attr!r}; name the model with {path}:NAME")
    if getattr(model, "n_tokens", None) is None or getattr(model, "context_length", None) is None:
        raise UnknownModelError(f"{path}:{attr} needs n_tokens and context_length; wrap a function as "
                                f"semio_jax.FunctionModel(fn, n_tokens=N, context_length=L)")
    return model


def model_alphabet(model):
    """A text model's alphabet (see semio_jax.app.prompts), from its card through semio_models.alphabet;
    None for a token model (or where that helper is not installed)."""
    card = getattr(model, "card", None) or {}
    if not card.get("alphabet"):
        return None
    try:
        from semio_models.alphabet import alphabet_from_card
    except ModuleNotFoundError:
        return None
    return alphabet_from_card(card)


def _model_name(arg: str) -> str:
    head = arg.partition(":")[0] if ".py" in arg else arg
    return Path(head).stem if head.endswith(".py") else Path(head).name


def _progress(args) -> bool:
    """Progress bars and step announcements: on a terminal, unless --quiet."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


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


def _add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="report folder (default reports/<model>); refused if not empty")
    p.add_argument("--force", action="store_true", help="replace the report in a non-empty --out (its old "
                                                          "report files, figures included, are removed first)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or step announcements")


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
                           ("check", "exact-vs-sampled agreement tests only; prints PASS / FAIL / INCONCLUSIVE")):
        p = sub.add_parser(name, help=helptext, epilog=CHECK_EXIT if name == "check" else None)
        p.add_argument("model", help="zoo name, checkpoint folder or FILE.py[:NAME]")
        p.add_argument("-p", "--procedure", action="append", default=None,
                       help="sampling procedure spec, repeatable (default temperature=1); several are also "
                            "compared side by side")
        p.add_argument("--length", type=_int_at_least(1), default=None, help="context length L (default: the model's)")
        _add_report_args(p)
        p.add_argument("--prompt", action="append", default=None,
                       help="a prompt, repeatable: comma-separated tokens (0,1,2), digits for N <= 10 (012), or text "
                            "for a text model; the basin table starts from these (default: the one-token prompts)")
        p.add_argument("--target", default=None,
                       help="hitting times to the states that end with these tokens, from each prompt")
        p.add_argument("--no-prefixes", dest="prefixes", action="store_false",
                       help="full-length contexts only (a model that cannot read contexts shorter than L)")
        p.add_argument("--checkpoint-dir", "--resume", dest="checkpoint_dir", default=None, metavar="DIR",
                       help="write the model's logits to DIR chunk by chunk while the operator is built, and resume "
                            "an interrupted build from there (bitwise the same result; see semio_jax.build.checkpointed)")
        _add_sampling_args(p, chains=64, steps=2000)
        if name == "analyze":
            p.add_argument("--no-sample", action="store_true", help="exact analyses only, no sampling checks")
            p.add_argument("--all", action="store_true",
                           help="also the whole toolkit: entropy rate, evolution, mixing, bounds, hitting, "
                                "committor, trajectories, sensitivity, metastability, sweeps (each with its check), "
                                "zero-temperature limit")
            p.add_argument("--analyses", default=None,
                           help="comma-separated subset of the toolkit: entropy, evolution, mixing, hitting, "
                                "trajectories, sensitivity, metastable, sweep, zero_temperature (implies --all for those)")

    p = sub.add_parser("sample", help="print sampled continuations of a prompt")
    p.add_argument("model")
    p.add_argument("-p", "--procedure", default="temperature=1")
    p.add_argument("--prompt", default=None,
                   help="comma-separated token ids (0,1), digits for N <= 10 (01), or text for a text model; "
                        "printed back the same way (default: token 0)")
    p.add_argument("--steps", type=_int_at_least(0), default=20)
    p.add_argument("--chains", type=_int_at_least(1), default=4)
    p.add_argument("--seed", type=_int_at_least(0), default=0)

    p = sub.add_parser("sweep", help="one procedure parameter over chosen values, side by side")
    p.add_argument("model", help="zoo name, checkpoint folder or FILE.py[:NAME]")
    p.add_argument("--param", required=True, metavar="NAME=V1,V2,...",
                   help="temperature, top_k, top_p or min_p and its values, e.g. top_p=0.3,0.5,0.9")
    p.add_argument("-p", "--procedure", default="temperature=1",
                   help="base procedure whose other stages are kept (default temperature=1)")
    p.add_argument("--length", type=_int_at_least(1), default=None, help="context length L (default: the model's)")
    p.add_argument("--no-prefixes", dest="prefixes", action="store_false", help="full-length contexts only")
    p.add_argument("--out", default=None, help="also write a report folder (results.json, figure)")
    p.add_argument("--force", action="store_true", help="replace the report in a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("demo", help="the main job on the shipped zoo, written to a report")
    p.add_argument("--out", default="reports/demo", help="report folder (default reports/demo)")
    p.add_argument("--force", action="store_true", help="replace the report in a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    for mod in _plugins():
        mod.register(sub)
    return parser


# Subcommands defined in other modules. Each module provides
#   register(subparsers) -> None   (adds its parser(s); set_defaults(plugin=<module name>))
# and the module named by plugin (imported only when its subcommand runs) provides
#   run(args) -> int               (exit status)
# A module that is missing (e.g. an optional extra) is skipped silently.
PLUGINS = ("semio_jax.app.interop", "semio_proofs.command", "semio_models.importers")


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


CHECK_EXIT = ("exit status: 0 PASS (every test passed), 1 FAIL (some test rejected the exact operator at the "
              "family-wise level), 2 bad input, 3 INCONCLUSIVE (nothing failed, but the budget could not support a "
              "valid test of some part, or of anything: the message states the budget that would), 130 Ctrl-C")

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
    from .pipeline import analyze, compare_table
    from .prompts import parse_tokens
    from .report import Report, markdown_table, text_table
    from ..build.checkpointed import using_checkpoint_dir
    from ..core.procedure import parse

    procs = [parse(spec).spec for spec in args.procedure or ["temperature=1"]]  # all checked before any work
    toolkit = _toolkit_sections(args)
    model = load_model(args.model)
    n = int(model.n_tokens)
    alphabet = model_alphabet(model)
    prompts = [parse_tokens(p, n, alphabet) for p in args.prompt] if args.prompt else None
    target = parse_tokens(args.target, n, alphabet, what="target") if args.target else None
    name = _model_name(args.model)
    out = args.out or f"reports/{name}"
    report = Report(out, title=f"semio {args.command}: {name}", force=args.force)
    args.report_dir = report.out_dir  # for the Ctrl-C message
    card = getattr(model, "card", None) or {}
    length = int(args.length or model.context_length)
    provenance = dict(
        command=args.command_line, model_card=card or None, model=name, weights_sha256=card.get("weights_sha256"),
        space={"n_tokens": n, "length": length, "prefixes": args.prefixes},
        procedures=procs, prompts=prompts, target=target, checkpoint_dir=args.checkpoint_dir,
        seeds={"seed": args.seed, "n_chains": args.chains, "n_steps": args.steps, "basin_chains": args.basin_chains,
               "level": args.level, "rule": "chain starts default_rng([seed, a]); rollouts seed * 100003 + i "
                                            "(see each check's settings)"} if sample else None)
    summaries = []
    with using_checkpoint_dir(args.checkpoint_dir):
        for spec in procs:
            summary = analyze(model, spec, length=args.length, sample=sample, seed=args.seed, n_chains=args.chains,
                              n_steps=args.steps, basin_chains=args.basin_chains, level=args.level, report=report,
                              model_name=name, toolkit=toolkit, prompts=prompts, target=target,
                              prefixes=args.prefixes, progress=_progress(args),
                              alphabet=getattr(alphabet, "symbols", None))
            summaries.append(summary)
            args.finished = len(summaries)
            path = report.write(**provenance, finished=[s["procedure"] for s in summaries])  # atomic, per procedure
            _stop_if_interrupted()
    if len(summaries) > 1:
        headers, rows = compare_table(summaries)
        print("\n" + text_table(headers, rows, title="procedures side by side"))
        report.section("Procedures side by side", markdown_table(headers, rows))
        path = report.write(**provenance, finished=[s["procedure"] for s in summaries])
    print(f"\nreport written to {path}")
    if not sample:
        return 0
    from ..agreement import combined_verdict

    verdict = combined_verdict([s["verdict"] for s in summaries])
    print({"PASS": "PASS: all agreement checks passed", "FAIL": "FAIL: SOME AGREEMENT CHECKS FAILED",
           "INCONCLUSIVE": "INCONCLUSIVE: no check failed, but the budget could not support a valid test of "
                           "everything (see the notes above for the budget needed)"}[verdict])
    return {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3 if args.command == "check" else 0}[verdict]


def _run_sample(args) -> int:
    import numpy as np

    from .prompts import format_tokens, parse_tokens
    from ..montecarlo import Sampler
    from ..core.procedure import parse

    proc = parse(args.procedure)
    model = load_model(args.model)
    n = int(model.n_tokens)
    alphabet = model_alphabet(model)
    prompt = [0] if args.prompt is None else parse_tokens(args.prompt, n, alphabet)
    sampler = Sampler(model, proc, model.context_length)
    toks = sampler.sample(np.tile(np.asarray(prompt), (args.chains, 1)), args.steps, seed=args.seed)
    shown = format_tokens(prompt, n, alphabet)
    print(f"model {args.model}, procedure {proc.spec}, prompt {shown}, seed {args.seed}")
    for c in range(args.chains):
        print(f"  chain {c}: {shown} | {format_tokens(toks[c], n, alphabet)}")
    return 0


def _parse_param(text: str) -> tuple[str, list]:
    """'top_p=0.3,0.5,0.9' -> ('top_p', [0.3, 0.5, 0.9]), each value checked as a procedure."""
    from ..analysis.sweeps import SWEEP_PARAMETERS
    from ..core.procedure import parse
    from ..errors import InvalidProcedureError

    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or key not in SWEEP_PARAMETERS:
        raise InvalidProcedureError(f"cannot read --param {text!r}: write NAME=V1,V2,... with NAME one of "
                                    f"{', '.join(SWEEP_PARAMETERS)}, e.g. top_p=0.3,0.5,0.9")
    vals = [v.strip() for v in values.split(",") if v.strip()]
    if not vals:
        raise InvalidProcedureError(f"--param {text!r} gives no values")
    out = []
    for v in vals:
        proc = parse(f"{key}={v}")  # InvalidProcedureError for a value the procedure cannot take
        out.append(getattr(proc, key))
    return key, out


def _run_sweep(args) -> int:
    from .report import Report
    from ..analysis import sweep, sweep_figure
    from ..build import build_operator
    from ..core.procedure import parse
    from ..core.space import StateSpace

    key, values = _parse_param(args.param)
    base = parse(args.procedure)
    if base.greedy:
        from ..errors import InvalidProcedureError

        raise InvalidProcedureError("a sweep varies a sampling parameter; the base procedure cannot be greedy")
    model = load_model(args.model)
    name = _model_name(args.model)
    report = Report(args.out, title=f"semio sweep: {name}, {key}", force=args.force) if args.out else None
    space = StateSpace(int(model.n_tokens), int(args.length or model.context_length), prefixes=args.prefixes)
    op = build_operator(model, space, base.validate_for(space.n_tokens), progress=_progress(args))
    result = sweep(op, key, values, analyses=("attractors", "entropy_rate", "spectral_gap", "top_states", "greedy_mass"))
    print(f"== {name} | N={space.n_tokens} L={space.length} | {space.num_states} states")
    print(result.table())
    if report is not None:
        report.result("sweep", result.summary())
        fig = report.figure(f"sweep_{key}", sweep_figure(result, title=f"{name}: {key}"))
        report.section(f"{name}: sweep of {key}", f"```\n{result.table()}\n```\n\n![{fig}]({fig})")
        print(f"\nreport written to {report.write(command=args.command_line, model=name, parameter=key, values=values)}")
    return 0


def _run_demo(args) -> int:
    from .pipeline import analyze
    from .report import Report

    t0 = time.perf_counter()
    report = Report(args.out, title="semio demo: the shipped zoo as exact dynamical systems", force=args.force)
    args.report_dir = report.out_dir
    ok = True
    for name, procs in DEMO_PLAN:
        model = load_model(name)
        for spec in procs:
            summary = analyze(model, spec, seed=args.seed, report=report, model_name=name, progress=_progress(args))
            ok &= summary["verdict"] != "FAIL"
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
    print("no agreement check failed" if ok else "SOME AGREEMENT CHECKS FAILED")
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
    previous = _catch_ctrl_c()
    hook = sys.unraisablehook
    quiet = sys.unraisablehook = _quiet_ctrl_c(hook)
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
        if args.command == "sweep":
            return _run_sweep(args)
        if args.command == "demo":
            return _run_demo(args)
        if getattr(args, "plugin", None):
            import importlib

            return int(importlib.import_module(args.plugin).run(args) or 0)
    except SemioError as e:
        print(f"semio: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = getattr(args, "report_dir", None)
        done = getattr(args, "finished", 0)
        print("\nsemio: interrupted" + (f"; {done} finished procedure(s) kept in {where}" if where and done else ""),
              file=sys.stderr)
        return 130
    finally:
        quiet.stop()  # (a re-delivery still pending would interrupt main's caller)
        sys.unraisablehook = hook
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return 2


_CTRL_C = []  # set by the SIGINT handler: a Ctrl-C seen, even where its KeyboardInterrupt was swallowed


def _catch_ctrl_c():
    """Install a SIGINT handler that remembers the Ctrl-C besides raising KeyboardInterrupt.

    A KeyboardInterrupt raised while Python runs a finalizer or a callback (numba's and JAX's
    clean-up code, garbage collection) is printed and dropped, and the run would go on; the
    flag lets the loop over procedures stop at the next one all the same. Returns the previous
    handler (None where none is installed: not the main thread, or SIGINT ignored, as for a
    background job, which a Ctrl-C at the terminal must not stop)."""
    _CTRL_C.clear()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return None

    def handler(signum, frame):
        _CTRL_C.append(signum)
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGINT, handler)
    except ValueError:
        return None


def _quiet_ctrl_c(previous):
    """An unraisable-exception hook for a Ctrl-C that landed in a finalizer or a callback (JAX's and
    numba's clean-up, garbage collection), where Python cannot raise it and would print "Exception
    ignored in" with a traceback: nothing is printed and the interrupt is delivered again to the main
    thread a millisecond later (from a timer thread: delivered now, it would land in this hook and be
    dropped in turn), where it stops the run with its one line. Anything else goes to ``previous``.
    ``hook.stop()`` (once the run is over) cancels the re-deliveries still pending."""
    lock, running = threading.Lock(), [True]

    def deliver():
        with lock:
            if running[0]:
                _thread.interrupt_main()  # (runs the SIGINT handler again)

    def hook(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            threading.Timer(0.001, deliver).start()
            return
        previous(unraisable)

    def stop():
        with lock:
            running[0] = False

    hook.stop = stop
    return hook


def _stop_if_interrupted() -> None:
    if _CTRL_C:
        raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())

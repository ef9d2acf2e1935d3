"""The ``semio proofs`` command line: arguments and registration only (standard library, nothing heavy).

The CLI (``semio_jax.app.cli``) imports this module to add the subcommand, so
``semio --help`` works without the test extra (hypothesis), which the
validations need; running the subcommand imports :mod:`semio_proofs.runner`
(named by ``plugin``), whose ``run(args)`` does the work.
"""

from __future__ import annotations

import argparse

__all__ = ["DEFAULT_OUT", "add_arguments", "register"]

#: Report folder of ``semio proofs`` (relative to the working directory); never the source tree.
DEFAULT_OUT = "reports/proofs"

DESCRIPTION = ("Validate the propositions of semio_proofs (statements about model dynamics, proofs/*.md) and "
               "compare each observed status with the status recorded in its .md file. Results and the "
               "counterexamples found go to a report folder (--out, default reports/proofs); the shipped "
               "files under proofs/ are only read. Exit status: 0 every observed status equals its recorded "
               "one; 1 one differs, or a replayed counterexample no longer violates its statement; 2 bad input.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="reduced budget (what the test suite runs)")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this proposition (name or unique prefix; repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hypothesis searches and random models (default 0)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"report folder for results.md, results.json and counterexamples/ (default {DEFAULT_OUT}); "
                        "with --replay: read the counterexample from DIR/counterexamples/ instead of the shipped one")
    p.add_argument("--no-write", action="store_true", help="print the table only, write nothing")
    p.add_argument("--replay", metavar="NAME",
                   help="re-check the shipped counterexample of NAME (proofs/counterexamples/) and show the violation")
    p.add_argument("--list", action="store_true", help="list the propositions with their recorded status")


def register(subparsers) -> None:
    p = subparsers.add_parser("proofs", help="validate the propositions of semio_proofs (statements about model "
                              "dynamics) against their recorded statuses", description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(plugin="semio_proofs.runner")

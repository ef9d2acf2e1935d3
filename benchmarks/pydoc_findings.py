"""What the engine finds on the `pydoc` zoo model (characters of CPython's documentation, N=27, L=4).

Prints, as text: the greedy cycles (repetition loops) with their basins, greedy
continuations of text prompts, the attractors under top-k sampling with their
entropy rates and the basins of text prompts, and the entropy rate at
temperature 1 beside the corpus's empirical conditional entropy. Writes the
same as Markdown to benchmarks/results/pydoc_findings.md.

    python benchmarks/pydoc_findings.py [--procedures top_k=2 top_p=0.5 ...] [--no-temperature]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import semio_jax as sj
from semio_jax._util.io import atomic_write_text
from semio_jax.app.report import markdown_table
from semio_models.alphabet import alphabet_from_card
from semio_models.checkpoint import load

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ["the ", "def ", "import ", "class ", "return ", "python ", "a ", "x", "q", "zzz", "xx", "ffff"]


def text_of(space, alpha, state) -> str:
    return alpha.decode(space.tokens(int(state)))


def loop_text(space, alpha, cycle) -> str:
    """The characters emitted once around a cycle of states (each state's newest token), from a word start."""
    text = "".join(text_of(space, alpha, s)[-1] for s in cycle)
    cut = text.find(" ") + 1  # rotate the loop to begin after a space (loops have no start)
    return text[cut:] + text[:cut]


def prompt_state(space, alpha, prompt: str) -> int:
    tokens = alpha.encode_prompt(prompt)[-space.length:]
    return space.index(tokens)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="pydoc")
    ap.add_argument("--procedures", nargs="*", default=["top_k=2", "top_k=3", "top_p=0.5"],
                    help="sampling procedures whose attractors and prompt basins to show")
    ap.add_argument("--no-temperature", action="store_true", help="skip the temperature=1 entropy rate")
    ap.add_argument("--out", default=str(RESULTS / "pydoc_findings.md"))
    args = ap.parse_args(argv)
    model = load(args.model)
    card = model.card
    alpha = alphabet_from_card(card)
    space = sj.StateSpace(model.n_tokens, model.context_length)
    md = [f"# What the engine finds on the `{args.model}` zoo model", "",
          f"N={space.n_tokens}, L={space.length}: {space.num_states} states ({space.num_full} full). "
          f"Exact loss (last position) {card['exact_last_position_loss']:.4f} nats/char vs the corpus's "
          f"H(X5 | X1..4) = {card['source_conditional_entropy_last']:.4f}.", ""]

    def say(*lines):
        for line in lines:
            print(line)
            md.append(line)

    # ---------------------------------------------------------------- greedy
    t0 = time.perf_counter()
    op = sj.build_operator(model, space, "greedy")
    g = sj.greedy_dynamics(op)
    t_greedy = time.perf_counter() - t0
    sizes = np.bincount(g.cycle_of, minlength=len(g.cycles))
    full = np.bincount(g.cycle_of[: space.num_full], minlength=len(g.cycles))
    rows = [[i, len(c), repr(loop_text(space, alpha, c) * 2), int(sizes[i]), int(full[i])]
            for i, c in enumerate(g.cycles)]
    say(f"## Greedy (temperature 0): {len(g.cycles)} cycles, longest tail {int(g.tail.max())} "
        f"(build + analysis {t_greedy:.1f} s)", "")
    say(markdown_table(["cycle", "period", "loop as text (twice)", "basin (states)", "basin (full states)"], rows), "")
    prow = []
    for p in PROMPTS:
        s = prompt_state(space, alpha, p)
        orbit = g.orbit(s, 40)
        cont = "".join(text_of(space, alpha, x)[-1] for x in orbit[1:])
        prow.append([repr(p), repr(cont), int(g.cycle_of[s]), int(g.tail[s])])
    say(markdown_table(["prompt", "greedy continuation (40 chars)", "cycle", "steps to the loop"], prow), "")

    # ---------------------------------------------------------------- top-k
    for proc in args.procedures:
        t0 = time.perf_counter()
        op = sj.build_operator(model, space, proc)
        att = sj.attractors(op)
        per = sj.periods(op)
        rates = sj.entropy_rate(op)
        b = sj.basins_result(op)
        pi = sj.stationary(op)  # [m, S]
        dt = time.perf_counter() - t0
        say(f"## {proc}: {len(att)} attractor(s) ({dt:.1f} s)", "")
        arows = []
        for a, members in enumerate(att):
            if len(members) <= 40 and len(members) == per[a]:  # a single loop: print it as text
                mset, state = set(members.tolist()), int(members[0])
                cyc = [state]
                for _ in range(len(members) - 1):  # the one positive-probability move that stays inside
                    state = next(int(t) for t, q in zip(op.successors[state], op.probs[state])
                                 if q > 0 and int(t) in mset)
                    cyc.append(state)
                what = repr(loop_text(space, alpha, cyc) * 2)
            else:
                top = members[np.argsort(-pi[a][members], kind="stable")[:5]]
                what = "most probable: " + ", ".join(f"{text_of(space, alpha, s)!r} {pi[a][s]:.3f}" for s in top)
            arows.append([f"A{a}", len(members), int(per[a]), f"{rates.nats[a]:.4f}", len(b.strict[a]), what])
        say(markdown_table(["attractor", "states", "period", "entropy rate (nats/char)", "basin (w.p. 1)",
                            "members"], arows), "",
            f"{b.split.size} states can end in more than one attractor.", "")
        if b.split.size:  # the split states closest to a coin toss between attractors
            closest = np.argsort(b.split_probabilities.max(1), kind="stable")[:5]
            rows = [[repr(text_of(space, alpha, b.split[i]))] + [f"{x:.4g}" for x in b.split_probabilities[i]]
                    for i in closest]
            say("States whose fate is most uncertain:", "",
                markdown_table(["state"] + [f"P(->A{a})" for a in range(len(att))], rows), "")
        brow = []
        for p in PROMPTS:
            h = b.rows(np.array([prompt_state(space, alpha, p)]))[0]
            brow.append([repr(p)] + [f"{x:.4g}" for x in h])
        say(markdown_table(["prompt"] + [f"P(->A{a})" for a in range(len(att))], brow), "")

    # ---------------------------------------------------------------- temperature 1
    if not args.no_temperature:
        t0 = time.perf_counter()
        op = sj.build_operator(model, space, "temperature=1")
        att = sj.attractors(op)
        rates = sj.entropy_rate(op)
        dt = time.perf_counter() - t0
        say(f"## temperature=1: {len(att)} attractor(s) ({dt:.1f} s)", "")
        for a, members in enumerate(att):
            bound = rates.error_bounds[a]
            say(f"- A{a}: {len(members)} states, entropy rate {rates.nats[a]:.5f} nats/char "
                f"(certified error {bound:.2g})" if bound is not None else
                f"- A{a}: {len(members)} states, entropy rate {rates.nats[a]:.5f} nats/char")
        say(f"- corpus: H(X5 | X1..4) = {card['source_conditional_entropy_last']:.5f} nats/char (the entropy rate of "
            f"the order-4 chain fitted to the corpus); the model's exact cross-entropy on the corpus "
            f"{card['exact_last_position_loss']:.5f}", "")
    md += ["", f"Command: `python {' '.join(sys.argv)}`"]
    atomic_write_text(args.out, "\n".join(md) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

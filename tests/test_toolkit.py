"""app/toolkit.py: each section declared once (exact analysis + its check), overrides of prompt and target."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import semio_jax as sj  # noqa: E402
from semio_jax.app.toolkit import SECTIONS, TOOLKIT, run_toolkit, toolkit_context  # noqa: E402

TABLE = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.5, 0.1, 0.4]]))


@pytest.fixture(scope="module")
def bigram():
    model = sj.NGramModel(TABLE)
    model.context_length = 3
    return model, sj.build_operator(model, sj.StateSpace(3, 3), "temperature=1")


def test_every_section_is_declared_once():
    assert SECTIONS == tuple(s.name for s in TOOLKIT)
    assert len(set(SECTIONS)) == len(SECTIONS)
    assert all(callable(s.exact) for s in TOOLKIT)


def test_each_section_runs_beside_its_own_check(bigram):
    model, op = bigram
    lines = []
    out = run_toolkit(op, model, model_name="bigram", sample=True, echo=lines.append,
                      sections=("evolution", "hitting"), seed=1)
    titles = [c["title"] for c in out["checks"]]
    assert len(titles) == 2  # one check per section
    text = "\n".join(lines)
    assert text.index("P(token at step t") < text.index(titles[0]) < text.index("E[steps to hit") < text.index(titles[1])
    assert out["all_checks_passed"]


def test_prompt_and_target_override_the_automatic_choices(bigram):
    model, op = bigram
    space = op.space
    target = np.array([space.index([2, 2, 2])])
    prompt = space.index([1])
    out = run_toolkit(op, model, model_name="bigram", sample=False, echo=lambda s: None,
                      sections=("hitting",), prompt=prompt, target=target)
    assert out["prompt"] == "1" and out["hitting_target"] == "222"
    # independent first-step equations for E[steps to 222] on the bigram chain: states are the last two tokens
    z = TABLE.astype(np.float32).astype(np.float64)  # the model's own float32 logits
    q = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    pairs = [(a, b) for a in range(3) for b in range(3)]
    idx = {p: i for i, p in enumerate(pairs)}
    a_mat, rhs = np.eye(9), np.ones(9)
    for (a, b), i in idx.items():
        for y in range(3):
            if not (a == 2 and b == 2 and y == 2):
                a_mat[i, idx[(b, y)]] -= q[b, y]
    t_pair = np.linalg.solve(a_mat, rhs)  # from a window ending a, b (not yet 222)
    # from prompt "1": first step to "1y" (2 tokens), then to "1yz", all windows tracked by their last two tokens
    want = 1 + sum(q[1, y] * (1 + sum(q[y, z] * t_pair[idx[(y, z)]] for z in range(3)))
                   for y in range(3))
    assert out["hitting"]["from_prompt"] == pytest.approx(want, rel=1e-10)


def test_next_token_figure_starts_at_t_1(bigram):
    model, op = bigram
    ctx = toolkit_context(op, model, model_name="bigram")
    section = TOOLKIT[SECTIONS.index("evolution")]
    found = section.exact(ctx)
    (name, fig), = found.figures
    ax = fig.axes[0]
    xs = ax.lines[0].get_xdata()
    assert xs[0] == 1 and xs[-1] == ctx.horizon
    np.testing.assert_allclose(ax.lines[0].get_ydata(), found.arrays["token_marginals"][:, 0])
    assert ax.get_xlabel() and ax.get_ylabel()
    plt.close(fig)

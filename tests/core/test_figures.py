"""Figures that explain themselves: :func:`mechmem.pages.figures.figure_problems` finds what the issue listed
(no colorbar, no title, one label for several panels, legend keys, unexplained lines), and every figure of
every paper's smoke reproduction passes it."""

from __future__ import annotations

import numpy as np
import pytest

from mechmem.contract.registry import PAPERS
from mechmem.pages.figures import figure_problems, plain_log_axes, subplots


def _good():
    fig, (a, b) = subplots(1, 2)
    im = a.imshow(np.arange(9.0).reshape(3, 3))
    fig.colorbar(im, ax=a, label="probability")
    a.set(title="memory", xlabel="class y", ylabel="token x")
    b.plot([1, 2], [3, 4], label="SGD")
    b.plot([1, 2], [4, 5], ls=":", label="theory")
    b.legend()
    b.set(title="error", xlabel="d", ylabel="error (probability)")
    return fig, a, b


def test_a_figure_that_explains_itself_has_no_problems():
    assert figure_problems(_good()[0]) == []


@pytest.mark.parametrize(
    "spoil, expected",
    [
        (lambda fig, a, b: (a.set_title(""), b.set_title("")), "no title"),
        (lambda fig, a, b: b.set_ylabel(""), "panel 1 (error): no y label"),
        (lambda fig, a, b: a.imshow(np.zeros((2, 2)), cmap="magma"), "a heat map without a colorbar"),
        (lambda fig, a, b: (b.plot([1, 2], [1, 1], label="B16_lr1"), b.legend()), "legend entry 'B16_lr1'"),
        (lambda fig, a, b: b.plot([1, 2], [2, 2], ls="--"), "a -- line is in no legend"),
    ],
)
def test_what_keeps_a_figure_from_explaining_itself_is_named(spoil, expected):
    fig, a, b = _good()
    spoil(fig, a, b)
    found = figure_problems(fig)
    assert any(expected in problem for problem in found), f"expected {expected!r} among {found}"


def test_panels_in_one_row_share_the_y_label_of_the_first():
    fig, axes = subplots(1, 3)
    for i, ax in enumerate(axes):
        ax.imshow(np.eye(3), vmin=0, vmax=1)
        ax.set(title=f"step {i}", xlabel="class y")
    axes[0].set_ylabel("token x")
    fig.colorbar(axes[-1].images[0], ax=list(axes), label="probability")
    assert figure_problems(fig) == []


def test_plain_log_axes_write_plain_numbers():
    fig, ax = subplots()
    ax.loglog([1500, 2200], [20, 300], "o-", label="facts")
    ax.set(title="t", xlabel="parameters", ylabel="facts")
    plain_log_axes(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("times" not in t and "^" not in t for t in labels), labels


@pytest.mark.parametrize("paper", PAPERS)
def test_every_figure_of_the_smoke_reproductions_explains_itself(paper, smoke_outputs):
    smoke_outputs(paper)
    found = smoke_outputs.figure_problems[paper]
    assert found, f"{paper}: no figure was audited"
    bad = {name: problems for name, problems in found.items() if problems}
    assert not bad, f"{paper}: figures that do not explain themselves: {bad}"

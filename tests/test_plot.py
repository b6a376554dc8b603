"""attncourse.plot: matplotlib objects come back, labels show, wrong shapes raise."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from attncourse import masks as M  # noqa: E402
from attncourse import plot  # noqa: E402

TOKENS_Q = ["the", "cat", "sat"]
TOKENS_K = ["le", "chat", "est", "assis"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def no_show(monkeypatch):
    """Fail if a plotting function tries to show a window."""

    def refuse(*args, **kwargs):
        raise AssertionError("plot functions must not call show()")

    monkeypatch.setattr(plt, "show", refuse)
    monkeypatch.setattr(Figure, "show", refuse)


def _tick_texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


def test_heatmap_returns_axes_with_labels(no_show):
    weights = torch.softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), -1)
    ax = plot.attention_heatmap(weights, TOKENS_Q, TOKENS_K, title="cross-attention")
    assert isinstance(ax, Axes)
    assert _tick_texts(ax.get_xticklabels()) == TOKENS_K  # columns are keys
    assert _tick_texts(ax.get_yticklabels()) == TOKENS_Q  # rows are queries
    assert ax.get_xlabel() == "key" and ax.get_ylabel() == "query"
    assert ax.get_title() == "cross-attention"
    image = ax.get_images()[0].get_array()
    np.testing.assert_allclose(image, weights.numpy(), rtol=1e-6)
    annotations = [text.get_text() for text in ax.texts]
    assert f"{weights[0, 0].item():.2f}" in annotations and len(annotations) == 12


def test_heatmap_draws_into_given_axes_and_accepts_low_precision():
    fig, ax = plt.subplots()
    weights = torch.full((2, 2), 0.5, dtype=torch.bfloat16, requires_grad=True)
    assert plot.attention_heatmap(weights, ax=ax, colorbar=False) is ax
    assert len(fig.axes) == 1
    assert _tick_texts(ax.get_xticklabels()) == ["1", "2"]  # counted from 1


def test_heads_grid_returns_figure_with_one_panel_per_head(no_show):
    weights = np.full((5, 3, 4), 0.25)
    fig = plot.heads_grid(weights, TOKENS_Q, TOKENS_K, ncols=2, title="layer 0")
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.axison]
    # heads are counted from 1, as in the book
    assert [ax.get_title() for ax in visible if ax.get_images()] == [f"head {h}" for h in range(1, 6)]
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 6  # a 3 x 2 grid, the last panel switched off
    assert len(fig.axes) == 7  # and one colour bar for all heads
    assert fig._suptitle.get_text() == "layer 0"
    assert _tick_texts(visible[0].get_yticklabels()) == TOKENS_Q
    assert len(visible[0].texts) == 12  # 3 x 4 maps are small enough to carry their values
    assert not plot.heads_grid(weights, annotate=False).axes[0].texts


def test_heads_grid_shares_one_colour_scale():
    weights = np.stack([np.full((2, 2), 0.5), np.eye(2)])
    fig = plot.heads_grid(weights, colorbar=True)
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert {image.get_clim() for image in images} == {(0.0, 1.0)}
    assert len(fig.axes) == 3  # two heads and the colour bar


def test_mask_image_marks_kept_entries(no_show):
    ax = plot.mask_image(M.causal_mask(3), TOKENS_Q, TOKENS_Q, title="causal")
    assert isinstance(ax, Axes)
    marks = [text.get_text() for text in ax.texts]
    assert marks == ["1", "0", "0", "1", "1", "0", "1", "1", "1"]
    assert ax.get_title() == "causal"
    additive = M.bool_to_additive(M.causal_mask(3))
    marks_from_float = [t.get_text() for t in plot.mask_image(additive).texts]
    assert marks_from_float == marks


@pytest.mark.parametrize(
    "call, shape",
    [
        (plot.attention_heatmap, (2, 3, 4)),
        (plot.attention_heatmap, (4,)),
        (plot.heads_grid, (3, 4)),
        (plot.mask_image, (1, 3, 3)),
    ],
)
def test_wrong_shapes_raise(call, shape):
    with pytest.raises(ValueError, match=r"weights|mask"):
        call(np.zeros(shape))


def test_wrong_number_of_labels_raises():
    with pytest.raises(ValueError, match="key_labels must have 4 entries, got 3"):
        plot.attention_heatmap(np.zeros((3, 4)), TOKENS_Q, TOKENS_Q)
    with pytest.raises(ValueError, match="query_labels"):
        plot.mask_image(np.ones((2, 4), dtype=bool), TOKENS_Q, TOKENS_K)


def _luminance(rgba) -> float:
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(first, second) -> float:
    high, low = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("vmax", [None, 1.0])
def test_annotations_contrast_with_their_cells(vmax):
    """Every value is readable on its cell (WCAG contrast ratio >= 4.5), whatever the colour
    range: nearly uniform weights drawn on a 0-to-1 scale are dark cells, for instance."""
    from matplotlib.colors import to_rgba

    weights = np.array([[0.12, 0.13, 0.125], [0.0, 0.5, 1.0], [0.3, 0.6, 0.9]])
    ax = plot.attention_heatmap(weights, vmax=vmax, annotate=True)
    image = ax.get_images()[0]
    assert len(ax.texts) == 9
    for text in ax.texts:
        j, i = (round(c) for c in text.get_position())
        cell = image.cmap(image.norm(weights[i, j]))
        assert _contrast(to_rgba(text.get_color()), cell) >= 4.5, (text.get_text(), text.get_color())
        assert text.get_fontsize() >= 9
    mask_ax = plot.mask_image(M.causal_mask(3))
    mask_cells = mask_ax.get_images()[0]
    for text in mask_ax.texts:
        j, i = (round(c) for c in text.get_position())
        cell = mask_cells.cmap(mask_cells.norm(float(text.get_text())))
        assert _contrast(to_rgba(text.get_color()), cell) >= 4.5


def test_book_style_sets_readable_sizes():
    import matplotlib

    with matplotlib.rc_context():
        plot.use_book_style()  # outside IPython: only the sizes
        for key in ("xtick.labelsize", "ytick.labelsize", "legend.fontsize", "font.size"):
            assert matplotlib.rcParams[key] >= 9
        assert matplotlib.rcParams["svg.fonttype"] == "path"


@pytest.mark.parametrize("heads, n", [(2, 3), (2, 5), (2, 8), (4, 6), (3, 12)])
def test_heads_grid_keeps_to_the_book_width(heads, n):
    """A grid of heads is never wider than the text column, so nothing in it is scaled
    below the sizes of use_book_style()."""
    fig = plot.heads_grid(np.full((heads, n, n), 1.0 / n))
    width, _ = fig.get_size_inches()
    assert width <= plot.BOOK_WIDTH_INCHES + 1e-9
    panel = fig.axes[0]
    if panel.texts:  # values are written only where a cell has room for them
        assert width / min(heads, 4) / n >= 0.3


def test_key_labels_that_would_overlap_stand_upright():
    tokens = ["token 1", "token 2", "token 3"]
    crowded = plot.heads_grid(np.full((2, 3, 3), 1 / 3), tokens, tokens)
    assert {label.get_rotation() for label in crowded.axes[0].get_xticklabels()} == {90.0}
    roomy = plot.heads_grid(np.full((2, 3, 3), 1 / 3), ["a", "b", "c"], ["a", "b", "c"])
    assert {label.get_rotation() for label in roomy.axes[0].get_xticklabels()} == {0.0}

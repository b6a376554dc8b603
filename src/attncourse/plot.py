"""Pictures of attention: weight heatmaps, grids of heads, and masks.

Rows are queries and columns are keys, as everywhere in the course, and heads are numbered
from 1, as in the book's formulas. Every function returns matplotlib objects and never
calls ``show()``, so it works in notebooks, scripts and tests. ``use_book_style()`` sets
the font sizes and figure format the book's pages are built with.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["BOOK_STYLE", "attention_heatmap", "heads_grid", "mask_image", "use_book_style"]

# Font sizes in points. The book's text column is about 7 inches wide at 1280 px, so a
# figure at most 7 inches wide is shown at its own size and these sizes are what the reader
# sees; a wider figure is scaled down with everything in it.
BOOK_STYLE = {
    "font.size": 10.0,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10.0,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9.5,
    "legend.title_fontsize": 9.5,
    "figure.titlesize": 11.0,
    "svg.fonttype": "path",  # text drawn as outlines: it looks the same in every browser
    "svg.hashsalt": "attncourse",  # the same ids in every build
}
ANNOTATION_SIZE = 9.5
BOOK_WIDTH_INCHES = 7.0  # the text column at 1280 px, about 676 CSS pixels


def use_book_style() -> None:
    """Font sizes of BOOK_STYLE; in a Jupyter kernel, figures are shown as SVG.

    SVG keeps figures sharp at any zoom, and its text sizes can be read back from the
    built page (the book's browser test checks that none is below 9 pt as shown).
    """
    import matplotlib

    matplotlib.rcParams.update(BOOK_STYLE)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is optional
        return
    if get_ipython() is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("svg")


def _contrasting_text_colour(rgba) -> str:
    """'black' or 'white', whichever contrasts more with a cell of colour ``rgba``.

    Uses the relative luminance and contrast ratio of WCAG 2; the better of the two always
    has a contrast ratio of at least 4.58.
    """
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    against_black = (luminance + 0.05) / 0.05
    against_white = 1.05 / (luminance + 0.05)
    return "black" if against_black >= against_white else "white"


def _as_matrix(name: str, x, ndim: int) -> np.ndarray:
    """Tensor or array -> float NumPy array with exactly ``ndim`` dimensions."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.float() if x.dtype.is_floating_point else x
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim != ndim:
        layout = "(n_q, n_k)" if ndim == 2 else "(h, n_q, n_k)"
        raise ValueError(f"{name} must have shape {layout}, got shape {x.shape}")
    return x


def _label_axes(ax, n_q: int, n_k: int, query_labels, key_labels) -> None:
    for labels, n, which in ((query_labels, n_q, "query_labels"), (key_labels, n_k, "key_labels")):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{which} must have {n} entries, got {len(labels)}")
    ax.set_xticks(range(n_k))
    ax.set_yticks(range(n_q))
    # Without labels, queries and keys are numbered from 1, as in the book.
    x_labels = [str(label) for label in (key_labels if key_labels is not None else range(1, n_k + 1))]
    # Key labels stand upright when they would not fit side by side under their cells: a
    # character takes about 0.6 em, and the axes cannot be wider than they are now.
    cell_inches = ax.get_position().width * ax.figure.get_figwidth() / max(n_k, 1)
    longest = max((len(label) for label in x_labels), default=0)
    ax.set_xticklabels(x_labels, rotation=90 if n_k > 8 or _too_wide(longest, cell_inches) else 0)
    ax.set_yticklabels(query_labels if query_labels is not None else range(1, n_q + 1))
    ax.set_xlabel("key")
    ax.set_ylabel("query")


def _too_wide(characters: int, room_inches: float) -> bool:
    """Would a label of this many characters overflow a cell of this width?"""
    import matplotlib
    from matplotlib.font_manager import FontProperties

    size = FontProperties(size=matplotlib.rcParams["xtick.labelsize"]).get_size_in_points()
    return 0.6 * characters * size / 72 > 0.9 * room_inches


def _new_axes(ax, size):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    return fig, ax


def _annotate(ax, image, matrix: np.ndarray) -> None:
    """Write each value in its cell, in black or white, whichever contrasts more."""
    n_q, n_k = matrix.shape
    for i in range(n_q):
        for j in range(n_k):
            if not np.isfinite(matrix[i, j]):
                continue
            cell = image.cmap(image.norm(matrix[i, j]))
            ax.text(
                j,
                i,
                f"{matrix[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=ANNOTATION_SIZE,
                color=_contrasting_text_colour(cell),
            )


def attention_heatmap(
    weights,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ax=None,
    title: str | None = None,
    annotate: bool | None = None,
    cmap: str = "viridis",
    vmin: float | None = 0.0,
    vmax: float | None = None,
    colorbar: bool = True,
):
    """Heatmap of one weight (or score) matrix, rows = queries, columns = keys.

    Args:
        weights: (n_q, n_k) tensor or array.
        query_labels, key_labels: tick labels (e.g. tokens), n_q and n_k of them;
            without them, queries and keys are numbered from 1.
        ax: draw into this Axes; a new figure is made if None.
        title: optional title.
        annotate: write each value in its cell (in black or white, whichever contrasts
            more with the cell); default when the matrix has at most 12 x 12 entries.
        cmap, vmin, vmax: colour map and range (weights lie in [0, 1]; pass vmin=None for
            scores).
        colorbar: add a colour bar.

    Returns:
        The matplotlib Axes.
    """
    matrix = _as_matrix("weights", weights, 2)
    n_q, n_k = matrix.shape
    if annotate is None:
        annotate = n_q <= 12 and n_k <= 12
    cell = 0.55 if annotate else 0.4  # inches per entry
    fig, ax = _new_axes(ax, (1.6 + cell * n_k, 1.0 + cell * n_q))
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    _label_axes(ax, n_q, n_k, query_labels, key_labels)
    if annotate:
        _annotate(ax, image, matrix)
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(image, ax=ax, shrink=0.8)
    return ax


def heads_grid(
    weights,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    annotate: bool | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
):
    """One heatmap per head, side by side, sharing one colour scale and one colour bar.

    Heads are titled "head 1", "head 2", ...: counted from 1, as in the book, although
    ``weights[0]`` holds head 1.

    Args:
        weights: (h, n_q, n_k) tensor or array, e.g. one batch element of captured weights.
        query_labels, key_labels: tick labels.
        ncols: heads per row (default: up to 4).
        title: optional title of the whole figure.
        cmap: colour map.
        annotate: write each weight in its cell; default when a map has at most 6 x 6
            entries and the figure can give them room within the book's width.
        vmax: top of the colour scale (default: the largest weight; the bottom is 0).
        colorbar: add one colour bar for all heads.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    stack = _as_matrix("weights", weights, 3)
    h, n_q, n_k = stack.shape
    ncols = min(h, 4) if ncols is None else ncols
    nrows = math.ceil(h / ncols)
    # Inches: room for the tick labels of each panel and for the colour bar; each entry
    # gets `cell`, shrunk when needed so that the figure keeps to the book's width (text
    # too small for a cell is left out).
    margin, bar = 0.75, (0.7 if colorbar else 0.0)
    cell = 0.5 if annotate or (annotate is None and n_q <= 6 and n_k <= 6) else 0.3
    cell = min(cell, (BOOK_WIDTH_INCHES - bar - ncols * margin) / (ncols * max(n_k, 1)))
    if annotate is None:
        annotate = n_q <= 6 and n_k <= 6 and cell >= 0.45
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(ncols * (margin + cell * n_k) + bar, nrows * (margin + cell * n_q)),
        squeeze=False,
        layout="constrained",
    )
    if vmax is None:
        vmax = float(np.nanmax(stack)) if stack.size else 1.0
    for head, ax in enumerate(axes.flat):
        if head >= h:
            ax.axis("off")
            continue
        attention_heatmap(
            stack[head],
            query_labels,
            key_labels,
            ax=ax,
            title=f"head {head + 1}",
            annotate=annotate,
            cmap=cmap,
            vmax=vmax,
            colorbar=False,
        )
        if head % ncols:
            ax.set_ylabel("")
    if colorbar and h:
        fig.colorbar(axes.flat[0].get_images()[0], ax=axes, shrink=0.8, label="weight")
    if title:
        fig.suptitle(title)
    return fig


def mask_image(
    mask,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ax=None,
    title: str | None = None,
):
    """Picture of a boolean mask (True = may attend, drawn filled and marked 1), rows = queries.

    Floating masks are shown as kept where the added value is finite.

    Args:
        mask: (n_q, n_k) boolean or floating tensor or array.

    Returns:
        The matplotlib Axes.
    """
    matrix = _as_matrix("mask", mask, 2)
    keep = matrix if matrix.dtype == bool else np.isfinite(matrix)
    n_q, n_k = keep.shape
    fig, ax = _new_axes(ax, (1.2 + 0.45 * n_k, 1.0 + 0.45 * n_q))
    image = ax.imshow(keep, cmap="Blues", vmin=0, vmax=1.25, aspect="equal")
    _label_axes(ax, n_q, n_k, query_labels, key_labels)
    for i in range(n_q):
        for j in range(n_k):
            ax.text(
                j,
                i,
                "1" if keep[i, j] else "0",
                ha="center",
                va="center",
                fontsize=ANNOTATION_SIZE,
                color=_contrasting_text_colour(image.cmap(image.norm(keep[i, j]))),
            )
    if title:
        ax.set_title(title)
    return ax

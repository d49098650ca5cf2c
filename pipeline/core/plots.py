"""Figures rendered straight to PNG bytes (for UI metadata and files next to outputs).

`matplotlib.figure.Figure` is used without pyplot: no global figure registry to leak into, and no
process-wide backend switch, so plotting is safe inside Dagster steps and worker threads.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

PANEL_COLUMNS = 3
"""Small multiples per row: nine categories make a 3 × 3 grid that stays readable at UI width."""


def axes(width: float, height: float) -> tuple[Any, Any]:
    """A new figure of `width` × `height` inches at 100 dpi, and its single axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def png(fig: Any) -> bytes:
    """The figure as PNG bytes, trimmed to its content."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def histograms(
    values: Mapping[str, Sequence[float]], title: str, xlabel: str, bins: int = 10, lo: float = 0.0, hi: float = 1.0
) -> Any:
    """One histogram panel per series (small multiples on shared axes), each titled with its name
    and size: overlaid translucent series mix their colours until none matches its legend entry."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names = list(values) or ["(none)"]
    cols = min(len(names), PANEL_COLUMNS)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(2.6 * cols + 0.6, 1.9 * rows + 0.6), dpi=100, layout="constrained")
    grid = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    for index, panel in enumerate(grid.flat):
        if index >= len(names):
            panel.set_visible(False)
            continue
        series = list(values.get(names[index], ()))
        panel.hist(series, bins=edges, color="C0", edgecolor="white")
        panel.set_title(f"{names[index]} (n={len(series)})", fontsize=9)
        panel.tick_params(labelsize=8)
        panel.yaxis.set_major_locator(MaxNLocator(integer=True))
        if index % cols == 0:
            panel.set_ylabel("problems", fontsize=8)
        if index >= len(names) - cols:
            panel.set_xlabel(xlabel, fontsize=8)
            panel.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(title, fontsize=11)
    return fig


def pass_rate_scatter(panels: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str) -> Any:
    """One scatter panel per name of (x, y) pass rates, problem by problem, each with the diagonal
    where both models agree."""
    from matplotlib.figure import Figure

    names = list(panels) or ["(none)"]
    cols = min(len(names), PANEL_COLUMNS)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(2.8 * cols + 0.6, 2.8 * rows + 0.4), dpi=100, layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    for index, panel in enumerate(grid.flat):
        if index >= len(names):
            panel.set_visible(False)
            continue
        xs, ys = panels.get(names[index], ((), ()))
        panel.plot([0, 1], [0, 1], color="0.7", linewidth=0.8)
        panel.scatter(list(xs), list(ys), s=8, alpha=0.5, color="C0")
        panel.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
        panel.set_xlabel(xlabel, fontsize=8)
        panel.set_ylabel(names[index], fontsize=8)
        panel.tick_params(labelsize=8)
    return fig

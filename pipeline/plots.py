"""Figures rendered straight to PNG bytes (for UI metadata and files next to outputs).

`matplotlib.figure.Figure` is used without pyplot: no global figure registry to leak into, and no
process-wide backend switch, so plotting is safe inside Dagster steps and worker threads.
"""

from __future__ import annotations

import io
from typing import Any


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

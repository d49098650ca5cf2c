"""UI metadata helpers: previews, schemas and pictures that people read at a glance."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema

from pipeline.plots import axes, png

PREVIEW_ROWS = 8
PREVIEW_CHARS = 80


def preview(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> MetadataValue:
    """A Markdown table of the first rows, long cells shortened."""
    head = frame[list(columns)] if columns else frame
    head = head.head(PREVIEW_ROWS).copy()
    for col in head.columns:
        head[col] = head[col].map(lambda v: _short(v))
    return MetadataValue.md(head.to_markdown(index=False) if len(head) else "_(empty)_")


def _short(value: object) -> str:
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def schema(frame: pd.DataFrame) -> MetadataValue:
    return MetadataValue.table_schema(
        TableSchema(columns=[TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()])
    )


def picture(png: bytes, alt: str) -> MetadataValue:
    """An inline PNG in a Markdown metadata entry (the UI renders data-URI images)."""
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def counts_table(counts: Mapping[str, int], key: str, value: str = "count") -> MetadataValue:
    rows = "\n".join(f"| {k} | {v} |" for k, v in counts.items())
    return MetadataValue.md(f"| {key} | {value} |\n|---|---|\n{rows}" if counts else "_(none)_")


def histogram_png(
    values: Mapping[str, Sequence[float]], title: str, xlabel: str = "pass rate", bins: int = 10
) -> bytes:
    """Overlaid histograms (one series per key), as PNG bytes."""
    fig, ax = axes(6, 3.2)
    edges = [i / bins for i in range(bins + 1)]
    for label, series in values.items():
        ax.hist(list(series), bins=edges, alpha=0.6, label=f"{label} (n={len(series)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("problems")
    ax.set_title(title)
    if len(values) > 1:
        ax.legend(fontsize=8)
    return png(fig)

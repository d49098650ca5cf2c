"""UI metadata helpers: previews, schemas and pictures that people read at a glance."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema

from pipeline.core.plots import histograms, png

PREVIEW_ROWS = 8
PREVIEW_CHARS = 80
FIGURE_DIGITS = 3
"""Decimals of a rate or score shown in the UI (0.090, not 0.09027777777777778)."""
PICTURE_MARK = "📊"


def preview(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> MetadataValue:
    """A Markdown table of the first rows, long cells shortened."""
    head = frame[list(columns)] if columns else frame
    head = head.head(PREVIEW_ROWS).copy()
    for col in head.columns:
        head[col] = head[col].map(lambda v: _short(v))
    return MetadataValue.md(head.to_markdown(index=False) if len(head) else "_(empty)_")


def _short(value: object) -> str:
    if isinstance(value, float):
        value = "" if (rounded := figure(value)) is None else rounded
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def schema(frame: pd.DataFrame) -> MetadataValue:
    return MetadataValue.table_schema(
        TableSchema(columns=[TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()])
    )


def figure(value: float | None, digits: int = FIGURE_DIGITS) -> float | None:
    """A float as people read it in the UI: rounded to `digits` decimals; NaN or infinite
    (an undefined score, e.g. AUROC with one class) as None, since metadata has no NaN."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


def picture(png: bytes, alt: str) -> MetadataValue:
    """An inline PNG in a Markdown metadata entry (the UI renders data-URI images)."""
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def picture_key(title: str) -> str:
    """The metadata key of a picture: the UI's list shows keys, and a Markdown value only as a
    generic "[Show Markdown]" link, so the key says a picture is behind it."""
    return f"{PICTURE_MARK} {title} (picture)"


def picture_entry(png: bytes, title: str) -> dict[str, MetadataValue]:
    """One metadata entry holding a picture; put it first in an asset's metadata (the UI lists
    entries in the order given)."""
    return {picture_key(title): picture(png, title)}


def counts_table(counts: Mapping[str, int], key: str, value: str = "count") -> MetadataValue:
    rows = "\n".join(f"| {k} | {v} |" for k, v in counts.items())
    return MetadataValue.md(f"| {key} | {value} |\n|---|---|\n{rows}" if counts else "_(none)_")


def histogram_png(
    values: Mapping[str, Sequence[float]], title: str, xlabel: str = "pass rate", bins: int = 10
) -> bytes:
    """One histogram panel per series (small multiples, shared axes), as PNG bytes."""
    return png(histograms(values, title, xlabel, bins))

"""The curriculum a run trains on: every staged row of a curriculum folder, checked against its
manifest before use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.storage import StorageLayout
from pipeline.curriculum.build import MANIFEST, manifest_problems, read_manifest


@dataclass(frozen=True)
class CurriculumPool:
    """Every staged row of a curriculum, read from its folder, in stage order."""

    folder: Path
    manifest: dict[str, Any]
    table: pa.Table

    @property
    def pass_rate(self) -> np.ndarray:
        return self.table.column("pass_rate").to_numpy()

    @property
    def stage(self) -> np.ndarray:
        return self.table.column("stage").to_numpy()


def load_curriculum(layout: StorageLayout, name: str) -> CurriculumPool:
    """The curriculum `name` of `layout`, checked against its manifest first."""
    folder = layout.curriculum(name)
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"no curriculum at {folder}: materialize `curriculum` with name {name!r} first")
    issues = manifest_problems(folder)
    if issues:
        raise ValueError(f"curriculum {folder} disagrees with its manifest: " + "; ".join(issues))
    manifest = read_manifest(folder)
    parts = [pq.read_table(folder / s["file"]) for s in manifest["stages"] if s["rows"]]
    if not parts:
        raise ValueError(f"curriculum {folder} has no staged problems to train on")
    return CurriculumPool(folder, manifest, pa.concat_tables(parts))

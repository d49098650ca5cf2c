"""A curriculum from a labelled pool: which labels are staged (measured, predicted or both), what
the manifest records about how they were made, benchmark-flagged problems left out, the stages
written once, and the figures that describe them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.storage import ParquetSource, StorageLayout
from pipeline.curriculum.build import CurriculumSpec, provenance, write_curriculum
from pipeline.curriculum.informative import GroupFilter, pool_versus_curriculum
from pipeline.curriculum.labels import check_predictions, merge_labels
from pipeline.hygiene.contamination import decontamination_record, flagged
from pipeline.labels.matrix import OtherModels
from pipeline.labels.pass_rates import LabelTarget


@dataclass(frozen=True)
class StagedCurriculum:
    """A written curriculum and what describes it."""

    manifest: dict[str, Any]
    folder: Path
    pass_rate: np.ndarray
    """The pass rate of every labelled problem of the (decontaminated) pool, staged or excluded."""
    classes: np.ndarray
    """Their classes as the builder assigned them: 1..K stages, 0 solved, -1 unsolved, -2 left out
    as cut at the token cap (`truncation_bound: exclude`)."""
    label_sources: dict[str, int]
    """Labelled problems by where their label came from (`measured` | `predicted`)."""
    contaminated: frozenset[str]
    """Problems some benchmark flags, whether or not they were left out."""
    informative: dict[str, Any]
    """`pool_versus_curriculum` at the trainer's group size."""

    def stage_pass_rates(self) -> dict[str, list[float]]:
        """Each stage's pass rates, by stage name (the histogram per stage)."""
        return {s["name"]: self.pass_rate[self.classes == s["stage"]].tolist() for s in self.manifest["stages"]}


def stage_pool(
    problems: pa.Table | ParquetSource,
    pass_rates: pd.DataFrame,
    predicted_difficulty: pd.DataFrame | None,
    contamination: pd.DataFrame,
    spec: CurriculumSpec,
    target: LabelTarget,
    layout: StorageLayout,
    group_filter: GroupFilter,
    other_models: OtherModels | None = None,
) -> StagedCurriculum:
    """Write the curriculum `spec` names from the pool's labels: `spec.labels` picks measured
    pass rates, the probe's predictions (`predicted_difficulty`, needed only then) or both;
    `group_filter` is the trainer's group size and batch the manifest predicts filtering for;
    `other_models` adds other labelled models' rates to every row and selects on them. A
    `ParquetSource` pool is streamed into the stages (`write_curriculum`), never loaded whole."""
    predicted = None
    if spec.labels != "measured":
        if predicted_difficulty is None:
            raise FileNotFoundError(
                f"curriculum labels: {spec.labels} needs predicted_difficulty: materialize hidden_states, "
                "difficulty_probe and predicted_difficulty (probe_job) first, or stage measured labels only "
                "(labels: measured)"
            )
        predicted = check_predictions(predicted_difficulty, target.key)
    measured = None if spec.labels == "predicted" else pass_rates
    labels = merge_labels(measured, predicted,
                          trials=int(round(pass_rates["trials"].median())) if len(pass_rates) else None)
    made = provenance(target, spec.labels, predicted, measured=measured,
                      on_mismatch=spec.on_label_mismatch)
    if other_models is not None:
        labels, made["other_models"] = other_models.apply(labels)
    contaminated = frozenset(contamination["problem_id"][flagged(contamination)])
    made["decontamination"] = decontamination_record(contamination, spec.exclude_contaminated)
    excluded = pa.array(sorted(contaminated), pa.string()) if spec.exclude_contaminated and contaminated else None
    manifest, table = write_curriculum(problems, labels, spec, layout.root, made, group_filter, exclude=excluded)
    pass_rate = table.column("pass_rate").to_numpy()
    classes = table.column("stage").to_numpy()
    sources = (pc.value_counts(table.column("label_source")).to_pylist()
               if "label_source" in table.column_names else [])
    return StagedCurriculum(
        manifest=manifest,
        folder=layout.curriculum(spec.name),
        pass_rate=pass_rate,
        classes=classes,
        label_sources={d["values"]: d["counts"] for d in sources},
        contaminated=contaminated,
        # GRPO groups with mixed rewards per batch, whole labelled pool vs staged problems (from
        # labels: optimistic for the stages, see pipeline.curriculum.informative).
        informative=pool_versus_curriculum(pass_rate, classes > 0, group_filter.group_size),
    )

"""`curriculum`: difficulty-stratified Parquet stages plus a manifest, for verl / TRL trainers."""


from typing import Optional

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.config import op_config, spec_config
from assets.metadata import counts_table, histogram_png, picture_entry
from assets.resources import GradusStorage, StrataResource, TargetModel
from pipeline.core.storage import ParquetSource
from pipeline.curriculum.build import MANIFEST, CurriculumSpec, curriculum_problem_ids, manifest_problems
from pipeline.curriculum.labels import PASS_RATE_KEY_COLUMNS, STAGED_PASS_RATE_COLUMNS
from pipeline.curriculum.staging import stage_pool
from pipeline.labels.history import LabelHistory
from pipeline.labels.matrix import CrossModelSelection, other_models
from pipeline.training import TrainingSpec


def other_models_metadata(record: Optional[dict]) -> dict:
    """The other labelled models a curriculum carries, and what selecting on them kept."""
    if record is None:
        return {}
    models = {m["name"]: f"{m['problems']} problems, mean pass rate {m['mean_pass_rate']:.3f}" for m in record["models"]}
    return {"other_models": counts_table(models, "model", "labels"),
            **({"cross_model_selection": MetadataValue.json(record["selection"])} if record["selection"] else {})}


@op_config("curriculum")
class CurriculumConfig(spec_config(CurriculumSpec, CrossModelSelection)):
    """How the labelled pool is cut into stages (the bins come from the shared `strata` resource),
    and which problems other labelled models' rates select."""


@asset(
    group_name="curriculum",
    ins={"problems": AssetIn("unique_problems"), "contamination": AssetIn(),
         "pass_rates": AssetIn(metadata={"columns": list(STAGED_PASS_RATE_COLUMNS),
                                         "dictionary": list(PASS_RATE_KEY_COLUMNS)})},
    check_specs=[
        AssetCheckSpec("curriculum_is_decontaminated", asset="curriculum", blocking=True,
                       description="No problem in a stage is flagged by any benchmark and method."),
        AssetCheckSpec("curriculum_manifest_matches_files", asset="curriculum",
                       description="Every stage file exists with the rows and sha256 the manifest records."),
        AssetCheckSpec("curriculum_stages_are_nonempty_or_explained", asset="curriculum",
                       description="Every stage has rows, or the manifest says why it has none."),
    ],
)
def curriculum(
    context: AssetExecutionContext,
    config: CurriculumConfig,
    problems: ParquetSource,
    pass_rates: pd.DataFrame,
    predicted_difficulty: Optional[pd.DataFrame],
    contamination: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
    strata: StrataResource,
):
    """Stages from easy to hard (bins of pass rate) as one Parquet file each, in verl's RL schema
    plus gradus's label columns, and a `manifest.json` with model, sampling, thresholds and counts.
    Config `labels` stages measured pass rates, the difficulty probe's predictions
    (`predicted_difficulty`, needed only then), or both. Where the label history holds other models'
    labels (see `difficulty_matrix`), every row carries their pass rates in
    `extra_info.model_difficulty`, and `solved_by` stages only problems another model solves."""
    layout = storage.layout()
    spec = config.to_spec(CurriculumSpec, strata=strata.strata())
    target = target_model.target(layout.root)
    others = other_models(LabelHistory(layout.root), target.key, config.to_spec(CrossModelSelection))
    built = stage_pool(problems, pass_rates, predicted_difficulty, contamination, spec, target, layout,
                       TrainingSpec().group_filter(spec.filter_group_size, spec.filter_train_batch_size), others)
    manifest, folder, contaminated = built.manifest, built.folder, built.contaminated
    stage_rows = {s["name"]: s["rows"] for s in manifest["stages"]}
    context.log.info(f"curriculum at {folder}: {stage_rows}, excluded {manifest['excluded']}")
    empty = [s for s in manifest["stages"] if s["rows"] == 0]
    return MaterializeResult(
        metadata={
            **picture_entry(histogram_png(built.stage_pass_rates(), "pass rate per stage"),
                            "pass-rate histogram per stage"),
            "path": MetadataValue.path(str(folder)),
            "manifest": MetadataValue.path(str(folder / MANIFEST)),
            "rows": manifest["counts"]["in_stages"],
            "stages": counts_table(stage_rows, "stage", "rows"),
            "excluded": counts_table(manifest["excluded"], "class", "problems"),
            "label_key": str(manifest["label_key"]),
            "contaminated_excluded": len(contaminated) if spec.exclude_contaminated else 0,
            "label_sources": counts_table(built.label_sources, "source", "problems"),
            "informative_groups": MetadataValue.json(built.informative),
            "group_filter": MetadataValue.json({s["name"]: s["group_filter"] for s in manifest["stages"]}),
            "truncation": MetadataValue.json(manifest["truncation"]),
            "trainer_config": MetadataValue.json(manifest["trainers"]),
            **other_models_metadata(manifest.get("other_models")),
        },
        check_results=[
            AssetCheckResult(
                check_name="curriculum_is_decontaminated",
                passed=not (leaked := sorted(curriculum_problem_ids(folder, among=contaminated))),
                # Blocking even when kept on purpose (exclude_contaminated false): the folder is
                # written for inspection, but nothing downstream may publish or train on it.
                severity=AssetCheckSeverity.ERROR,
                metadata={"flagged_in_stages": len(leaked),
                          "examples": MetadataValue.md("\n".join(f"- {i}" for i in leaked[:8]) or "none")},
            ),
            AssetCheckResult(
                check_name="curriculum_manifest_matches_files",
                passed=not (issues := manifest_problems(folder)),
                metadata={"problems": MetadataValue.md("\n".join(f"- {i}" for i in issues) or "none")},
            ),
            AssetCheckResult(
                check_name="curriculum_stages_are_nonempty_or_explained",
                passed=all(s.get("note") for s in empty),
                metadata={"empty_stages": MetadataValue.md(
                    "\n".join(f"- {s['name']}: {s['note']}" for s in empty) or "none")},
            ),
        ],
    )

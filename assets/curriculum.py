"""`curriculum`: difficulty-stratified Parquet stages plus a manifest, for verl / TRL trainers."""


from dataclasses import asdict
from pathlib import Path
from typing import Literal

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.config import StrataConfig
from assets.metadata import counts_table, histogram_png, picture
from assets.probes import predicted_labels
from assets.resources import GradusStorage, TargetModel
from pipeline.contamination import decontamination_record, flagged
from pipeline.curriculum import MANIFEST, CurriculumSpec, build_curriculum, curriculum_problem_ids, manifest_problems
from pipeline.probe import merge_labels
from pipeline.storage import safe_name


class CurriculumConfig(Config):
    """How the labelled pool is cut into stages."""

    name: str = Field(default="default", description="folder under $GRADUS_HOME/curricula/")
    strata: StrataConfig = Field(default=StrataConfig(), description="pass-rate bins, easy → hard")
    shuffle_seed: int = Field(default=0, description="seed for shuffling rows within a stage")
    labels: Literal["measured", "predicted", "both"] = Field(
        default="measured",
        description="which pass rates are staged: measured (pass_rates), predicted (the difficulty "
        "probe's, from predicted_difficulty, for every problem) or both (measured where a problem "
        "has rollouts, predicted elsewhere); rows record theirs in `label_source`",
    )
    exclude_contaminated: bool = Field(
        default=True,
        description="leave out problems any benchmark flags (see the contamination asset); when false they "
        "stay in the folder and the blocking check curriculum_is_decontaminated stops everything downstream",
    )


def curriculum_folder(storage: GradusStorage, name: str) -> Path:
    return storage.root() / "curricula" / safe_name(name)


@asset(
    group_name="curriculum",
    ins={"problems": AssetIn("unique_problems"), "contamination": AssetIn()},
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
    problems: pd.DataFrame,
    pass_rates: pd.DataFrame,
    contamination: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
):
    """Stages from easy to hard (bins of pass rate) as one Parquet file each, in verl's RL schema
    plus gradus's label columns, and a `manifest.json` with model, sampling, thresholds and counts.
    Config `labels` stages measured pass rates, the difficulty probe's predictions, or both."""
    home = storage.root()
    target = target_model.target(home)
    spec = CurriculumSpec(config.name, config.strata.strata(), config.shuffle_seed)
    provenance = {
        "model": {"id": target.model.model_id, "revision": target.model.revision, "path": target.model.path},
        "sampling": asdict(target.sampling),
        "sampling_key": target.sampling.key,
        "label_key": target.key,
        "verifier_version": target.verifier_version,
        "extraction_policy": target_model.extraction_policy,
    }
    predicted = None if config.labels == "measured" else predicted_labels(home, target.key)
    labels = merge_labels(
        None if config.labels == "predicted" else pass_rates,
        predicted,
        trials=int(round(pass_rates["trials"].median())) if len(pass_rates) else None,
    )
    provenance["labels"] = config.labels
    contaminated = set(contamination["problem_id"][flagged(contamination)])
    provenance["decontamination"] = decontamination_record(contamination, config.exclude_contaminated)
    if config.exclude_contaminated:
        problems = problems[~problems["problem_id"].isin(contaminated)]
    if predicted is not None and len(predicted):
        provenance["probe"] = str(predicted["probe_path"].iloc[0])
    manifest = build_curriculum(problems, labels, spec, home, provenance)
    folder = curriculum_folder(storage, config.name)
    staged = labels.merge(problems[["problem_id"]], on="problem_id")
    # The builder's own rule, so excluded solved / unsolved problems stay out of the picture.
    classes = spec.strata.stage_of(staged["pass_rate"], staged["successes"], staged["trials"])
    series = {s["name"]: staged["pass_rate"][classes == s["stage"]].tolist() for s in manifest["stages"]}
    stage_rows = {s["name"]: s["rows"] for s in manifest["stages"]}
    context.log.info(f"curriculum at {folder}: {stage_rows}, excluded {manifest['excluded']}")
    empty = [s for s in manifest["stages"] if s["rows"] == 0]
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(folder)),
            "manifest": MetadataValue.path(str(folder / MANIFEST)),
            "rows": manifest["counts"]["in_stages"],
            "stages": counts_table(stage_rows, "stage", "rows"),
            "excluded": counts_table(manifest["excluded"], "class", "problems"),
            "label_key": target.key,
            "contaminated_excluded": len(contaminated) if config.exclude_contaminated else 0,
            "label_sources": counts_table(staged["label_source"].value_counts().to_dict(), "source", "problems"),
            "histogram": picture(histogram_png(series, "pass rate per stage"), "stages"),
        },
        check_results=[
            AssetCheckResult(
                check_name="curriculum_is_decontaminated",
                passed=not (leaked := sorted(contaminated & curriculum_problem_ids(folder))),
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

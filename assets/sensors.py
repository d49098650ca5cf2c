"""`model_checkpoint_sensor`: relabel each new model checkpoint, once per folder content."""

import json
import time
from pathlib import Path
from typing import Any

from dagster import DynamicPartitionsDefinition, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from assets.jobs import TRIGGER_TAG, relabel_job, unattended_run_config
from assets.resources import GradusStorage, TargetModel
from pipeline.core.model import content_revisions, ready_checkpoints

CHECKPOINT_TAG = "gradus/checkpoint"

model_checkpoints = DynamicPartitionsDefinition(name="model_checkpoints")


def checkpoint_run_config(target_model: TargetModel, folder: Path) -> dict[str, Any]:
    """The unattended run config with `target_model` pointed at `folder`.

    Run config replaces a resource's whole configuration, so every other field is carried over from
    the unattended config, else from the deployment's resource; id and revision are left for the
    folder to provide (its recorded id, its content hash).
    """
    config = unattended_run_config()
    resources = config.setdefault("resources", {})
    base = resources.get("target_model", {}).get("config") or target_model.model_dump()
    resources["target_model"] = {"config": {**base, "model_path": str(folder), "model_id": "", "revision": ""}}
    return config


@sensor(
    job=relabel_job,
    minimum_interval_seconds=60,
    description="Relabels each new model checkpoint: a folder in the storage's checkpoint_dir "
    "(GRADUS_CHECKPOINT_DIR, default $GRADUS_HOME/checkpoints), or one level further down such as a "
    "training run's stage_k/, with config.json and weights or a completion marker, untouched for a "
    "minute. Registers it in the `model_checkpoints` partitions; each folder triggers once per content, "
    "so a folder rewritten with new weights (same run and stage) triggers again.",
)
def model_checkpoint_sensor(context: SensorEvaluationContext, storage: GradusStorage, target_model: TargetModel):
    root = storage.layout().checkpoints
    launched = _launched(context.cursor)
    ready = ready_checkpoints(root, time.time())
    contents = content_revisions(ready, launched)
    # A folder's first run is keyed by its name; a rewrite's by name and content, as Dagster
    # launches a run key only once.
    runs = {key: key if key not in launched else f"{key}@{contents[key][1]}" for key in ready
            if key not in launched or _rewritten(launched[key], contents[key])}
    cursor = json.dumps({**launched, **contents}, sort_keys=True)
    if not runs:
        return SensorResult(skip_reason=SkipReason(f"no new finished checkpoint in {root}"), cursor=cursor)
    context.log.info(f"new checkpoints: {sorted(runs.values())}")
    return SensorResult(
        run_requests=[
            RunRequest(run_key=run_key, run_config=checkpoint_run_config(target_model, ready[key]),
                       tags={CHECKPOINT_TAG: key, TRIGGER_TAG: "checkpoint"})
            for key, run_key in runs.items()
        ],
        dynamic_partitions_requests=[model_checkpoints.build_add_request(sorted(set(runs) - set(launched)))],
        cursor=cursor,
    )


def _launched(cursor: str | None) -> dict[str, list[str | None] | None]:
    """Folder → (file signature, content revision) of its last run; an older cursor's list of
    folder names records none (None): those folders count as labelled with what they hold now."""
    recorded = json.loads(cursor) if cursor else {}
    return dict.fromkeys(recorded) if isinstance(recorded, list) else recorded


def _rewritten(before: list[str | None] | None, now: tuple[str, str | None]) -> bool:
    """Whether a launched folder's content changed; one whose content the cursor does not know
    counts as changed once its files do."""
    if before is None:
        return False
    return now[1] != before[1] if before[1] is not None else now[0] != before[0]

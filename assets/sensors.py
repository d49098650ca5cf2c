"""`model_checkpoint_sensor`: relabel each new model checkpoint, once per folder."""

import json
import time
from pathlib import Path
from typing import Any

from dagster import DynamicPartitionsDefinition, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from assets.jobs import TRIGGER_TAG, relabel_job, unattended_run_config
from assets.resources import GradusStorage, TargetModel
from pipeline.core.model import ready_checkpoints

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
    "minute. Registers it in the `model_checkpoints` partitions; each folder triggers once.",
)
def model_checkpoint_sensor(context: SensorEvaluationContext, storage: GradusStorage, target_model: TargetModel):
    root = storage.layout().checkpoints
    launched = set(json.loads(context.cursor)) if context.cursor else set()
    fresh = {key: folder for key, folder in ready_checkpoints(root, time.time()).items() if key not in launched}
    if not fresh:
        return SkipReason(f"no new finished checkpoint in {root}")
    context.log.info(f"new checkpoints: {sorted(fresh)}")
    return SensorResult(
        run_requests=[
            RunRequest(run_key=key, run_config=checkpoint_run_config(target_model, folder),
                       tags={CHECKPOINT_TAG: key, TRIGGER_TAG: "checkpoint"})
            for key, folder in fresh.items()
        ],
        dynamic_partitions_requests=[model_checkpoints.build_add_request(sorted(fresh))],
        cursor=json.dumps(sorted(launched | set(fresh))),
    )

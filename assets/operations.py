"""Running gradus unattended: nightly relabelling, relabelling each new checkpoint, label history.

- `relabel_job` re-materializes the labelling graph; the rollout cache (keyed by model, revision and
  sampling) makes it generate only for stale or new problems.
- `nightly_relabel_schedule` runs it on a cron (`GRADUS_RELABEL_CRON`, default 02:00) in
  `GRADUS_TIMEZONE` (default UTC), skipping a night while a relabel is still running.
- `model_checkpoint_sensor` watches `GRADUS_CHECKPOINT_DIR` (default `$GRADUS_HOME/checkpoints`),
  registers each finished HF model folder in the `model_checkpoints` dynamic partitions and runs
  `relabel_job` against it, once per folder.
- `difficulty_history` appends each label version's summary and its drift to a Parquet history.

Unattended runs take their run config from the YAML file `GRADUS_RUN_CONFIG` when it is set (the
same format as `python -m assets.main --config`).
"""


import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from dagster import (
    AssetExecutionContext,
    AssetSelection,
    Config,
    DagsterRunStatus,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    schedule,
    sensor,
)
from pydantic import Field

from assets.config import StrataConfig
from assets.metadata import counts_table, preview
from assets.resources import GradusStorage, TargetModel
from pipeline.records import PassRate
from pipeline.staleness import LabelHistory, counts_of, staleness
from pipeline.storage import safe_name

DEFAULT_CRON = "0 2 * * *"
CHECKPOINT_TAG = "gradus/checkpoint"
TRIGGER_TAG = "gradus/trigger"
COMPLETE_MARKERS = ("gradus_model.json", "trainer_state.json", "model.safetensors",
                    "model.safetensors.index.json", "pytorch_model.bin")
"""Any one of these beside `config.json` marks a folder as a finished checkpoint."""
SETTLE_SECONDS = 60.0
"""A folder with a file written more recently than this is still being saved: wait for it."""
CHECKPOINT_DEPTH = 2
"""How deep under the checkpoint directory model folders are looked for."""
IN_PROGRESS = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
               DagsterRunStatus.STARTED]

model_checkpoints = DynamicPartitionsDefinition(name="model_checkpoints")


class DifficultyHistoryConfig(Config):
    """The strata that per-version counts and drift are measured in."""

    strata: StrataConfig = Field(default=StrataConfig(), description="pass-rate bins, easy → hard")


@asset(group_name="operations")
def difficulty_history(
    context: AssetExecutionContext,
    config: DifficultyHistoryConfig,
    pass_rates: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
) -> MaterializeResult:
    """One row per label version (label key, time, problems per stratum, drift against the previous
    version) appended to `$GRADUS_HOME/history/difficulty_history.parquet`; each version's labels
    are kept beside it so the next one's drift can be measured."""
    home = storage.root()
    history = LabelHistory(home)
    before = history.summaries()
    previous = history.labels(before.iloc[-1]["version"]) if len(before) else PassRate.empty_frame()
    why = staleness(pass_rates, previous, target_model.target(home))["reason"].value_counts().to_dict()
    recorded = history.record(pass_rates, config.strata.strata())
    summary, drift = recorded.summary, recorded.drift
    context.log.info(
        f"label version {summary['version']} ({summary['label_key']}): "
        + (f"{summary['changed_stratum']} problems changed stratum, {summary['added']} added"
           if recorded.appended else "unchanged since the last version")
    )
    recent = history.summaries().tail(10).iloc[::-1]
    return MaterializeResult(metadata={
        "path": MetadataValue.path(str(history.summary_path)),
        "version": summary["version"],
        "label_key": summary["label_key"],
        "new_version": recorded.appended,
        "versions": len(before) + recorded.appended,
        "problems": int(summary["problems"]),
        "changed_stratum": int(summary["changed_stratum"]),
        "added": int(summary["added"]),
        "removed": int(summary["removed"]),
        "per_stratum": counts_table(counts_of(summary), "stratum", "problems"),
        "relabelled_because": counts_table(why, "reason", "problems"),
        "drift": MetadataValue.md(drift.transitions.to_markdown() if drift is not None else "_(no new version)_"),
        "history": preview(recent, ["recorded_at", "label_key", "problems", "changed_stratum", "added", "counts"]),
    })


relabel_job = define_asset_job(
    "relabel_job",
    selection=AssetSelection.assets("difficulty_history", "curriculum").upstream().required_multi_asset_neighbors(),
    description="Relabel against the current target: ingest problems, generate only what the rollout cache "
    "lacks (stale or new problems), re-verify, rebuild the curriculum and record the label version.",
)


def unattended_run_config() -> dict[str, Any]:
    """The run config for schedule and sensor runs: `GRADUS_RUN_CONFIG` (YAML) or empty."""
    path = os.environ.get("GRADUS_RUN_CONFIG")
    return (yaml.safe_load(Path(path).read_text()) or {}) if path else {}


def build_relabel_schedule(cron: str = DEFAULT_CRON, timezone: str = "UTC") -> ScheduleDefinition:
    """`nightly_relabel_schedule` on another cron or timezone."""

    @schedule(
        name="nightly_relabel_schedule",
        job=relabel_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        description=f"Relabel on `{cron}` ({timezone}); the cache makes an unchanged night nearly free. "
        "Skips while another relabel_job run is queued or running.",
    )
    def _schedule(context: ScheduleEvaluationContext):
        running = context.instance.get_runs_count(RunsFilter(job_name="relabel_job", statuses=IN_PROGRESS))
        if running:
            return SkipReason(f"{running} relabel_job run(s) still queued or running")
        return RunRequest(run_config=unattended_run_config(), tags={TRIGGER_TAG: "schedule"})

    return _schedule


def relabel_schedule_from_env() -> ScheduleDefinition:
    """The schedule on `GRADUS_RELABEL_CRON` (default 02:00) in `GRADUS_TIMEZONE` (default UTC)."""
    return build_relabel_schedule(os.environ.get("GRADUS_RELABEL_CRON") or DEFAULT_CRON,
                                  os.environ.get("GRADUS_TIMEZONE") or "UTC")


nightly_relabel_schedule = relabel_schedule_from_env()


def checkpoint_dir(storage: GradusStorage) -> Path:
    return Path(os.environ.get("GRADUS_CHECKPOINT_DIR") or storage.root() / "checkpoints").expanduser()


def ready_checkpoints(root: Path, now: float, settle_s: float = SETTLE_SECONDS) -> dict[str, Path]:
    """Finished HF model folders under `root`, keyed by their path relative to it.

    A folder counts when it has `config.json` plus one of `COMPLETE_MARKERS` and nothing written in
    the last `settle_s` seconds. Folders are looked for up to `CHECKPOINT_DEPTH` levels down, so a
    training run's `<run>/stage_k/` (or a trainer's `<output>/checkpoint-N/`) is found; names that are
    not usable path components, such as hidden staging folders, are skipped.
    """
    ready: dict[str, Path] = {}

    def visit(folder: Path, depth: int) -> None:
        for child in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                safe_name(child.name)
            except ValueError:
                continue
            files = [p for p in child.iterdir() if p.is_file()]
            names = {p.name for p in files}
            if "config.json" in names and names.intersection(COMPLETE_MARKERS):
                if max(p.stat().st_mtime for p in files) <= now - settle_s:
                    ready[child.relative_to(root).as_posix()] = child
            elif depth < CHECKPOINT_DEPTH:
                visit(child, depth + 1)

    if root.is_dir():
        visit(root, 1)
    return ready


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
    description="Relabels each new model checkpoint: a folder in GRADUS_CHECKPOINT_DIR (default "
    "$GRADUS_HOME/checkpoints), or one level further down such as a training run's stage_k/, with "
    "config.json and weights or a completion marker, untouched for a minute. Registers it in the "
    "`model_checkpoints` partitions; each folder triggers once.",
)
def model_checkpoint_sensor(context: SensorEvaluationContext, storage: GradusStorage, target_model: TargetModel):
    root = checkpoint_dir(storage)
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

"""The gradus code location: `dagster dev` loads this module (see workspace.yaml).

Engine and model are picked from the environment so one deployment can point at another model
or engine without code changes:
  GRADUS_ENGINE      vllm (default) | transformers
  GRADUS_MODEL_PATH  local HF model folder (default: the embedded SmolLM2-135M-Instruct)
  GRADUS_HOME        storage root (default: .gradus/)
  GRADUS_SHARDS      problem shards sampled in parallel steps, one engine each (default: 1)
"""

from __future__ import annotations

import os

from dagster import AssetSelection, Definitions, EnvVar, define_asset_job

from assets import curriculum as curriculum_assets
from assets import hub, hygiene, labelling, operations, probes, problems, training
from assets.io_manager import ParquetIOManager
from assets.resources import (
    GradusStorage,
    InferenceEngine,
    TargetModel,
    TransformersEngineResource,
    Verifier,
    VLLMEngineResource,
)

ENGINES = {"vllm": VLLMEngineResource, "transformers": TransformersEngineResource}


def engine_from_env() -> InferenceEngine:
    kind = os.environ.get("GRADUS_ENGINE", "vllm")
    if kind not in ENGINES:
        raise ValueError(f"GRADUS_ENGINE={kind!r}: use one of {sorted(ENGINES)}")
    return ENGINES[kind]()


def resources() -> dict[str, object]:
    home = os.environ.get("GRADUS_HOME", "")
    return {
        "storage": GradusStorage(home=home),
        "io_manager": ParquetIOManager(home=home),
        "target_model": TargetModel(model_path=os.environ.get("GRADUS_MODEL_PATH", "")),
        "engine": engine_from_env(),
        "verifier": Verifier(),
        # EnvVar keeps the token's value out of run records; unset, a run would fail on it.
        "hub": hub.HubPublisher(repo_id=os.environ.get("GRADUS_HUB_REPO", ""),
                                token=EnvVar("HF_TOKEN") if os.environ.get("HF_TOKEN") else None),
    }


all_assets = [problems.problems, hygiene.unique_problems, hygiene.evaluation_problems, hygiene.contamination,
              labelling.rollouts, labelling.rewards, labelling.pass_rates,
              curriculum_assets.curriculum]
# Not in label_job: a probe needs labels to learn from, and its blocking check may stop a run.
probe_assets = [probes.hidden_states, probes.difficulty_probe, probes.predicted_difficulty]

# Generation-heavy steps must not start two engines at once on a small machine: one engine per run.
label_job = define_asset_job(
    "label_job",
    selection=AssetSelection.assets(*all_assets),
    description="Ingest problems, roll out, verify, label and build the curriculum.",
    executor_def=None,
)

probe_job = define_asset_job(
    "probe_job",
    selection=AssetSelection.assets(*probe_assets),
    description="Hidden states, a difficulty probe fitted on the measured pass rates, and predicted "
    "difficulty for the whole pool (run after label_job).",
)

# Training is materialized on its own (train_job), after label_job has written a curriculum.
training_assets = [training.staged_rl_policy]

train_job = define_asset_job(
    "train_job",
    selection=AssetSelection.assets(*training_assets),
    description="GRPO fine-tuning through the curriculum on disk, stage by stage, with a checkpoint per stage.",
)

# Not in label_job either: relabel_job, the schedule and the sensor keep labels current unattended.
operations_assets = [operations.difficulty_history, hub.hub_curriculum]

defs = Definitions(
    assets=all_assets + probe_assets + operations_assets + training_assets,
    jobs=[label_job, probe_job, train_job, operations.relabel_job],
    schedules=[operations.nightly_relabel_schedule],
    sensors=[operations.model_checkpoint_sensor],
    resources=resources(),
)

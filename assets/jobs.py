"""The jobs: what each materializes, and the run config that unattended runs take."""

import os
from pathlib import Path
from typing import Any

import yaml
from dagster import AssetSelection, define_asset_job

from assets import curriculum, evaluation, history, hub, hygiene, labelling, probes, problems, training

TRIGGER_TAG = "gradus/trigger"
"""Run tag saying what launched an unattended run: `schedule` or `checkpoint`."""
PID_TAG = "gradus/pid"
HOST_TAG = "gradus/host"
"""Run tags of the command line's runs: the process and machine executing them, so a run left
STARTED by a killed process is recognised as dead."""

all_assets = [problems.problems, hygiene.unique_problems, hygiene.evaluation_problems, hygiene.contamination,
              labelling.rollouts, labelling.rewards, labelling.pass_rates, curriculum.curriculum]
"""The labelling graph, problems to curriculum: what `label_job` materializes."""
probe_assets = [probes.hidden_states, probes.difficulty_probe, probes.predicted_difficulty]
training_assets = [training.staged_rl_policy]
evaluation_assets = [evaluation.policy_evaluation]
operations_assets = [history.difficulty_history, history.difficulty_matrix, hub.hub_curriculum]

# Generation-heavy steps must not start two engines at once on a small machine: one engine per run.
label_job = define_asset_job(
    "label_job",
    selection=AssetSelection.assets(*all_assets),
    description="Ingest problems, roll out, verify, label and build the curriculum.",
)

# Not in label_job: a probe needs labels to learn from, and hidden states cost a pass over the pool.
probe_job = define_asset_job(
    "probe_job",
    selection=AssetSelection.assets(*probe_assets),
    description="Hidden states, a difficulty probe fitted on the measured pass rates, and predicted "
    "difficulty for the whole pool (run after label_job).",
)

# Training is materialized on its own, after label_job has written a curriculum.
train_job = define_asset_job(
    "train_job",
    selection=AssetSelection.assets(*training_assets),
    description="GRPO fine-tuning through the curriculum on disk, stage by stage, with a checkpoint per stage.",
)

# Evaluation starts an engine per checkpoint: on its own, after train_job, so training never waits
# on it and a policy can be re-evaluated (from the rollout cache) without retraining.
evaluate_job = define_asset_job(
    "evaluate_job",
    selection=AssetSelection.assets(*evaluation_assets),
    description="pass@1 and pass@k of the base model and every checkpoint of a training run, on an evaluation "
    "set disjoint from its curriculum.",
)

# The probe assets feed `curriculum` only when it stages predictions: a relabel leaves them alone.
relabel_job = define_asset_job(
    "relabel_job",
    selection=(AssetSelection.assets(history.difficulty_history, history.difficulty_matrix, curriculum.curriculum).upstream()
               - AssetSelection.assets(*probe_assets)).required_multi_asset_neighbors(),
    description="Relabel against the current target: ingest problems, generate only what the rollout cache "
    "lacks (stale or new problems), re-verify, rebuild the curriculum and record the label version.",
)

jobs = [label_job, probe_job, train_job, evaluate_job, relabel_job]


def unattended_run_config() -> dict[str, Any]:
    """The run config for schedule and sensor runs: the YAML file `GRADUS_RUN_CONFIG`, or empty
    (the same format as `python -m assets.main --config`)."""
    path = os.environ.get("GRADUS_RUN_CONFIG")
    return (yaml.safe_load(Path(path).read_text()) or {}) if path else {}

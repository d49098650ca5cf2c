"""The gradus code location: `dagster dev` loads this module (see workspace.yaml).

Engine and model are picked from the environment so one deployment can point at another model
or engine without code changes:
  GRADUS_ENGINE      vllm (default) | transformers
  GRADUS_MODEL_PATH  local HF model folder (default: the embedded SmolLM2-135M-Instruct)
  GRADUS_HOME        storage root (default: .gradus/)
"""

from __future__ import annotations

import os

from dagster import Definitions, define_asset_job

from assets import curriculum as curriculum_assets
from assets import labelling, problems
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
    }


all_assets = [problems.problems, labelling.rollouts, labelling.rewards, labelling.pass_rates,
              curriculum_assets.curriculum]

# Generation-heavy steps must not start two engines at once on a small machine: one engine per run.
label_job = define_asset_job(
    "label_job",
    selection="*",
    description="Ingest problems, roll out, verify, label and build the curriculum.",
    executor_def=None,
)

defs = Definitions(assets=all_assets, jobs=[label_job], resources=resources())

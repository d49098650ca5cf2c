"""The deployment: which resources a run gets, read from the environment once.

`resources()` builds the set a deployment runs with:
  GRADUS_HOME            storage root (default: .gradus/)
  GRADUS_CHECKPOINT_DIR  folder the checkpoint sensor watches (default: $GRADUS_HOME/checkpoints)
  GRADUS_ENGINE          vllm (default) | transformers
  GRADUS_BACKEND         local (default) | ray: generate and verify on a Ray cluster
  RAY_ADDRESS            the Ray cluster to join with GRADUS_BACKEND=ray
  GRADUS_MODEL_PATH      local HF model folder (default: the embedded SmolLM2-135M-Instruct)
  GRADUS_HUB_REPO        dataset repository `hub_curriculum` publishes to
  HF_TOKEN               Hub token, passed as an EnvVar so run records never hold its value
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import EnvVar

from assets.io_manager import ParquetIOManager
from assets.resources import (
    ComputeBackend,
    GradusStorage,
    HubPublisher,
    InferenceEngine,
    StrataResource,
    TargetModel,
    TransformersEngineResource,
    Verifier,
    VLLMEngineResource,
)

ENGINE_RESOURCES: dict[str, type[InferenceEngine]] = {
    resource.__specs__[0].kind: resource for resource in (VLLMEngineResource, TransformersEngineResource)
}


def engine_resource(kind: str, **options: object) -> InferenceEngine:
    """The engine resource of `kind` (`GRADUS_ENGINE`), refusing an unknown name."""
    if kind not in ENGINE_RESOURCES:
        raise ValueError(f"GRADUS_ENGINE={kind!r}: use one of {sorted(ENGINE_RESOURCES)}")
    return ENGINE_RESOURCES[kind](**options)


def resources(environ: Mapping[str, str] | None = None, **replace: object) -> dict[str, object]:
    """Every resource gradus runs with, configured from `environ` (default: the process environment,
    read here and nowhere else); `replace` swaps whole resources by key (tests pass their engine)."""
    env = os.environ if environ is None else environ
    storage = GradusStorage(home=env.get("GRADUS_HOME", ""), checkpoint_dir=env.get("GRADUS_CHECKPOINT_DIR", ""))
    built: dict[str, object] = {
        "storage": storage,
        "io_manager": ParquetIOManager(storage=storage),
        "target_model": TargetModel(model_path=env.get("GRADUS_MODEL_PATH", "")),
        "strata": StrataResource(),
        "engine": engine_resource(env.get("GRADUS_ENGINE") or "vllm"),
        "verifier": Verifier(),
        "backend": ComputeBackend(kind=env.get("GRADUS_BACKEND") or "local", ray_address=env.get("RAY_ADDRESS", "")),
        # EnvVar keeps the token's value out of run records; unset, a run would fail on it.
        "hub": HubPublisher(repo_id=env.get("GRADUS_HUB_REPO", ""),
                            token=EnvVar("HF_TOKEN") if env.get("HF_TOKEN") else None),
    }
    unknown = set(replace) - set(built)
    if unknown:
        raise KeyError(f"no resource named {sorted(unknown)}: gradus has {sorted(built)}")
    built.update(replace)
    if "storage" in replace and "io_manager" not in replace:
        built["io_manager"] = ParquetIOManager(storage=built["storage"])
    return built

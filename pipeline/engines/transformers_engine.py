"""transformers `generate`: the fallback engine (no vLLM, or debugging), same records as vLLM."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from pipeline.core.model import ModelSpec, load_tokenizer
from pipeline.engines.base import Completion, Engine, GenerationRequest, SamplingConfig
from pipeline.engines.options import TransformersOptions

log = logging.getLogger(__name__)


class TransformersEngine(Engine):
    """Batched `model.generate` with left padding.

    Seeding differs from vLLM by necessity: `generate` draws from one RNG per call, so each batch is
    seeded from the keys of its requests. A rerun of the same requests reproduces the same text; a
    request's text can change if it is batched with different neighbours.
    """

    name = "transformers"

    def __init__(self, model: ModelSpec, options: TransformersOptions = TransformersOptions()) -> None:
        super().__init__(model)
        import torch
        from transformers import AutoModelForCausalLM

        if options.threads:
            torch.set_num_threads(options.threads)
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = device
        self._batch_size = options.batch_size
        log.info("loading %s into transformers on %s…", model.key, device)
        started = time.perf_counter()
        self._tokenizer = load_tokenizer(model)
        self._model = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32)
        self._model.to(device).eval()
        log.info("transformers engine ready in %.0f s", time.perf_counter() - started)

    def batch_size(self) -> int:
        return self._batch_size

    def _generate_batch(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> list[Completion]:
        import torch

        prompts = [
            self._tokenizer.apply_chat_template(r.chat(), tokenize=False, add_generation_prompt=True)
            for r in requests
        ]
        enc = self._tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self._device) for k, v in enc.items()}
        seed = sum(sampling.request_seed(r.problem_id, r.sample_index) for r in requests) % (2**31)
        torch.manual_seed(seed)
        do_sample = sampling.temperature > 0
        with torch.inference_mode():
            out = self._model.generate(
                **enc,
                do_sample=do_sample,
                temperature=sampling.temperature if do_sample else None,
                top_p=sampling.top_p if do_sample else None,
                top_k=0 if do_sample else None,
                max_new_tokens=sampling.max_tokens,
                pad_token_id=self._tokenizer.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        eos = set(self._eos_ids())
        completions = []
        for row in new.tolist():
            n = len(row)
            for i, tok in enumerate(row):
                if tok in eos:
                    n = i
                    break
            finish = "stop" if n < len(row) else "length"
            # An EOS token counts as generated, as vLLM counts it.
            tokens = n + 1 if finish == "stop" else n
            completions.append(
                Completion(self._tokenizer.decode(row[:n], skip_special_tokens=True), tokens, finish)
            )
        return completions

    def _eos_ids(self) -> list[int]:
        ids = self._model.generation_config.eos_token_id
        if ids is None:
            ids = self._tokenizer.eos_token_id
        return list(ids) if isinstance(ids, (list, tuple)) else [ids]

    def close(self) -> None:
        self._model = None

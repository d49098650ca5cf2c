"""Inference engines: one interface, a vLLM and a transformers implementation."""

from pipeline.engines.base import Completion, Engine, GenerationRequest, SamplingConfig

__all__ = ["Completion", "Engine", "GenerationRequest", "SamplingConfig", "create_engine"]


def create_engine(kind: str, model, **options) -> Engine:
    """Build an engine by name (`vllm` or `transformers`) for a `ModelSpec`; imports lazily."""
    if kind == "vllm":
        from pipeline.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, **options)
    if kind == "transformers":
        from pipeline.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, **options)
    raise ValueError(f"unknown engine {kind!r}: use 'vllm' or 'transformers'")

"""Inference engines: one interface, a vLLM and a transformers implementation."""

from pipeline.engines.base import Completion, Engine, GenerationRequest, SamplingConfig
from pipeline.engines.options import ENGINES, engine_options

__all__ = ["Completion", "ENGINES", "Engine", "GenerationRequest", "SamplingConfig", "create_engine"]


def create_engine(kind: str, model, **options) -> Engine:
    """Build an engine by name (`vllm` or `transformers`, see `ENGINES`) for a `ModelSpec`."""
    return engine_options(kind, **options).create(model)

"""Inference engines: one interface, a vLLM and a transformers implementation."""

from pipeline.engines.base import Completion, Engine, GenerationRequest, SamplingConfig
from pipeline.engines.factory import ENGINES, create_engine, engine_options, start_engine

__all__ = ["Completion", "ENGINES", "Engine", "GenerationRequest", "SamplingConfig", "create_engine",
           "engine_options", "start_engine"]

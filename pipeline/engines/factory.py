"""The one registry of engines: `ENGINES` maps a name to its options spec, and `create` starts that
engine, importing its backend (vLLM, torch) only then."""

from __future__ import annotations

from pipeline.core.model import ModelSpec
from pipeline.engines.base import Engine
from pipeline.engines.options import TransformersOptions, VLLMOptions

EngineOptions = VLLMOptions | TransformersOptions

ENGINES: dict[str, type[VLLMOptions] | type[TransformersOptions]] = {
    options.kind: options for options in (VLLMOptions, TransformersOptions)
}


def engine_options(kind: str, **options: object) -> EngineOptions:
    """The options of engine `kind`, refusing an unknown name."""
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}: use one of {', '.join(sorted(ENGINES))}")
    return ENGINES[kind](**options)


def start_engine(options: EngineOptions, model: ModelSpec) -> Engine:
    """Start the engine that `options` configures, for `model`."""
    if isinstance(options, VLLMOptions):
        from pipeline.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, options)
    from pipeline.engines.transformers_engine import TransformersEngine

    return TransformersEngine(model, options)


def create_engine(kind: str, model: ModelSpec, **options: object) -> Engine:
    """Build an engine by name (`vllm` or `transformers`, see `ENGINES`) for a `ModelSpec`."""
    return start_engine(engine_options(kind, **options), model)

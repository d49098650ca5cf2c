"""The engine interface shared by vLLM and transformers: same requests, parameters and records."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

from pipeline.core.model import ModelSpec
from pipeline.core.records import canonical_json, content_hash

log = logging.getLogger(__name__)

Progress = Callable[[int, int, float], None]
"""Called after each batch with (requests done, requests total, generated tokens per second)."""


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters; part of every label key, so changing one gives new labels."""

    temperature: float = field(default=0.8, metadata={
        "help": "sampling temperature; pass rates depend on it: label at the temperature your RL trainer samples at"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    max_tokens: int = field(default=160, metadata={
        "help": "generation cap per rollout; a truncated answer usually fails verification (the default keeps "
        "SmolLM2-135M's cuts on the embedded problems under a tenth: 96 cut 15%, 160 cuts 9%)"})
    seed: int = field(default=0, metadata={
        "help": "base sampling seed; each (problem, sample index) derives its own, independent of batching"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError(f"temperature must be in [0, 5], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def key(self) -> str:
        """A short stable hash of the parameters."""
        return "s-" + content_hash(canonical_json(asdict(self)), length=10)

    def request_seed(self, problem_id: str, sample_index: int) -> int:
        """The seed of one sample: a pure function of its key, so reruns reproduce it exactly."""
        return int(content_hash(str(self.seed), problem_id, str(sample_index), length=8), 16)


@dataclass(frozen=True)
class GenerationRequest:
    """One sample to draw: a problem's chat messages and the sample's index."""

    problem_id: str
    sample_index: int
    messages: tuple[tuple[str, str], ...]
    """(role, content) pairs; a tuple so requests are hashable."""

    @staticmethod
    def of(problem_id: str, sample_index: int, prompt: Sequence[dict]) -> "GenerationRequest":
        return GenerationRequest(
            problem_id, int(sample_index), tuple((m["role"], m["content"]) for m in prompt)
        )

    def chat(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass(frozen=True)
class Completion:
    """What an engine returns for one request."""

    text: str
    num_tokens: int
    finish_reason: str
    """`stop` (end of sequence or stop string), `length` (hit max_tokens)."""


@dataclass
class GenerationTally:
    """What a generate call made, without the completions themselves (they are in the store)."""

    rollouts: int = 0
    tokens: int = 0
    truncated: int = 0
    """Completions cut at `max_tokens` (finish reason `length`)."""

    def add(self, completions: Sequence[Completion]) -> None:
        self.rollouts += len(completions)
        self.tokens += sum(c.num_tokens for c in completions)
        self.truncated += sum(c.finish_reason == "length" for c in completions)

    def merge(self, other: "GenerationTally") -> None:
        self.rollouts += other.rollouts
        self.tokens += other.tokens
        self.truncated += other.truncated


class Engine(abc.ABC):
    """Generates completions for chat requests with a given `SamplingConfig`."""

    name: str

    def __init__(self, model: ModelSpec) -> None:
        self.model = model

    def _generate_batch(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> list[Completion]:
        """Generate one batch. An engine implements this (the default `_stream` calls it a batch at a
        time) or overrides `_stream` or `generate`."""
        raise NotImplementedError(f"{type(self).__name__} generates through `_stream` or `generate`")

    def _stream(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> Iterator[tuple[list[int], list[Completion]]]:
        """Finished requests in groups, as (their indices into `requests`, their completions); each
        group is the unit of progress and of `on_batch`. By default, `batch_size()` requests at a
        time through `_generate_batch`."""
        size = self.batch_size()
        for start in range(0, len(requests), size):
            batch = requests[start : start + size]
            yield list(range(start, start + len(batch))), self._generate_batch(batch, sampling)

    def batch_size(self) -> int:
        """How many requests to hand the engine at once."""
        return 256

    def _checked(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig, progress: Progress | None,
        on_batch: Callable[[Sequence[GenerationRequest], list[Completion]], None] | None,
    ) -> Iterator[tuple[list[int], list[Completion]]]:
        """`_stream`, with each group handed to `on_batch` and counted towards `progress`, and loud
        when the engine lost a request."""
        done = tokens = 0
        returned = [False] * len(requests)
        started = time.perf_counter()
        for indices, completions in self._stream(requests, sampling):
            if len(completions) != len(indices):
                raise RuntimeError(f"{self.name} returned {len(completions)} of {len(indices)} completions")
            if on_batch is not None:
                on_batch([requests[i] for i in indices], completions)
            for i in indices:
                returned[i] = True
            done += len(indices)
            tokens += sum(c.num_tokens for c in completions)
            if progress is not None:
                progress(done, len(requests), tokens / max(time.perf_counter() - started, 1e-9))
            yield indices, completions
        if done != len(requests):
            lost = requests[returned.index(False)]
            raise RuntimeError(f"{self.name} returned no completion for {len(requests) - done} of {len(requests)} "
                               f"requests, e.g. {lost.problem_id}#{lost.sample_index}")

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        sampling: SamplingConfig,
        progress: Progress | None = None,
        on_batch: Callable[[Sequence[GenerationRequest], list[Completion]], None] | None = None,
    ) -> list[Completion]:
        """Generate all requests, in request order, reporting progress and handing each finished
        group to `on_batch` (so callers can persist it before more finish)."""
        out: list[Completion | None] = [None] * len(requests)
        for indices, completions in self._checked(requests, sampling, progress, on_batch):
            for i, completion in zip(indices, completions):
                out[i] = completion
        return out  # type: ignore[return-value]  # every slot is filled: _checked raises otherwise

    def generate_stored(
        self,
        requests: Sequence[GenerationRequest],
        sampling: SamplingConfig,
        store: Callable[[Sequence[GenerationRequest], list[Completion]], None],
        progress: Progress | None = None,
    ) -> GenerationTally:
        """Generate all requests into the rollout store (`store` persists each finished group) and
        return only their counts: the caller's memory does not grow with the rollouts. An engine
        whose workers write the store where they generate (Ray) never calls `store`."""
        tally = GenerationTally()
        for _, completions in self._checked(requests, sampling, progress, store):
            tally.add(completions)
        return tally

    def close(self) -> None:
        """Release the engine (processes, memory). Safe to call twice."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

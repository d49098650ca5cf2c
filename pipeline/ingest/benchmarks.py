"""Evaluation sets (benchmarks) the pool is checked against, configured like problem sources.

Each set has a name and one origin: reasoning-gym generators, a local dataset (Parquet / JSONL /
JSON / CSV / `save_to_disk`, read by `pipeline.ingest.sources`), or a Hub dataset name, fetched once when
the machine is online and kept under `$GRADUS_HOME/evaluation_sets/<name>/` so later runs read it
offline. The embedded default is held-out reasoning-gym problems: the default generators drawn
with other seeds, so the same set can later evaluate trained policies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path

import pandas as pd

from pipeline.core.records import Problem, QuarantinedRow
from pipeline.core.storage import StorageLayout, replacing, safe_name
from pipeline.ingest.sources import (
    DEFAULT_GENERATORS,
    DatasetSource,
    RawRow,
    ReasoningGymSource,
    dataset_rows,
    normalise,
    reasoning_gym_rows,
)

HELDOUT_SEED_OFFSET = 1_000_000
"""Added to a generator's training seed: default training seeds are below 1,002,000 (name hash
plus 1000 per level), so held-out seeds never repeat them."""
DEFAULT_BENCHMARK = "reasoning_gym_heldout"


@dataclass(frozen=True)
class EvaluationSet:
    """One named evaluation set; exactly one of `generators`, `path` and `hub` is set."""

    name: str = field(metadata={"help": "benchmark name, used in column names and reports"})
    generators: tuple[ReasoningGymSource, ...] = field(default=(), metadata={
        "help": "reasoning-gym generators (seed them apart from the training pool's)"})
    path: str | None = field(default=None, metadata={"help": "local Parquet/JSONL/JSON/CSV file or folder, or save_to_disk folder"})
    hub: str | None = field(default=None, metadata={
        "help": "Hub dataset name, fetched once when online and kept under $GRADUS_HOME/evaluation_sets/"})
    hub_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    split: str = field(default="test", metadata={"help": "split to read"})
    prompt_field: str = field(default="problem", metadata={"help": "column with the question (path and hub sets)"})
    answer_field: str = field(default="answer", metadata={"help": "column with the gold answer (path and hub sets)"})
    limit: int | None = field(default=None, metadata={"help": "read at most this many rows"})

    def __post_init__(self) -> None:
        safe_name(self.name)
        if "/" in self.name:
            raise ValueError(f"evaluation set name {self.name!r} must not contain '/' (it names report columns)")
        origins = [o for o in ("generators", "path", "hub") if getattr(self, o)]
        if len(origins) != 1:
            raise ValueError(f"evaluation set {self.name!r} needs exactly one of generators, path or hub "
                             f"(got {origins or 'none'})")


def heldout(source: ReasoningGymSource) -> ReasoningGymSource:
    """The same generator and levels, drawn with seeds the training pool does not use."""
    return replace(source, seed=source.base_seed + HELDOUT_SEED_OFFSET)


def default_evaluation_set(generators: Sequence[ReasoningGymSource]) -> EvaluationSet:
    return EvaluationSet(DEFAULT_BENCHMARK, generators=tuple(heldout(g) for g in generators))


@dataclass(frozen=True)
class EvaluationSetsSpec:
    """The benchmarks the pool is checked against (and trained policies evaluated on)."""

    benchmarks: tuple[EvaluationSet, ...] = field(
        default=(default_evaluation_set(DEFAULT_GENERATORS),),
        metadata={"help": "evaluation sets; the default draws the default generators with held-out seeds"})


def hub_snapshot(spec: EvaluationSet, home: Path) -> Path:
    """The local copy of a Hub evaluation set, fetched on first use (needs the network then)."""
    folder = StorageLayout(str(home)).evaluation_set(spec.name)
    if (folder / "dataset_info.json").exists():
        return folder
    import datasets

    try:
        dataset = datasets.load_dataset(spec.hub, spec.hub_config, split=spec.split)
    except Exception as exc:
        raise RuntimeError(
            f"cannot fetch evaluation set {spec.name!r} from the Hub ({spec.hub}, split {spec.split}): "
            f"{type(exc).__name__}: {exc}. Run once online, or point `path` at a local copy."
        ) from exc
    with replacing(folder) as staging:
        dataset.save_to_disk(str(staging))
    return folder


def evaluation_rows(spec: EvaluationSet, home: Path) -> Iterable[RawRow]:
    if spec.generators:
        return chain.from_iterable(reasoning_gym_rows(g) for g in spec.generators)
    path = str(hub_snapshot(spec, home)) if spec.hub else str(spec.path)
    split = "train" if spec.hub else spec.split  # a snapshot holds the one split it was fetched with
    return dataset_rows(DatasetSource(path, prompt_field=spec.prompt_field, answer_field=spec.answer_field,
                                      split=split, name=spec.name, limit=spec.limit))


def load_evaluation_sets(sets: Sequence[EvaluationSet], home: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every set's problems (the `Problem` columns plus `benchmark`) and its unusable rows (the
    `QuarantinedRow` columns plus `benchmark`). Gold answers are not verified: a benchmark row only
    has to be readable to be checked against."""
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluation set names must be unique, got {names}")
    problems, quarantined = [], []
    for spec in sets:
        part = normalise(evaluation_rows(spec, home), max_prompt_chars=1 << 30)
        if not part.problems:
            # An empty benchmark would pass every pool as uncontaminated and evaluate on nothing.
            raise ValueError(f"evaluation set {spec.name!r} has no usable problem ({len(part.quarantined)} rows "
                             "quarantined): check its path or generators and its prompt_field / answer_field")
        problems.append(Problem.to_frame(part.problems).assign(benchmark=spec.name))
        quarantined.append(QuarantinedRow.to_frame(part.quarantined).assign(benchmark=spec.name))
    empty_p = Problem.empty_frame().assign(benchmark=pd.Series(dtype=str))
    empty_q = QuarantinedRow.empty_frame().assign(benchmark=pd.Series(dtype=str))
    return (pd.concat(problems, ignore_index=True) if problems else empty_p,
            pd.concat(quarantined, ignore_index=True) if quarantined else empty_q)

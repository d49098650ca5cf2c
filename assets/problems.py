"""`problems` and `quarantined_problems`: every source normalised into one schema."""


from typing import Optional

from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, AssetOut, Config, Output, multi_asset
from pydantic import Field

from assets.metadata import counts_table, preview, schema
from assets.resources import GradusStorage, TargetModel, Verifier
from pipeline.model import load_tokenizer, special_token_strings
from pipeline.records import Problem, QuarantinedRow
from pipeline.sources import DatasetSource, FieldMapping, ReasoningGymSource, load_problems


class GeneratorConfig(Config):
    """A reasoning-gym generator and the difficulty levels to draw from it."""

    name: str = Field(description="reasoning-gym generator name, e.g. chain_sum")
    levels: list[int] = Field(default=[0, 1, 2], description="curriculum levels; 0 is easiest")
    size_per_level: int = Field(default=8, description="problems per level")
    seed: Optional[int] = Field(default=None, description="base seed (default: derived from the name)")


class DatasetConfig(Config):
    """A local dataset (Parquet/JSONL/JSON/CSV file or folder, or a `save_to_disk` folder)."""

    path: str = Field(description="local file or folder; nothing is downloaded")
    prompt_field: str = Field(default="problem", description="column with the question or chat messages")
    answer_field: str = Field(default="answer", description="column with the gold answer")
    category_field: Optional[str] = Field(default=None, description="column used as category")
    system_prompt: Optional[str] = Field(default=None, description="system message for text prompts")
    verifier: str = Field(default="math", description="math or reasoning_gym")
    split: str = Field(default="train", description="split of a save_to_disk DatasetDict")
    name: Optional[str] = Field(default=None, description="source name (default: the file name)")
    limit: Optional[int] = Field(default=None, description="read at most this many rows")
    id_field: Optional[str] = Field(
        default=None, description="column with the source's own ids; an id reused for another problem is quarantined"
    )
    special_tokens: str = Field(
        default="quarantine", description="text holding the target model's special tokens: quarantine or escape"
    )


DEFAULT_GENERATORS = ("basic_arithmetic", "chain_sum", "leg_counting")


class ProblemsConfig(Config):
    """Which problems to label. The default is three reasoning-gym generators at three levels."""

    generators: list[GeneratorConfig] = Field(
        default=[{"name": n, "levels": [0, 1, 2], "size_per_level": 4} for n in DEFAULT_GENERATORS],
        description="reasoning-gym generators",
    )
    datasets: list[DatasetConfig] = Field(default=[], description="local datasets")
    max_prompt_chars: int = Field(default=8000, description="longer prompts are quarantined")


@multi_asset(
    outs={
        "problems": AssetOut(description="The normalised problem pool: one row per usable problem.",
                             is_required=True),
        "quarantined_problems": AssetOut(description="Rows that could not be used, each with a reason.",
                                         is_required=True),
    },
    check_specs=[AssetCheckSpec("problem_ids_are_unique", asset="problems", blocking=True,
                                description="No two problems share a problem_id.")],
    group_name="labelling",
)
def problems(
    context: AssetExecutionContext,
    config: ProblemsConfig,
    verifier: Verifier,
    storage: GradusStorage,
    target_model: TargetModel,
):
    """Ingest every configured source into one schema; bad rows go to `quarantined_problems`,
    among them text holding a special token of the target model's tokenizer."""
    tokenizer = load_tokenizer(target_model.spec(storage.root()))
    normalised = load_problems(
        reasoning_gym=[
            ReasoningGymSource(g.name, tuple(g.levels), g.size_per_level, g.seed) for g in config.generators
        ],
        datasets=[
            DatasetSource(
                d.path,
                FieldMapping(d.prompt_field, d.answer_field, d.category_field, d.system_prompt, d.id_field),
                d.verifier,
                d.split,
                d.name,
                d.limit,
                special_tokens=d.special_tokens,
            )
            for d in config.datasets
        ],
        max_prompt_chars=config.max_prompt_chars,
        pool=verifier.pool(),
        special_tokens=special_token_strings(tokenizer),
    )
    good = Problem.to_frame(normalised.problems)
    bad = QuarantinedRow.to_frame(normalised.quarantined)
    reasons = bad["reason"].value_counts().to_dict() if len(bad) else {}
    context.log.info(f"{len(good)} problems, {len(bad)} quarantined {reasons or ''}")
    yield Output(
        good,
        output_name="problems",
        metadata={
            "rows": len(good),
            "quarantined": len(bad),
            "per_category": counts_table(good["category"].value_counts().sort_index().to_dict(), "category"),
            "preview": preview(good, ["problem_id", "category", "answer", "prompt"]),
            "schema": schema(good),
        },
    )
    yield Output(
        bad,
        output_name="quarantined_problems",
        metadata={"rows": len(bad), "reasons": counts_table(reasons, "reason"), "preview": preview(bad)},
    )
    dupes = int(good["problem_id"].duplicated().sum())
    yield AssetCheckResult(
        check_name="problem_ids_are_unique",
        asset_key="problems",
        passed=dupes == 0,
        metadata={"duplicates": dupes},
    )


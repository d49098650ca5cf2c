"""`problems` and `quarantined_problems`: every source normalised into one schema."""


from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, AssetOut, Output, multi_asset

from assets.config import op_config, spec_config
from assets.metadata import counts_table, preview, schema
from assets.preflight import check_run_config, check_trials
from assets.resources import GradusStorage, TargetModel, Verifier
from pipeline.core.model import load_tokenizer, special_token_strings
from pipeline.core.records import Problem, QuarantinedRow
from pipeline.ingest.sources import ProblemsSpec


@op_config("problems")
class ProblemsConfig(spec_config(ProblemsSpec)):
    """Which problems to label. The default is three reasoning-gym generators at their easiest level."""


@multi_asset(
    outs={
        "problems": AssetOut(description="The normalised problem pool: one row per usable problem.",
                             is_required=False),
        "quarantined_problems": AssetOut(description="Rows that could not be used, each with a reason.",
                                         is_required=False),
    },
    check_specs=[AssetCheckSpec("problem_ids_are_unique", asset="problems", blocking=True,
                                description="No two problems share a problem_id.")],
    group_name="labelling",
    # A user checks a new dataset by ingesting it alone: `--select problems` must work by itself.
    can_subset=True,
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
    # The first step of every labelling run: checking the whole run's config here stops a bad value
    # meant for a later step (a curriculum name, strata edges) before any engine starts.
    check_run_config(context.run_config)
    check_trials(context.run_config, target_model.sampling())
    tokenizer = load_tokenizer(target_model.spec(storage.layout().root))
    normalised = config.to_spec().load(verifier.pool(), special_token_strings(tokenizer))
    good = Problem.to_frame(normalised.problems)
    bad = QuarantinedRow.to_frame(normalised.quarantined)
    reasons = bad["reason"].value_counts().to_dict() if len(bad) else {}
    context.log.info(f"{len(good)} problems, {len(bad)} quarantined {reasons or ''}")
    selected = context.selected_output_names
    if "problems" in selected:
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
        dupes = int(good["problem_id"].duplicated().sum())
        yield AssetCheckResult(
            check_name="problem_ids_are_unique",
            asset_key="problems",
            passed=dupes == 0,
            metadata={"duplicates": dupes},
        )
    if "quarantined_problems" in selected:
        yield Output(
            bad,
            output_name="quarantined_problems",
            metadata={"rows": len(bad), "reasons": counts_table(reasons, "reason"), "preview": preview(bad)},
        )

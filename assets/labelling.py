"""`rollouts`, `rewards` and `pass_rates`: from problems to model-relative difficulty labels."""


import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)
from pydantic import Field

from assets.config import RolloutsConfig
from assets.metadata import counts_table, histogram_png, picture, preview
from assets.resources import GradusStorage, InferenceEngine, TargetModel, Verifier
from pipeline.labels import pass_rates as aggregate_pass_rates
from pipeline.rollout_store import RolloutStore
from pipeline.sampling import sample_rollouts
from pipeline.scoring import score_rollouts


@multi_asset(
    outs={
        "rollouts": AssetOut(description="Sampled completions, one row per (problem, sample index).",
                             is_required=True),
        "rollout_allocation": AssetOut(description="Per problem: rollouts spent and why sampling stopped.",
                                       is_required=True),
    },
    ins={"problems": AssetIn()},
    check_specs=[AssetCheckSpec("rollouts_match_allocation", asset="rollouts", blocking=True,
                                description="Every problem has exactly the rollouts its allocation asked for.")],
    group_name="labelling",
)
def rollouts(
    context: AssetExecutionContext,
    config: RolloutsConfig,
    problems: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
    engine: InferenceEngine,
    verifier: Verifier,
):
    """Sample rollouts from the target model; everything already in the rollout cache is reused,
    so re-materializing with the same settings generates nothing."""
    home = storage.root()
    model = target_model.spec(home)
    store = RolloutStore(home, model, target_model.sampling(), engine=engine.kind)
    strata = config.strata.strata()

    def scorer(frame: pd.DataFrame) -> pd.DataFrame:
        return score_rollouts(problems, frame, verifier.pool(), target_model.extraction_policy)

    report = sample_rollouts(
        problems, store, lambda: engine.engine(model), config.allocation(), strata, scorer, context.log.info
    )
    frame, alloc = report.rollouts, report.allocation
    uniform_cost = config.samples_per_problem * len(problems)
    context.log.info(
        f"{len(frame)} rollouts ({report.generated} generated, {len(frame) - report.generated} cached)"
        + (f", {report.tokens_per_second:.0f} tok/s" if report.generated else "")
    )
    yield Output(
        frame,
        output_name="rollouts",
        metadata={
            "rows": len(frame),
            "generated": report.generated,
            "reused_from_cache": len(frame) - report.generated,
            "generated_tokens": report.tokens,
            "tokens_per_second": round(report.tokens_per_second, 1),
            "engine": engine.kind,
            "engine_start_s": round(engine.start_seconds, 1),
            "model": model.key,
            "sampling": MetadataValue.json(vars(store.sampling)),
            "store": MetadataValue.path(str(store.root)),
            "finish_reasons": counts_table(frame["finish_reason"].value_counts().to_dict(), "finish reason"),
            "preview": preview(frame, ["problem_id", "sample_index", "num_tokens", "finish_reason", "text"]),
        },
    )
    yield Output(
        alloc,
        output_name="rollout_allocation",
        metadata={
            "policy": config.policy,
            "rounds": report.rounds,
            "rollouts_spent": int(alloc["trials"].sum()),
            "uniform_equivalent": uniform_cost,
            "stop_reasons": counts_table(alloc["stop_reason"].value_counts().to_dict(), "stop reason"),
        },
    )
    per_problem = frame.groupby("problem_id").size().reindex(alloc["problem_id"], fill_value=0)
    short = int((per_problem.to_numpy() != alloc["trials"].to_numpy()).sum())
    yield AssetCheckResult(
        check_name="rollouts_match_allocation",
        asset_key="rollouts",
        passed=short == 0,
        metadata={"problems_with_wrong_count": short},
    )


class RewardsConfig(Config):
    """How rollouts are scored."""

    show_failures: int = Field(default=8, description="failed answers shown in the preview")


@asset(group_name="labelling")
def rewards(
    context: AssetExecutionContext,
    config: RewardsConfig,
    problems: pd.DataFrame,
    rollouts: pd.DataFrame,
    target_model: TargetModel,
    verifier: Verifier,
) -> Output[pd.DataFrame]:
    """Verify every rollout: extract the final answer, then math-verify or the generator's scorer,
    each answer in an isolated worker with a hard timeout. Re-derived from stored rollouts, so a new
    verifier or extraction policy never regenerates anything."""
    step = max(len(rollouts) // 10, 1)

    def progress(done: int, total: int) -> None:
        if done == total or done % step == 0:
            context.log.info(f"verified {done}/{total} answers")

    frame = score_rollouts(problems, rollouts, verifier.pool(), target_model.extraction_policy, progress)
    failed = frame[~frame["passed"]].head(config.show_failures)
    return Output(
        frame,
        metadata={
            "rows": len(frame),
            "passed": int(frame["passed"].sum()),
            "mean_reward": float(frame["score"].mean()) if len(frame) else 0.0,
            "statuses": counts_table(frame["status"].value_counts().to_dict(), "status"),
            "extraction_policy": target_model.extraction_policy,
            "failed_preview": preview(failed, ["problem_id", "sample_index", "extracted", "status"]),
        },
    )


@asset(
    group_name="labelling",
    check_specs=[AssetCheckSpec("pass_rates_are_valid", asset="pass_rates", blocking=True,
                                description="Pass rates in [0, 1]; trials equal the rollouts scored.")],
)
def pass_rates(
    context: AssetExecutionContext,
    problems: pd.DataFrame,
    rewards: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
):
    """Per problem: successes, trials, pass rate and a 90% credible interval, keyed by model,
    revision, sampling parameters and verifier version."""
    target = target_model.target(storage.root())
    frame = aggregate_pass_rates(rewards, target)
    by_category = (
        frame.merge(problems[["problem_id", "category"]], on="problem_id")
        .groupby("category")["pass_rate"]
    )
    png = histogram_png({c: list(v) for c, v in by_category}, "pass rate by category")
    yield Output(
        frame,
        metadata={
            "rows": len(frame),
            "label_key": target.key,
            "mean_pass_rate": float(frame["pass_rate"].mean()) if len(frame) else 0.0,
            "never_solved": int((frame["successes"] == 0).sum()),
            "always_solved": int((frame["successes"] == frame["trials"]).sum()),
            "pass_rate_by_category": counts_table(
                {c: f"{v.mean():.3f}" for c, v in by_category}, "category", "mean pass rate"
            ),
            "histogram": picture(png, "pass-rate histogram"),
            "preview": preview(frame, ["problem_id", "successes", "trials", "pass_rate", "ci_low", "ci_high"]),
        },
    )
    counts = rewards.groupby("problem_id").size()
    bad_range = int(((frame["pass_rate"] < 0) | (frame["pass_rate"] > 1)).sum())
    bad_trials = int((frame.set_index("problem_id")["trials"] != counts.reindex(frame["problem_id"]).to_numpy()).sum())
    yield AssetCheckResult(
        check_name="pass_rates_are_valid",
        passed=bad_range == 0 and bad_trials == 0,
        metadata={"out_of_range": bad_range, "trials_mismatch": bad_trials},
    )

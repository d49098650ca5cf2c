"""`rollouts`, `rewards` and `pass_rates`: from problems to model-relative difficulty labels.

`rollouts` is a graph-backed asset: `shard_problems` splits the pool, one `sample_shard` step per
shard samples it with its own engine (in parallel under a multiprocess, k8s or celery executor),
and `merge_shards` reads every shard's rollouts back as one table.
"""

from dataclasses import replace

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    DynamicOut,
    DynamicOutput,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    asset,
    config_mapping,
    graph_multi_asset,
    op,
)
from pydantic import Field

from assets.config import spec_config
from assets.metadata import counts_table, histogram_png, picture, preview
from assets.resources import ComputeBackend, GradusStorage, InferenceEngine, StrataResource, TargetModel, Verifier
from pipeline.allocation import AllocationConfig
from pipeline.labels import pass_rates as aggregate_pass_rates
from pipeline.rollout_store import RolloutStore
from pipeline.sampling import sample_rollouts
from pipeline.scoring import score_rollouts
from pipeline.sharding import default_shards, merge_allocations, shard_budget, split_problems


ENGINE_POOL = "gradus_engine"
"""Dagster concurrency pool of the steps that run an engine: `dagster instance concurrency set
gradus_engine N` caps the engines alive at once over all runs (e.g. at the number of GPUs)."""

MATCH_ALLOCATION = AssetCheckSpec(
    "rollouts_match_allocation", asset="rollouts", blocking=True,
    description="Every problem has exactly the rollouts its allocation asked for.",
)


class RolloutsConfig(spec_config(AllocationConfig)):
    """How many rollouts each problem gets."""


class ShardedRolloutsConfig(RolloutsConfig):
    """`RolloutsConfig`, plus how many parallel steps share the sampling."""

    shards: int = Field(
        default=default_shards(),
        description="problem shards, each sampled in its own step with its own engine, in parallel "
        "under a multiprocess, k8s or celery executor (default: $GRADUS_SHARDS, else 1)",
    )


@op(out=DynamicOut(pd.DataFrame, description="The problems of one shard."))
def shard_problems(
    context: OpExecutionContext,
    config: ShardedRolloutsConfig,
    problems: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
):
    """Split the pool into shards by a stable hash of the problem id (empty shards are skipped)."""
    # Resolve the model (converting the embedded one on first use) before fanning out, so that
    # parallel shards never race to convert it.
    target_model.spec(storage.root())
    shards = split_problems(problems, config.shards) or {0: problems}
    context.log.info(f"{len(problems)} problems in {len(shards)} shards: "
                     + ", ".join(f"{i}: {len(s)}" for i, s in shards.items()))
    for index, shard in shards.items():
        yield DynamicOutput(shard, mapping_key=str(index))


@op(
    out={
        "allocation": Out(pd.DataFrame, description="The shard's rollout_allocation rows."),
        "stats": Out(pd.DataFrame, description="One row: what the shard generated and what it cost."),
    },
    pool=ENGINE_POOL,
)
def sample_shard(
    context: OpExecutionContext,
    config: RolloutsConfig,
    problems: pd.DataFrame,
    shard: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
    engine: InferenceEngine,
    verifier: Verifier,
    strata: StrataResource,
    backend: ComputeBackend,
):
    """Sample one shard with this step's own engine. Every finished batch is stored before the
    next starts, so a crashed or killed step loses at most the batch in flight, and its retry
    generates only what is missing."""
    home = storage.root()
    model = target_model.spec(home)
    store = RolloutStore(home, model, target_model.sampling(), engine=engine.kind)
    budget = shard_budget(config.total_budget, len(shard), len(problems))
    allocation = replace(config.to_spec(), total_budget=budget)

    def scorer(frame: pd.DataFrame) -> pd.DataFrame:
        return score_rollouts(shard, frame, verifier.pool(), target_model.extraction_policy)

    report = sample_rollouts(
        shard, store, backend.engine_factory(engine, store), allocation, strata.strata(), scorer, context.log.info
    )
    stats = {
        "shard": int(context.get_mapping_key() or 0),
        "problems": len(shard),
        "rollouts": len(report.rollouts),
        "generated": report.generated,
        "tokens": report.tokens,
        "generate_seconds": round(report.generate_seconds, 3),
        "rounds": report.rounds,
        "engine": engine.kind,
        "engine_start_s": round(engine.start_seconds, 1),
        **backend.metadata(),
    }
    context.log.info(
        f"shard {stats['shard']}: {len(report.rollouts)} rollouts ({report.generated} generated)"
        + (f", {report.tokens_per_second:.0f} tok/s" if report.generated else "")
    )
    yield Output(report.allocation, "allocation")
    yield Output(pd.DataFrame([stats]), "stats", metadata=stats)


@op(
    out={
        "rollouts": Out(pd.DataFrame),
        "rollout_allocation": Out(pd.DataFrame),
        "match_allocation": Out(description="The rollouts_match_allocation check."),
    },
)
def merge_shards(
    context: OpExecutionContext,
    config: RolloutsConfig,
    problems: pd.DataFrame,
    allocations: list[pd.DataFrame],
    stats: list[pd.DataFrame],
    storage: GradusStorage,
    target_model: TargetModel,
):
    """One rollouts table for the whole pool, read back from the store in (problem_id,
    sample_index) order, so it is the same whatever the shard count."""
    home = storage.root()
    model = target_model.spec(home)
    store = RolloutStore(home, model, target_model.sampling())
    ids = problems["problem_id"].tolist()
    alloc = merge_allocations(allocations, ids)
    frame = store.load(ids, dict(zip(alloc["problem_id"], alloc["trials"].tolist())))
    shards = pd.concat(stats, ignore_index=True).sort_values("shard", ignore_index=True)
    generated, tokens = int(shards["generated"].sum()), int(shards["tokens"].sum())
    tokens_per_second = tokens / float(shards["generate_seconds"].sum()) if generated else 0.0
    context.log.info(
        f"{len(frame)} rollouts from {len(shards)} shards ({generated} generated, {len(frame) - generated} cached)"
        + (f", {tokens_per_second:.0f} tok/s per engine" if generated else "")
    )
    per_shard = shards.assign(**{"tok/s": (shards["tokens"] / shards["generate_seconds"]).fillna(0).round(1)})
    yield Output(
        frame,
        output_name="rollouts",
        metadata={
            "rows": len(frame),
            "generated": generated,
            "reused_from_cache": len(frame) - generated,
            "generated_tokens": tokens,
            "tokens_per_second": round(tokens_per_second, 1),
            "engine": str(shards["engine"].iloc[0]),
            "engine_start_s": float(shards["engine_start_s"].max()),
            "shards": len(shards),
            "per_shard": preview(per_shard, ["shard", "problems", "generated", "tok/s", "engine_start_s"]
                                 + [c for c in per_shard.columns if c.startswith("ray_")]),
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
            "rounds": int(shards["rounds"].max()),
            "rollouts_spent": int(alloc["trials"].sum()),
            "uniform_equivalent": config.samples_per_problem * len(problems),
            "stop_reasons": counts_table(alloc["stop_reason"].value_counts().to_dict(), "stop reason"),
        },
    )
    per_problem = frame.groupby("problem_id").size().reindex(alloc["problem_id"], fill_value=0)
    short = int((per_problem.to_numpy() != alloc["trials"].to_numpy()).sum())
    yield AssetCheckResult(
        check_name=MATCH_ALLOCATION.name,
        asset_key=MATCH_ALLOCATION.asset_key,
        passed=short == 0,
        metadata={"problems_with_wrong_count": short},
    )


@config_mapping
def rollouts_config(config: ShardedRolloutsConfig) -> dict:
    """One config block for the asset (`ops: rollouts: config:`), handed to the ops inside it."""
    settings = config.model_dump()
    sampling = {k: v for k, v in settings.items() if k != "shards"}
    return {
        "shard_problems": {"config": settings},
        "sample_shard": {"config": sampling},
        "merge_shards": {"config": sampling},
    }


@graph_multi_asset(
    outs={
        "rollouts": AssetOut(description="Sampled completions, one row per (problem, sample index).",
                             is_required=True),
        "rollout_allocation": AssetOut(description="Per problem: rollouts spent and why sampling stopped.",
                                       is_required=True),
    },
    ins={"problems": AssetIn("unique_problems")},  # duplicates are never sampled
    check_specs=[MATCH_ALLOCATION],
    config=rollouts_config,
    group_name="labelling",
)
def rollouts(problems):
    """Sample rollouts from the target model, fanned out over problem shards (one step and one
    engine each); everything already in the rollout cache is reused, so re-materializing with the
    same settings generates nothing."""
    allocation, stats = shard_problems(problems).map(lambda shard: sample_shard(problems, shard))
    frame, alloc, check = merge_shards(problems, allocation.collect(), stats.collect())
    return {"rollouts": frame, "rollout_allocation": alloc, MATCH_ALLOCATION.get_python_identifier(): check}


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
    backend: ComputeBackend,
) -> Output[pd.DataFrame]:
    """Verify every rollout: extract the final answer, then math-verify or the generator's scorer,
    each answer in an isolated worker with a hard timeout. Re-derived from stored rollouts, so a new
    verifier or extraction policy never regenerates anything."""
    step = max(len(rollouts) // 10, 1)

    def progress(done: int, total: int) -> None:
        if done == total or done % step == 0:
            context.log.info(f"verified {done}/{total} answers")

    frame = backend.score(problems, rollouts, verifier, target_model.extraction_policy, progress)
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

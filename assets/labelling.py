"""`rollouts`, `rewards` and `pass_rates`: from problems to model-relative difficulty labels.

`rollouts` is a graph-backed asset: `shard_problems` splits the pool, one `sample_shard` step per
shard samples it with its own engine (in parallel under a multiprocess, k8s or celery executor),
and `merge_shards` checks every shard's rollouts in the store.

`rollouts` and `rewards` are `DatasetHandle`s, not frames: the rows stay in Parquet on disk (the
rollout store; `datasets/rewards/`) and every step streams them in bounded batches, so a million
problems x 16 rollouts never sit in one process's memory.
"""

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    DynamicOut,
    DynamicOutput,
    In,
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

from assets.config import op_config, spec_config
from assets.metadata import PREVIEW_ROWS, counts_table, figure, histogram_png, picture_entry, preview
from assets.resources import ComputeBackend, GradusStorage, InferenceEngine, StrataResource, TargetModel, Verifier
from pipeline.core.ids import IdIndex
from pipeline.core.model import ModelSpec
from pipeline.core.progress import Progress
from pipeline.core.records import PassRate
from pipeline.core.storage import BatchStream, ParquetSource, StorageLayout
from pipeline.difficulty.strata import Strata
from pipeline.labels.history import LabelHistory
from pipeline.labels.pass_rates import (
    LabelStream,
    check_rewards,
    count_passes,
    count_truncations,
    token_cap_report,
    truncation_bound,
)
from pipeline.labels.priors import PriorSource, PriorSpec, prediction_source, prior_report, relabel_allocation
from pipeline.probes.transfer import transferable_probe
from pipeline.rollouts.allocation import AllocationConfig
from pipeline.rollouts.handles import DatasetHandle
from pipeline.rollouts.sampling import sample_rollouts
from pipeline.rollouts.sharding import SAMPLE_COLUMNS, default_shards, merged_rollouts, shard_budget, shard_rows
from pipeline.rollouts.store import RolloutStore
from pipeline.verify.scoring import GOLD_COLUMNS, score_dataset, score_rollouts

ENGINE_POOL = "gradus_engine"
"""Dagster concurrency pool of the steps that run an engine: `dagster instance concurrency set
gradus_engine N` caps the engines alive at once over all runs (e.g. at the number of GPUs)."""

MATCH_ALLOCATION = AssetCheckSpec(
    "rollouts_match_allocation", asset="rollouts", blocking=True,
    description="Every problem has exactly the rollouts its allocation asked for.",
)


class RolloutsConfig(spec_config(AllocationConfig, PriorSpec)):
    """How many rollouts each problem gets, and under which priors."""


@op_config("rollouts")
class ShardedRolloutsConfig(RolloutsConfig):
    """`RolloutsConfig`, plus how many parallel steps share the sampling."""

    shards: int = Field(
        default=default_shards(),
        description="problem shards, each sampled in its own step with its own engine, in parallel "
        "under a multiprocess, k8s or celery executor (default: $GRADUS_SHARDS, else 1)",
    )


@op(out=DynamicOut(BatchStream, description="The problems of one shard."))
def shard_problems(
    context: OpExecutionContext,
    config: ShardedRolloutsConfig,
    problems: ParquetSource,
    storage: GradusStorage,
    target_model: TargetModel,
):
    """Split the pool into shards by a stable hash of the problem id (empty shards are skipped).
    Shards are split on the ids alone and streamed from the pool's file into the shard's step file
    a batch at a time: a million prompts held (or copied to be split) would cost gigabytes."""
    # Resolve the model (converting the embedded one on first use) before fanning out, so that
    # parallel shards never race to convert it.
    target_model.spec(storage.layout().root)
    rows = shard_rows(problems.column("problem_id"), config.shards) or {0: np.arange(0)}
    sizes = {i: len(r) for i, r in rows.items()} if len(rows) > 1 else {i: problems.num_rows for i in rows}
    context.log.info(f"{problems.num_rows} problems in {len(rows)} shards: "
                     + ", ".join(f"{i}: {n}" for i, n in sizes.items()))
    for index, positions in rows.items():
        # One shard is the whole pool, streamed as it is.
        shard = problems.batches() if len(rows) == 1 else problems.take_batches(positions)
        yield DynamicOutput(BatchStream(problems.schema, shard), mapping_key=str(index))


IDS_ONLY = {"columns": ["problem_id"]}
"""Input metadata for the IO manager: steps that need only the pool's ids do not load its prompts."""


@op(
    ins={"problems": In(metadata=IDS_ONLY)},
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
    shard: ParquetSource,
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
    # The prompts stay in the shard's file until a request needs them (a fully cached run reads
    # none); the ids and golds are Arrow-backed columns.
    golds = shard.read(GOLD_COLUMNS).to_pandas(types_mapper=pd.ArrowDtype)
    home = storage.layout().root
    model = target_model.spec(home)
    store = RolloutStore(home, model, target_model.sampling(), engine=engine.kind)
    budget = shard_budget(config.total_budget, len(golds), len(problems))
    configured = replace(config.to_spec(AllocationConfig), total_budget=budget)
    spec, target = config.to_spec(PriorSpec), target_model.target(home)
    predictions = probe_predictions(context, shard, storage.layout(), model, target.key) if spec.use_probe \
        and spec.use_priors else []
    allocation, priors = relabel_allocation(configured, spec, LabelHistory(home),
                                            golds["problem_id"].astype(str).tolist(), target, predictions)
    if priors is not None:
        context.log.info(f"relabel: adaptive under priors from {[s.name for s in priors.sources]}"
                         + (f" (configured policy: {configured.policy})" if configured.policy != "adaptive" else ""))

    def scorer(frame: pd.DataFrame) -> pd.DataFrame:
        return score_rollouts(golds, frame, verifier.pool(), target_model.extraction_policy)

    report = sample_rollouts(
        golds, store, backend.engine_factory(engine, store), allocation, strata.strata(), scorer, context.log.info,
        priors=priors, count_passes=backend.pass_counter(verifier, target_model.extraction_policy, golds, store),
        prompts=lambda rows: shard.take(rows, ["prompt"]).column("prompt").to_pylist(),
    )
    if priors is not None and priors.strengths is not None:
        context.log.info("prior source strengths (trials' worth, fitted on the first round):\n"
                         + priors.summary().to_string(index=False))
    stats = {
        "shard": int(context.get_mapping_key() or 0),
        "problems": len(golds),
        "rollouts": report.rows,
        "generated": report.generated,
        "tokens": report.tokens,
        "generate_seconds": round(report.generate_seconds, 3),
        "rounds": report.rounds,
        "policy": allocation.policy,
        "priors": priors is not None,
        "engine": engine.kind,
        "engine_start_s": round(engine.start_seconds, 1),
        **backend.metadata(),
    }
    context.log.info(
        f"shard {stats['shard']}: {report.rows} rollouts ({report.generated} generated)"
        + (f", {report.tokens_per_second:.0f} tok/s" if report.generated else "")
    )
    yield Output(report.allocation, "allocation")
    yield Output(pd.DataFrame([stats]), "stats", metadata=stats)


def probe_predictions(context: OpExecutionContext, shard: ParquetSource, layout: StorageLayout, model: ModelSpec,
                      target_key: str) -> list[PriorSource]:
    """The newest transferable probe's predictions for the shard under `model`, as a prior source
    (none without such a probe)."""
    found = transferable_probe(layout.probes, model, target_key)
    if found is None:
        return []
    prompts = shard.read(["problem_id", "prompt"]).to_pandas(types_mapper=pd.ArrowDtype)
    context.log.info(f"relabel: the probe at {found.folder} (fitted for {found.label_key}) predicts "
                     f"{len(prompts)} problems from {model.key}'s hidden states")
    tracker = Progress("probe prefill", len(prompts), context.log.info, unit="prompts")

    def progress(done: int, total: int) -> None:  # only uncached prompts are computed
        tracker.total = total
        tracker.update(done)

    predicted = found.predict(model, prompts, layout.hidden_states, progress)
    return [prediction_source(f"probe of {found.label_key}", predicted)]


@op(
    ins={"problems": In(metadata=IDS_ONLY)},
    out={
        "rollouts": Out(DatasetHandle),
        "rollout_allocation": Out(pd.DataFrame),
        "match_allocation": Out(description="The rollouts_match_allocation check."),
    },
)
def merge_shards(
    context: OpExecutionContext,
    config: RolloutsConfig,
    problems: pa.Table,
    allocations: list[pd.DataFrame],
    stats: list[pd.DataFrame],
    storage: GradusStorage,
    target_model: TargetModel,
    strata: StrataResource,
):
    """The rollouts of the whole pool, as a handle on the store: each problem's sample indices
    below its allocation, the same whatever the shard count (`pipeline.rollouts.sharding.merged_rollouts`)."""
    layout = storage.layout()
    model = target_model.spec(layout.root)
    store = RolloutStore(layout.root, model, target_model.sampling())
    merged = merged_rollouts(store, problems.column("problem_id"), allocations, stats,
                             layout.dataset(["rollouts"]) / "selection.parquet")
    shards, rows, generated = merged.shards, merged.handle.rows, merged.generated
    context.log.info(
        f"{rows} rollouts from {len(shards)} shards ({generated} generated, {rows - generated} cached)"
        + (f", {merged.tokens_per_second:.0f} tok/s per engine" if generated else "")
    )
    per_shard = shards.assign(**{"tok/s": (shards["tokens"] / shards["generate_seconds"]).fillna(0).round(1)})
    yield Output(
        merged.handle,
        output_name="rollouts",
        metadata={
            "rows": rows,
            "generated": generated,
            "reused_from_cache": rows - generated,
            "generated_tokens": merged.tokens,
            "tokens_per_second": round(merged.tokens_per_second, 1),
            "engine": str(shards["engine"].iloc[0]),
            "engine_start_s": float(shards["engine_start_s"].max()),
            "shards": len(shards),
            "per_shard": preview(per_shard, ["shard", "problems", "generated", "tok/s", "engine_start_s"]
                                 + [c for c in per_shard.columns if c.startswith("ray_")]),
            "model": model.key,
            "sampling": MetadataValue.json(vars(store.sampling)),
            "store": MetadataValue.path(str(store.root)),
            "store_parts": len(store.parts()),
            "finish_reasons": counts_table(merged.finish_reasons, "finish reason"),
            "preview": preview(merged.sample, SAMPLE_COLUMNS),
        },
    )
    alloc = merged.allocation
    adaptive = bool((shards["policy"] == "adaptive").any())
    policy = ("adaptive" if adaptive else config.policy) + (
        " (relabel under per-problem priors)" if shards["priors"].any() else "")
    yield Output(
        alloc,
        output_name="rollout_allocation",
        metadata={
            "policy": policy,
            "rounds": int(shards["rounds"].max()),
            "rollouts_spent": int(alloc["trials"].sum()),
            "uniform_equivalent": config.samples_per_problem * problems.num_rows,
            "stop_reasons": counts_table(alloc["stop_reason"].value_counts().to_dict(), "stop reason"),
            **(_prior_metadata(alloc, config, strata.strata()) if adaptive else {}),
        },
    )
    yield AssetCheckResult(
        check_name=MATCH_ALLOCATION.name,
        asset_key=MATCH_ALLOCATION.asset_key,
        passed=merged.short == 0,
        metadata={"problems_with_wrong_count": merged.short},
    )


def _prior_metadata(alloc: pd.DataFrame, config: RolloutsConfig, strata: Strata) -> dict:
    """Per prior source what the problems' priors were and what they saved (adaptive runs)."""
    table, totals = prior_report(alloc, config.to_spec(AllocationConfig), strata)
    return {"priors": preview(table, list(table.columns)), **{f"prior_{k}": v for k, v in totals.items()}}


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


@op_config("rewards")
class RewardsConfig(Config):
    """How rollouts are scored."""

    show_failures: int = Field(default=8, description="failed answers shown in the preview")


@asset(group_name="labelling", ins={"problems": AssetIn(metadata={"columns": GOLD_COLUMNS})})
def rewards(
    context: AssetExecutionContext,
    config: RewardsConfig,
    problems: pa.Table,
    rollouts: DatasetHandle,
    storage: GradusStorage,
    target_model: TargetModel,
    verifier: Verifier,
    backend: ComputeBackend,
) -> Output[DatasetHandle]:
    """Verify every rollout: extract the final answer, then math-verify or the generator's scorer,
    each answer in an isolated worker with a hard timeout (plain numbers and repeats are settled
    without one). Streamed batch by batch into `datasets/rewards/`, replaced whole on a rerun; a
    run killed partway resumes: the rerun keeps the parts already scored for the same inputs.
    Re-derived from stored rollouts, so a new verifier or extraction policy never regenerates."""
    folder, key = storage.layout().dataset(["rewards"]), target_model.target(storage.layout().root).key
    # A step whose rollouts are scored on the cluster starts no verifier workers of its own.
    pool = None if backend.on_ray else verifier.pool()
    before = pool.stats.copy() if pool else None
    if pool is None:
        handle, summary = backend.score_dataset(problems, rollouts, verifier, folder, target_model.extraction_policy,
                                                context.log.info, config.show_failures, key)
    else:
        handle, summary = score_dataset(problems, rollouts, pool, folder, target_model.extraction_policy,
                                        context.log.info, config.show_failures, label_key=key,
                                        home=storage.layout().root)
    routes: dict[str, int] = {}
    if pool is not None:
        spent = pool.stats - before
        routes = {"fast_path": spent["fast_path"], "memo_hits": spent["memo"], "worker_checks": spent["worker"],
                  "verifier_workers": len(pool.worker_pids)}
    failed = pd.concat(summary.failed, ignore_index=True) if summary.failed else pd.DataFrame(
        columns=["problem_id", "sample_index", "extracted", "status"])
    return Output(
        handle,
        metadata={
            "rows": summary.rows,
            "resumed_rows": summary.resumed,
            "passed": summary.passed,
            "mean_reward": figure(summary.mean_reward),
            "statuses": counts_table(dict(summary.statuses), "status"),
            "verifications_per_s": round(summary.rows / summary.seconds, 1) if summary.seconds else 0.0,
            **routes,
            "extraction_policy": target_model.extraction_policy,
            "dataset": MetadataValue.path(handle.path),
            "failed_preview": preview(failed, ["problem_id", "sample_index", "extracted", "status"]),
        },
    )


@asset(
    group_name="labelling",
    ins={"problems": AssetIn(metadata={"columns": ["problem_id", "category"]})},
    check_specs=[AssetCheckSpec("pass_rates_are_valid", asset="pass_rates", blocking=True,
                                description="Pass rates in [0, 1]; trials equal the rollouts scored."),
                 AssetCheckSpec("rollouts_rarely_hit_token_cap", asset="pass_rates",
                                description="At most a tenth of the rollouts were cut at max_tokens: a cut "
                                "rollout fails, so the labels would measure the cap, not difficulty.")],
)
def pass_rates(
    context: AssetExecutionContext,
    problems: pa.Table,
    rollouts: DatasetHandle,
    rewards: DatasetHandle,
    storage: GradusStorage,
    target_model: TargetModel,
):
    """Per problem: successes, trials, pass rate and a 90% credible interval, keyed by model,
    revision, sampling parameters and verifier version. Counted in one streamed pass over the
    rewards (a few counters per problem in memory, ids as sorted fixed-width bytes) and written a
    slice of labels at a time."""
    target = target_model.target(storage.layout().root)
    check_rewards(rewards.label_key, target)
    ids = problems.column("problem_id")
    index = IdIndex(ids)
    passes = Progress("counting passes", rewards.rows, context.log.info, unit="rewards")
    successes, trials = count_passes(passes.rows(rewards.batches(["problem_id", "passed"])), index)
    cuts = Progress("counting truncations", rollouts.rows, context.log.info, unit="rollouts")
    truncations = count_truncations(cuts.rows(rollouts.batches(["problem_id", "sample_index", "finish_reason"])),
                                    rewards.batches(["problem_id", "sample_index", "passed"]), index)
    labels = LabelStream(ids, successes, trials, target, truncations=truncations)
    scored = trials > 0
    rate = successes[scored] / trials[scored]
    bound = truncation_bound(successes[scored], trials[scored], truncations[1][scored])
    cap = token_cap_report(int(trials.sum()), int(truncations[0].sum()), int(bound.sum()),
                           target.sampling.max_tokens)
    # Codes, not strings: a million categories as Python objects would cost more than the counts.
    category = pc.dictionary_encode(problems.column("category").filter(pa.array(scored))).combine_chunks()
    codes = category.indices.to_numpy(zero_copy_only=False)
    by_category = {name: rate[codes == code] for code, name in
                   sorted(enumerate(category.dictionary.to_pylist()), key=lambda item: item[1])}
    png = histogram_png(by_category, "pass rate by category")
    first = next(labels.frames(limit=PREVIEW_ROWS), PassRate.empty_frame())
    yield Output(
        BatchStream(labels.schema, labels.batches()),
        metadata={
            **picture_entry(png, "pass-rate histogram per category"),
            "rows": labels.rows,
            "label_key": target.key,
            "mean_pass_rate": figure(rate.mean()) if labels.rows else 0.0,
            "never_solved": int((successes[scored] == 0).sum()),
            "always_solved": int((successes[scored] == trials[scored]).sum()),
            "pass_rate_by_category": counts_table(
                {c: f"{v.mean():.3f}" for c, v in by_category.items()}, "category", "mean pass rate"
            ),
            "truncated": cap["truncated"],
            "truncation_bound": cap["truncation_bound"],
            "preview": preview(first, ["problem_id", "successes", "trials", "truncated", "pass_rate", "ci_low",
                                       "ci_high"]),
        },
    )
    yield AssetCheckResult(check_name="rollouts_rarely_hit_token_cap", passed=cap["passed"],
                           severity=AssetCheckSeverity.WARN, description=cap["message"],
                           metadata={k: cap[k] for k in ("rollouts", "truncated", "share", "max_tokens")})
    bad_range = int(((rate < 0) | (rate > 1)).sum())
    bad_trials = abs(int(trials.sum()) - rewards.rows)
    yield AssetCheckResult(
        check_name="pass_rates_are_valid",
        passed=bad_range == 0 and bad_trials == 0,
        metadata={"out_of_range": bad_range, "trials_mismatch": bad_trials},
    )

"""`difficulty_history`: each label version's summary and its drift, appended to a Parquet history;
`difficulty_matrix`: every problem's latest pass rate under every labelled model side by side."""


import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, Output, asset

from assets.metadata import counts_table, figure, picture_entry, preview
from assets.resources import GradusStorage, StrataResource, TargetModel
from pipeline.core.plots import pass_rate_scatter, png
from pipeline.core.records import PassRate
from pipeline.labels.history import LabelHistory, counts_of, staleness
from pipeline.labels.matrix import group_names, history_matrix


@asset(group_name="operations")
def difficulty_history(
    context: AssetExecutionContext,
    pass_rates: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
    strata: StrataResource,
) -> MaterializeResult:
    """One row per label version (label key, time, problems per stratum, drift against the previous
    version) appended to `$GRADUS_HOME/history/difficulty_history.parquet`; each version's labels
    are kept beside it so the next one's drift can be measured."""
    home = storage.layout().root
    history = LabelHistory(home)
    before = history.summaries()
    previous = history.labels(before.iloc[-1]["version"]) if len(before) else PassRate.empty_frame()
    why = staleness(pass_rates, previous, target_model.target(home))["reason"].value_counts().to_dict()
    recorded = history.record(pass_rates, strata.strata())
    summary, drift = recorded.summary, recorded.drift
    context.log.info(
        f"label version {summary['version']} ({summary['label_key']}): "
        + (f"{summary['changed_stratum']} problems changed stratum, {summary['added']} added"
           if recorded.appended else "unchanged since the last version")
    )
    recent = history.summaries().tail(10).iloc[::-1]
    return MaterializeResult(metadata={
        "path": MetadataValue.path(str(history.summary_path)),
        "version": summary["version"],
        "label_key": summary["label_key"],
        "new_version": recorded.appended,
        "versions": len(before) + recorded.appended,
        "problems": int(summary["problems"]),
        "changed_stratum": int(summary["changed_stratum"]),
        "added": int(summary["added"]),
        "removed": int(summary["removed"]),
        "per_stratum": counts_table(counts_of(summary), "stratum", "problems"),
        "relabelled_because": counts_table(why, "reason", "problems"),
        "drift": MetadataValue.md(drift.transitions.to_markdown() if drift is not None else "_(no new version)_"),
        "history": preview(recent, ["recorded_at", "label_key", "problems", "changed_stratum", "added", "counts"]),
    })


@asset(group_name="operations", deps=[difficulty_history])
def difficulty_matrix(context: AssetExecutionContext, storage: GradusStorage, target_model: TargetModel) -> Output:
    """One row per problem, one column group per labelled (model, revision, sampling, policy, verifier)
    in the label history: `<model>.pass_rate`, `.ci_low`, `.ci_high`, `.trials` (NaN: never labelled
    under it). Groups are named by model id, with the revision or the whole label key only where one
    id has several. The picture plots the current target's pass rate against each other model's."""
    home = storage.layout().root
    history = LabelHistory(home)
    matrix = history_matrix(history)
    target_key = target_model.target(home).key
    names = group_names(matrix.groups)
    target = names.get(target_key)
    others = [n for n in matrix.groups["name"] if n != target]
    context.log.info(f"difficulty matrix: {len(matrix.values)} problems x {len(matrix.groups)} labelled models")
    metadata = {}
    if target is not None and others:
        x = matrix.rates(target)
        both = {n: x.notna() & matrix.rates(n).notna() for n in others}
        fig = pass_rate_scatter({n: (x[m].tolist(), matrix.rates(n)[m].tolist()) for n, m in both.items()},
                                f"{target} (target) pass rate")
        metadata.update(picture_entry(png(fig), "target pass rate against other models"))
    groups = matrix.groups.assign(mean_pass_rate=matrix.groups["mean_pass_rate"].map(figure))
    metadata.update({
        "problems": len(matrix.values),
        "models": len(matrix.groups),
        "target": target or "(not labelled yet)",
        "groups": preview(groups, ["name", "model_id", "revision", "sampling_key", "problems", "mean_pass_rate"]),
    })
    return Output(matrix.flat(), metadata=metadata)

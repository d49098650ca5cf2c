"""`difficulty_history`: each label version's summary and its drift, appended to a Parquet history."""


import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.metadata import counts_table, preview
from assets.resources import GradusStorage, StrataResource, TargetModel
from pipeline.core.records import PassRate
from pipeline.labels.history import LabelHistory, counts_of, staleness


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

"""`hub_curriculum`: the curriculum as a Hugging Face dataset repository, built locally, pushed on request.

Dry run is the default: the folder under `$GRADUS_HOME/hub/<name>/` is built exactly as the Hub
repository would hold it and the asset reports what would be uploaded. The token comes from
`HF_TOKEN` through `dagster.EnvVar` (so run records hold `{"env": "HF_TOKEN"}`, not the value) and
is never logged or put in metadata.
"""


from pathlib import Path

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from assets.config import op_config, spec_config
from assets.curriculum import curriculum
from assets.metadata import counts_table
from assets.resources import GradusStorage, HubPublisher
from pipeline.core.storage import inside_home
from pipeline.curriculum.build import CurriculumSpec, read_manifest
from pipeline.export.hub import CARD, ExportSpec, build_hub_folder, split_card


@op_config("hub_curriculum")
class HubCurriculumConfig(spec_config(ExportSpec)):
    """Which curriculum to export and how the card describes it."""


def _source_folder(context: AssetExecutionContext, config: HubCurriculumConfig, storage: GradusStorage) -> Path:
    if config.curriculum:
        return storage.layout().curriculum(config.curriculum)
    latest = context.instance.get_latest_materialization_event(AssetKey("curriculum"))
    path = latest and latest.asset_materialization and latest.asset_materialization.metadata.get("path")
    if not path:
        return storage.layout().curriculum(CurriculumSpec.name)
    return inside_home(path.value, storage.layout().root, "the latest curriculum's path in the event log")


@asset(group_name="curriculum", deps=[curriculum])
def hub_curriculum(
    context: AssetExecutionContext, config: HubCurriculumConfig, storage: GradusStorage, hub: HubPublisher
) -> MaterializeResult:
    """The curriculum as a Hugging Face dataset repository folder (one config per stage, a dataset
    card with provenance and licences), pushed to the Hub when `hub.dry_run` is off."""
    source = _source_folder(context, config, storage)
    out = storage.layout().hub(source.name)
    folder = build_hub_folder(source, out, license=config.license, pretty_name=config.pretty_name,
                              repo_id=hub.repo_id)
    files = folder.files()
    manifest = read_manifest(source)
    metadata = {
        "path": MetadataValue.path(str(folder.path)),
        "configs": MetadataValue.json(list(folder.configs)),
        "rows": counts_table(folder.rows, "stage", "rows"),
        "license": folder.license,
        "label_key": manifest.get("label_key", ""),
        "files": MetadataValue.md("| file | bytes |\n|---|---:|\n" + "\n".join(f"| {p} | {n} |" for p, n in files)),
        "card": MetadataValue.md(split_card((folder.path / CARD).read_text())[1]),
        "dry_run": hub.dry_run,
        "repo_id": hub.repo_id,
    }
    if hub.dry_run:
        context.log.info(f"dry run: would upload {len(files)} files ({sum(n for _, n in files)} bytes) "
                         f"from {folder.path} to {hub.repo_id or '<hub.repo_id unset>'}")
        return MaterializeResult(metadata=metadata)
    pushed = hub.publish(folder, f"gradus: {manifest.get('label_key', source.name)}")
    context.log.info(f"published {len(files)} files to {pushed.repo_id}@{pushed.revision}: {pushed.url}")
    return MaterializeResult(metadata={
        **metadata,
        "revision": pushed.revision,
        "commit": pushed.commit,
        "commit_url": MetadataValue.url(pushed.url),
        "created_repo": pushed.created_repo,
    })

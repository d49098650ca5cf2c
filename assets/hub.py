"""`hub_curriculum`: the curriculum as a Hugging Face dataset repository, built locally, pushed on request.

Dry run is the default: the folder under `$GRADUS_HOME/hub/<name>/` is built exactly as the Hub
repository would hold it and the asset reports what would be uploaded. The token comes from
`HF_TOKEN` through `dagster.EnvVar` (so run records hold `{"env": "HF_TOKEN"}`, not the value) and
is never logged or put in metadata.
"""


from pathlib import Path
from typing import Optional

from dagster import AssetExecutionContext, AssetKey, Config, ConfigurableResource, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.curriculum import curriculum, curriculum_folder
from assets.metadata import counts_table
from assets.resources import GradusStorage
from pipeline.curriculum import read_manifest
from pipeline.hub_export import CARD, HubClient, HubFolder, Publication, build_hub_folder, publish, split_card
from pipeline.storage import inside_home, safe_name


class HubPublisher(ConfigurableResource):
    """Pushes an exported dataset folder to the Hugging Face Hub (dry run unless told otherwise).

    Run config replaces a resource's whole configuration, so a run that publishes sets every field
    it needs, the token as `{env: HF_TOKEN}`.
    """

    repo_id: str = Field(default="", description="dataset repository, e.g. `me/my-curriculum`")
    token: Optional[str] = Field(default=None, description="Hub token; give it as EnvVar('HF_TOKEN'), never inline")
    dry_run: bool = Field(default=True, description="build the folder and report the upload without contacting the Hub")
    overwrite: bool = Field(default=False, description="allow replacing an existing repository or branch")
    private: bool = Field(default=True, description="visibility of a repository this creates")
    revision: Optional[str] = Field(default=None, description="branch to push to (created if missing); default main")

    def client(self) -> HubClient:
        from huggingface_hub import HfApi

        return HfApi(token=self.token)

    def publish(self, folder: HubFolder, message: str) -> Publication:
        if not self.repo_id:
            raise ValueError("hub.repo_id is empty: set the dataset repository to publish to")
        try:
            return publish(folder, self.client(), self.repo_id, message=message, private=self.private,
                           overwrite=self.overwrite, revision=self.revision)
        except Exception as exc:
            # Failures are recorded in the run's event log: never let one carry the token there.
            if self.token and self.token in str(exc):
                raise RuntimeError(str(exc).replace(self.token, "***")) from None
            raise


class HubCurriculumConfig(Config):
    """Which curriculum to export and how the card describes it."""

    curriculum: str = Field(
        default="", description="curriculum name under $GRADUS_HOME/curricula/; empty: the latest one materialized"
    )
    license: Optional[str] = Field(
        default=None, description="licence id for the card; default: derived from the sources (reasoning-gym: apache-2.0)"
    )
    pretty_name: Optional[str] = Field(default=None, description="dataset title on the card")


def _source_folder(context: AssetExecutionContext, config: HubCurriculumConfig, storage: GradusStorage) -> Path:
    if config.curriculum:
        return curriculum_folder(storage, config.curriculum)
    latest = context.instance.get_latest_materialization_event(AssetKey("curriculum"))
    path = latest and latest.asset_materialization and latest.asset_materialization.metadata.get("path")
    if not path:
        return curriculum_folder(storage, "default")
    return inside_home(path.value, storage.root(), "the latest curriculum's path in the event log")


@asset(group_name="curriculum", deps=[curriculum])
def hub_curriculum(
    context: AssetExecutionContext, config: HubCurriculumConfig, storage: GradusStorage, hub: HubPublisher
) -> MaterializeResult:
    """The curriculum as a Hugging Face dataset repository folder (one config per stage, a dataset
    card with provenance and licences), pushed to the Hub when `hub.dry_run` is off."""
    source = _source_folder(context, config, storage)
    out = storage.root() / "hub" / safe_name(source.name)
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

"""Stores DataFrames as Parquet files under the storage root: assets under `assets/`, and the frames
that ops inside a graph-backed asset hand each other (the rollout shards) under `steps/`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext
from dagster._core.types.dagster_type import DagsterTypeKind

from assets.resources import GradusStorage
from pipeline.storage import verify_sha256, write_parquet_checksummed


class ParquetIOManager(ConfigurableIOManager):
    """Every DataFrame asset is one real Parquet file, readable outside Dagster.

    Step outputs that are not assets go to `steps/<run id>/<step key>/<output>[/<mapping key>]
    .parquet`: steps may run in separate processes or pods (multiprocess, k8s or celery
    executors), so they meet on the shared storage root rather than in memory.
    """

    storage: GradusStorage

    def path_for(self, key_path: list[str]) -> Path:
        return self.storage.layout().asset(key_path)

    def _output_path(self, context: OutputContext) -> Path:
        if context.has_asset_key:
            return self.path_for(list(context.asset_key.path))
        return self.storage.layout().step(context.get_identifier())

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        path = self._output_path(context)
        write_parquet_checksummed(pa.Table.from_pandas(obj, preserve_index=False), path)
        context.add_output_metadata({"path": str(path), "rows": len(obj)})

    def load_input(self, context: InputContext) -> pd.DataFrame | None:
        """The stored frame; an asset input typed `Optional[...]` whose file does not exist (its
        asset never materialized) is None, any other missing file an error."""
        if context.has_asset_key:
            path = self.path_for(list(context.asset_key.path))
            if not path.exists():
                if context.dagster_type.kind == DagsterTypeKind.NULLABLE:
                    return None
                raise FileNotFoundError(
                    f"{path} does not exist: materialize {context.asset_key.to_user_string()} first"
                )
            verify_sha256(path, f"rematerialize {context.asset_key.to_user_string()}")
        else:
            path = self._output_path(context.upstream_output)
            verify_sha256(path, "rerun the job")
        return pq.read_table(path).to_pandas()


"""Stores DataFrames as Parquet files under `$GRADUS_HOME`: assets under `assets/`, and the frames
that ops inside a graph-backed asset hand each other (the rollout shards) under `steps/`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext

from pipeline.storage import gradus_home, verify_sha256, within, write_parquet_checksummed


class ParquetIOManager(ConfigurableIOManager):
    """Every DataFrame asset is one real Parquet file, readable outside Dagster.

    Step outputs that are not assets go to `steps/<run id>/<step key>/<output>[/<mapping key>]
    .parquet`: steps may run in separate processes or pods (multiprocess, k8s or celery
    executors), so they meet on the shared storage root rather than in memory.
    """

    home: str = ""
    """Storage root; empty means `$GRADUS_HOME` or `.gradus/`."""

    def path_for(self, key_path: list[str]) -> Path:
        root = gradus_home(self.home or None)
        return within(root, "assets", *key_path[:-1], f"{key_path[-1]}.parquet")

    def step_path(self, identifier: list[str]) -> Path:
        root = gradus_home(self.home or None)
        return within(root, "steps", *identifier[:-1], f"{identifier[-1]}.parquet")

    def _output_path(self, context: OutputContext) -> Path:
        if context.has_asset_key:
            return self.path_for(list(context.asset_key.path))
        return self.step_path(context.get_identifier())

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        path = self._output_path(context)
        write_parquet_checksummed(pa.Table.from_pandas(obj, preserve_index=False), path)
        context.add_output_metadata({"path": str(path), "rows": len(obj)})

    def load_input(self, context: InputContext) -> pd.DataFrame:
        if context.has_asset_key:
            path = self.path_for(list(context.asset_key.path))
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} does not exist: materialize {context.asset_key.to_user_string()} first"
                )
            verify_sha256(path, f"rematerialize {context.asset_key.to_user_string()}")
        else:
            path = self._output_path(context.upstream_output)
            verify_sha256(path, "rerun the job")
        return pq.read_table(path).to_pandas()

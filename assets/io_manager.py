"""Stores DataFrame assets as Parquet files under `$GRADUS_HOME/assets/`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext

from pipeline.storage import gradus_home, within, write_parquet_atomic


class ParquetIOManager(ConfigurableIOManager):
    """Every DataFrame asset is one real Parquet file, readable outside Dagster."""

    home: str = ""
    """Storage root; empty means `$GRADUS_HOME` or `.gradus/`."""

    def path_for(self, key_path: list[str]) -> Path:
        root = gradus_home(self.home or None)
        return within(root, "assets", *key_path[:-1], f"{key_path[-1]}.parquet")

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        path = self.path_for(list(context.asset_key.path))
        write_parquet_atomic(pa.Table.from_pandas(obj, preserve_index=False), path)
        context.add_output_metadata({"path": str(path), "rows": len(obj)})

    def load_input(self, context: InputContext) -> pd.DataFrame:
        path = self.path_for(list(context.asset_key.path))
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: materialize {context.asset_key.to_user_string()} first")
        return pq.read_table(path).to_pandas()

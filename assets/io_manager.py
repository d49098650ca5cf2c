"""Stores DataFrames as Parquet files under the storage root: assets under `assets/`, and the frames
that ops inside a graph-backed asset hand each other (the rollout shards) under `steps/`. Assets too
large for a frame (rollouts, rewards) hand over a `DatasetHandle`, stored as JSON beside them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext
from dagster._core.types.dagster_type import DagsterTypeKind

from assets.resources import GradusStorage
from pipeline.core.storage import (
    BatchStream,
    ParquetSource,
    verify_sha256,
    write_parquet_batches_checksummed,
    write_parquet_checksummed,
    write_text_atomic,
)
from pipeline.rollouts.handles import DatasetHandle, read_handle


class ParquetIOManager(ConfigurableIOManager):
    """Every DataFrame asset is one real Parquet file, readable outside Dagster.

    Step outputs that are not assets go to `steps/<run id>/<step key>/<output>[/<mapping key>]
    .parquet`: steps may run in separate processes or pods (multiprocess, k8s or celery
    executors), so they meet on the shared storage root rather than in memory.

    A `DatasetHandle` output is written as `<same path>.json` (its rows already lie where it
    points); a `BatchStream` is written a record batch at a time, into the same Parquet file a
    frame would have been. An input typed `pa.Table` is read as Arrow, and input metadata `columns` reads only
    those of its columns the file has: a step that needs the ids of a million problems does not load
    their prompts (the step checks what it needs; files written before a column existed still load).
    Input metadata `dictionary` reads those columns dictionary-encoded (pandas categoricals): a
    label key repeated on a million rows is then held once.
    """

    storage: GradusStorage

    def path_for(self, key_path: list[str]) -> Path:
        return self.storage.layout().asset(key_path)

    def _output_path(self, context: OutputContext) -> Path:
        if context.has_asset_key:
            return self.path_for(list(context.asset_key.path))
        return self.storage.layout().step(context.get_identifier())

    def handle_output(self, context: OutputContext,
                      obj: pd.DataFrame | pa.Table | DatasetHandle | BatchStream | None) -> None:
        if obj is None:
            return
        path = self._output_path(context)
        if isinstance(obj, BatchStream):
            rows = write_parquet_batches_checksummed(obj.batches, obj.schema, path)
            context.add_output_metadata({"path": str(path), "rows": rows})
            return
        if isinstance(obj, DatasetHandle):
            path = path.with_suffix(".json")
            write_text_atomic(obj.to_json(), path)
            context.add_output_metadata({"path": str(path), "data": obj.path, "rows": obj.rows})
            return
        table = obj if isinstance(obj, pa.Table) else pa.Table.from_pandas(obj, preserve_index=False)
        write_parquet_checksummed(table, path)
        context.add_output_metadata({"path": str(path), "rows": table.num_rows})

    def load_input(self, context: InputContext) -> pd.DataFrame | pa.Table | ParquetSource | DatasetHandle | None:
        """The stored frame (or table, or handle, as the input is typed); an asset input typed
        `Optional[...]` whose file does not exist (its asset never materialized) is None, any other
        missing file an error."""
        kind = context.dagster_type.typing_type
        if context.has_asset_key:
            key = list(context.asset_key.path)
            path = self.storage.layout().handle(key) if kind is DatasetHandle else self.path_for(key)
            if not path.exists():
                if context.dagster_type.kind == DagsterTypeKind.NULLABLE:
                    return None
                raise FileNotFoundError(
                    f"{path} does not exist: materialize {context.asset_key.to_user_string()} first"
                )
            if kind is not DatasetHandle:
                verify_sha256(path, f"rematerialize {context.asset_key.to_user_string()}")
        else:
            path = self._output_path(context.upstream_output)
            if kind is DatasetHandle:
                path = path.with_suffix(".json")
            else:
                verify_sha256(path, "rerun the job")
        if kind is DatasetHandle:
            return read_handle(path)
        if kind is ParquetSource:
            return ParquetSource(path)
        metadata = context.definition_metadata or {}
        columns, dictionary = metadata.get("columns"), metadata.get("dictionary")
        if columns is not None:
            present = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in present]
        table = pq.read_table(path, columns=columns, read_dictionary=dictionary)
        if kind is pa.Table:
            return table
        # Each column's Arrow buffers are freed as it is converted: the frame and the whole table
        # never coexist (at a million problems the two were the step's peak).
        return table.to_pandas(self_destruct=True, split_blocks=True)

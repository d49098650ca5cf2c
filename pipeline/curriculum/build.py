"""Difficulty-stratified curricula: one Parquet file per stage (easy → hard) plus a manifest.

Columns follow verl's RL schema (`data_source`, `prompt`, `ability`, `reward_model`, `extra_info`)
so the files feed verl or TRL directly, plus gradus's own label columns. Built with Arrow compute
end to end: a million-row pool never becomes Python objects.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.locks import locked
from pipeline.core.ids import IdIndex
from pipeline.core.storage import (
    BATCH_ROWS,
    ParquetSource,
    StorageLayout,
    file_sha256,
    replacing,
    safe_name,
    write_text_atomic,
)
from pipeline.curriculum.informative import GroupFilter
from pipeline.difficulty.strata import SOLVED, UNSOLVED, Strata
from pipeline.labels.pass_rates import (
    TRUNCATION_COLUMNS,
    check_counts,
    label_mismatch,
    token_cap_report,
    truncation_bound,
)
from pipeline.rewards.trainers import trainer_config

if TYPE_CHECKING:
    from pipeline.labels.pass_rates import LabelTarget

MANIFEST = "manifest.json"
LABEL_COLUMNS = ("successes", "trials", "pass_rate", "ci_low", "ci_high")
POOL_BATCH_ROWS = BATCH_ROWS
"""Problems read at a time when the pool streams into the stages."""
TRUNCATION_BOUND = -2
"""The class of a problem left out because its failures are mostly truncations (`truncation_bound: exclude`)."""


@dataclass(frozen=True)
class CurriculumSpec:
    """How to cut a labelled pool into stages."""

    name: str = field(default="default", metadata={"help": "folder under $GRADUS_HOME/curricula/"})
    strata: Strata = Strata()
    """Pass-rate bins and whether always-solved / never-solved problems are excluded (set by the
    shared `strata` setting, not per curriculum)."""
    shuffle_seed: int | None = field(default=0, metadata={
        "help": "seed for shuffling rows within a stage; empty keeps pool order"})
    labels: Literal["measured", "predicted", "both"] = field(default="measured", metadata={
        "help": "which pass rates are staged: measured (pass_rates), predicted (the difficulty probe's, from "
        "predicted_difficulty, for every problem) or both (measured where a problem has rollouts, predicted "
        "elsewhere); rows record theirs in label_source"})
    on_label_mismatch: Literal["error", "warn"] = field(default="error", metadata={
        "help": "measured labels made for another model, revision, sampling or verifier than target_model: error "
        "stops the build; warn builds it, records the labels' own key and the warning in the manifest, and leaves "
        "sampling unset (training then needs it set explicitly)"})
    exclude_contaminated: bool = field(default=True, metadata={
        "help": "leave out problems any benchmark flags (the contamination asset); when false they stay in the "
        "stages and the blocking check curriculum_is_decontaminated stops everything downstream"})
    truncation_bound: Literal["flag", "exclude"] = field(default="flag", metadata={
        "help": "problems whose failures are mostly rollouts cut at max_tokens (their pass rate measures the token "
        "cap, not difficulty): flag stages them with truncation_bound true and counts them in the manifest; "
        "exclude leaves them out of the stages"})
    filter_group_size: int = field(default=0, metadata={
        "help": "the trainer's group size G (rollouts per prompt) for the manifest's prediction of group filtering "
        "(verl DAPO filter_groups, OpenRLHF dynamic filtering); 0: the training spec's num_generations"})
    filter_train_batch_size: int = field(default=0, metadata={
        "help": "prompts per train batch for that prediction; 0: the training spec's prompts_per_step"})

    def __post_init__(self) -> None:
        safe_name(self.name)  # a folder name: checked when the run is configured, not when it is written


def provenance(target: LabelTarget, labels: str,
               predicted: Any | None = None, measured: Any | None = None,
               on_mismatch: str = "error") -> dict[str, Any]:
    """What a curriculum's manifest records about how its labels were made: the target's settings,
    checked against the `measured` labels (`pass_rates`) it stages, which must have been made for
    it (`on_mismatch` "warn" records the labels' own key and the warning instead)."""
    out = {
        "model": {"id": target.model.model_id, "revision": target.model.revision, "path": target.model.path},
        "sampling": asdict(target.sampling),
        "sampling_key": target.sampling.key,
        "label_key": target.key,
        "verifier_version": target.verifier_version,
        "extraction_policy": target.extraction_policy,
        "labels": labels,
    }
    if predicted is not None and len(predicted):
        out["probe"] = str(predicted["probe_path"].iloc[0])
    if measured is not None and (why := label_mismatch(measured, target)):
        if on_mismatch == "error":
            raise ValueError(f"curriculum: {why} (or set on_label_mismatch: warn)")
        keys = sorted(set(measured["label_key"]))
        out.update(label_key=keys[0] if len(keys) == 1 else keys, sampling=None, sampling_key=None,
                   warnings=[why])
    return out


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    return pa.Table.from_pandas(data, preserve_index=False)


def _ability(verifier: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.if_else(pc.equal(verifier, "math"), "math", "reasoning")


MODEL_DIFFICULTY = "model_difficulty"
"""A label column (a struct of pass rates, one field per model, `pipeline.labels.matrix.model_difficulty_array`) that
stages carry in `extra_info`, as Skywork-OR1 ships other models' rates."""


def _label_rows(ids: pa.ChunkedArray | pa.Array, labels: pa.Table, strata: Strata) -> tuple[np.ndarray, pa.Table]:
    """For the pool's `ids`: the positions of those with a label, and those labels in that order
    (the columns staged) with the `stage` class of each. Measured labels whose pass rate
    contradicts their counts are refused (`labels.check_counts`)."""
    check_counts(labels.select([c for c in ("problem_id", *LABEL_COLUMNS, "label_source") if c in labels.column_names])
                 .to_pandas(), "the labels to stage")
    keep = [*LABEL_COLUMNS] + [c for c in ("label_source", *TRUNCATION_COLUMNS, MODEL_DIFFICULTY)
                               if c in labels.column_names]
    where = IdIndex(labels.column("problem_id")).lookup(ids)
    positions = np.flatnonzero(where >= 0)
    rows = labels.select(keep).take(pa.array(where[positions]))
    stage = strata.class_of(rows.column("pass_rate").to_numpy(), rows.column("successes").to_numpy(),
                            rows.column("trials").to_numpy())
    return positions, rows.append_column("stage", pa.array(stage, pa.int64()))


def _with_labels(problems: pa.Table, rows: pa.Table) -> pa.Table:
    for name in rows.column_names:
        problems = problems.append_column(name, rows.column(name))
    return problems


def stratify(problems: Any, labels: Any, strata: Strata) -> pa.Table:
    """Join problems with their labels and assign a class to each: 1..K, 0 solved, -1 unsolved.

    Problems without a label are left out (they have no pass rate yet). Measured labels whose
    pass rate contradicts their counts are refused (`labels.check_counts`).
    """
    p = _as_table(problems)
    positions, rows = _label_rows(p.column("problem_id"), _as_table(labels), strata)
    # Taking copies every column, nested prompts included: only when a problem has no label.
    return _with_labels(p if len(positions) == p.num_rows else p.take(pa.array(positions)), rows)


def to_verl(table: pa.Table, provenance: Mapping[str, Any] | None = None) -> pa.Table:
    """The verl RL columns plus gradus's label columns. `extra_info` says how the row was labelled
    (verifier, the problem's metadata, from `provenance` the extraction policy and verifier
    version, and other models' pass rates where the labels carry `model_difficulty`), which the trainer rewards of `pipeline.rewards.trainers` apply, and repeats the gold
    answer for trainers that hand a reward one column only (OpenRLHF's `--label_key`)."""
    n = table.num_rows
    gold = table.column("answer").combine_chunks()
    made = provenance or {}
    reward_model = pa.StructArray.from_arrays(
        [pa.repeat(pa.scalar("rule", pa.string()), n), gold], names=["style", "ground_truth"],
    )
    info = {
        "problem_id": table.column("problem_id").combine_chunks(),
        "category": table.column("category").combine_chunks(),
        "verifier": table.column("verifier").combine_chunks(),
        "metadata": table.column("metadata").combine_chunks(),
        "extraction_policy": pa.repeat(pa.scalar(made.get("extraction_policy"), pa.string()), n),
        "verifier_version": pa.repeat(pa.scalar(made.get("verifier_version"), pa.string()), n),
        "ground_truth": gold,
    }
    if MODEL_DIFFICULTY in table.column_names:
        info[MODEL_DIFFICULTY] = table.column(MODEL_DIFFICULTY).combine_chunks()
    extra_info = pa.StructArray.from_arrays(list(info.values()), names=list(info))
    cols: dict[str, Any] = {
        "data_source": table.column("source"),
        "prompt": table.column("prompt"),
        "ability": _ability(table.column("verifier")),
        "reward_model": reward_model,
        "extra_info": extra_info,
        "problem_id": table.column("problem_id"),
        "category": table.column("category"),
        "stage": table.column("stage"),
    }
    for c in LABEL_COLUMNS + ("label_source", *TRUNCATION_COLUMNS, "truncation_bound"):
        if c in table.column_names:
            cols[c] = table.column(c)
    return pa.table(cols)


def _ids_digest(ids: pa.ChunkedArray) -> str:
    """sha256 of the sorted ids joined by newlines, without making a million Python strings
    (UTF-8 byte order, which Arrow sorts by, is code point order, which `sorted` uses)."""
    if len(ids) == 0:
        return hashlib.sha256(b"").hexdigest()
    ordered = ids.take(pc.sort_indices(ids)).combine_chunks().cast(pa.large_string())
    newline, nothing = pa.scalar("\n", pa.large_string()), pa.scalar("", pa.large_string())
    lines = pc.binary_join_element_wise(ordered, newline, nothing)
    offsets = np.frombuffer(lines.buffers()[1], np.int64)[lines.offset : lines.offset + len(lines) + 1]
    data = memoryview(lines.buffers()[2])[offsets[0] : offsets[-1] - 1]  # no newline after the last
    return hashlib.sha256(data).hexdigest()


def build_curriculum(
    problems: Any,
    labels: Any,
    spec: CurriculumSpec,
    home: Path,
    provenance: Mapping[str, Any] | None = None,
    group_filter: GroupFilter | None = None,
) -> dict[str, Any]:
    """Write `stage_<k>.parquet` files and `manifest.json` under `home/curricula/<name>/`.

    With a `group_filter` the manifest predicts, per stage, what a trainer that drops all-equal
    groups keeps and how many prompts it must generate per train batch; it also gives the
    trainers' config lines (`trainers`: verl, TRL, OpenRLHF) for the stages in order.

    The folder is built in a staging folder of its own and swapped in under the curriculum's
    lock, so readers never see a half-written curriculum and concurrent builds of one name never
    mix their files: the last swap wins whole. A stage no problem falls in gets no file (a 0-row
    Parquet file is unreadable to `datasets` and verl): the manifest records it with 0 rows,
    `file` null and a note. Returns the manifest.
    """
    return write_curriculum(problems, labels, spec, home, provenance, group_filter)[0]


def write_curriculum(
    problems: Any,
    labels: Any,
    spec: CurriculumSpec,
    home: Path,
    provenance: Mapping[str, Any] | None = None,
    group_filter: GroupFilter | None = None,
    exclude: pa.Array | None = None,
) -> tuple[dict[str, Any], pa.Table]:
    """`build_curriculum`, leaving out the problems `exclude` names, and also returning the labels
    of the staged pool in pool order with the class each was given (`stratify`'s,
    `TRUNCATION_BOUND` for those the spec leaves out as cut at the token cap), so callers describe
    the stages without stratifying a second time.

    `problems` may be a `ParquetSource`: the pool is then read a record batch at a time and each
    batch's rows appended to its stage's file, so only the labels (a few numbers per problem) and
    the ids are held whole; a shuffled stage is read back alone to be permuted."""
    root = StorageLayout(str(home)).curriculum(spec.name)  # a bad name fails before any work
    source = problems if isinstance(problems, ParquetSource) else ParquetSource(_as_table(problems))
    ids = source.column("problem_id")
    kept = None if exclude is None or not len(exclude) else pc.invert(pc.is_in(ids, value_set=exclude))
    if kept is not None:
        ids = ids.filter(kept)
    positions, table = _label_rows(ids, _as_table(labels), spec.strata)
    with locked(home, "curriculum", spec.name), replacing(root) as staging:
        return _write_stages(source, kept, ids, positions, table, spec, staging, root, provenance, group_filter)


def _truncation(table: pa.Table, spec: CurriculumSpec, max_tokens: int | None) -> tuple[pa.Table, dict[str, Any]]:
    """The table with its `truncation_bound` column (and those problems out of the stages when
    the spec says exclude), and what the manifest records about rollouts cut at the token cap."""
    counted = "truncated" in table.column_names
    columns = [c for c in ("successes", "trials", *TRUNCATION_COLUMNS) if c in table.column_names]
    frame = table.select(columns).to_pandas()
    bound = truncation_bound(frame["successes"], frame["trials"],
                             frame["truncated_failures"] if counted else [None] * len(frame))
    staged = table.column("stage").to_numpy() > 0
    record: dict[str, Any] = {"counted": counted, "policy": spec.truncation_bound,
                              "truncation_bound_in_stages": int((bound & staged).sum())}
    if counted:
        known = frame["truncated"].notna().to_numpy()
        record.update(token_cap_report(int(frame["trials"][known].sum()), int(frame["truncated"][known].sum()),
                                       int(bound.sum()), max_tokens), uncounted_problems=int((~known).sum()))
    table = table.append_column("truncation_bound", pa.array(bound, pa.bool_()))
    if spec.truncation_bound == "exclude" and bound.any():
        stage = table.column("stage").to_numpy().copy()
        stage[bound & staged] = TRUNCATION_BOUND
        table = table.set_column(table.column_names.index("stage"), "stage", pa.array(stage, pa.int64()))
    return table, record


def _stage_permutation(size: int, k: int, shuffle_seed: int | None) -> np.ndarray | None:
    """The order of stage `k`'s rows (given in pool order): shuffled with `shuffle_seed + k`, or None to keep it."""
    if shuffle_seed is None or not size:
        return None
    return np.random.default_rng(shuffle_seed + k).permutation(size)


def _write_stages(
    source: ParquetSource, kept: pa.ChunkedArray | None, ids: pa.ChunkedArray, positions: np.ndarray,
    table: pa.Table, spec: CurriculumSpec, staging: Path, root: Path,
    provenance: Mapping[str, Any] | None, group_filter: GroupFilter | None,
) -> tuple[dict[str, Any], pa.Table]:
    """Write the stage files and the manifest into `staging` (swapped in as `root`); returns the
    manifest and the labels with their final classes. `ids` are the pool's after `kept` (the
    exclusion mask over the source's rows, None: all kept), `positions` those with a label (the
    rows of `table`)."""
    strata = spec.strata

    table, truncation = _truncation(table, spec, ((provenance or {}).get("sampling") or {}).get("max_tokens"))
    stage_col = table.column("stage").to_numpy()
    rows_of = {k: np.flatnonzero(stage_col == k) for k in range(1, strata.n_stages + 1)}
    pooled = _write_pool_order(source, kept, positions, table, provenance, staging)
    stages = []
    for k, rows in rows_of.items():
        file = f"stage_{k}.parquet" if rows.size else None
        order = _stage_permutation(rows.size, k, spec.shuffle_seed)
        if file:
            _finish_stage(pooled[k], order, staging / file)
        if order is not None:
            rows = rows[order]
        rates = table.column("pass_rate").to_numpy()[rows]
        hi, lo = strata.edges[k - 1], strata.edges[k]
        stages.append(
            {
                "stage": k,
                "name": f"stage_{k}",
                "file": file,
                "rows": int(rows.size),
                "pass_rate_bin": [lo, hi],
                "mean_pass_rate": float(rates.mean()) if len(rates) else None,
                "truncation_bound": int(table.column("truncation_bound").to_numpy()[rows].sum()),
                "group_filter": group_filter.prediction(rates, table.column("ci_low").to_numpy()[rows],
                                                        table.column("ci_high").to_numpy()[rows])
                if group_filter and rows.size else None,
                "sha256": file_sha256(staging / file) if file else None,
                "note": None if file else f"no labelled problem has a pass rate in ({lo:.3g}, {hi:.3g}]; no file",
            }
        )
    excluded = {"solved": int((stage_col == SOLVED).sum()), "unsolved": int((stage_col == UNSOLVED).sum()),
                "truncation_bound": int((stage_col == TRUNCATION_BOUND).sum())}
    generation = [s["group_filter"]["generation_batch_size"] for s in stages if s["group_filter"]]
    source_names = source.column("source")
    sources = pc.value_counts(source_names.filter(kept) if kept is not None else source_names).to_pylist()
    manifest = {
        "name": spec.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": "verl-rl+gradus/1",
        "strata": {**asdict(strata), "edges": list(strata.edges)},
        "stages": stages,
        "excluded": excluded,
        "counts": {
            "problems": len(ids),
            "labelled": table.num_rows,
            "in_stages": sum(s["rows"] for s in stages),
        },
        "source_snapshot": {
            "problem_ids_sha256": _ids_digest(ids),
            "sources": {d["values"]: d["counts"] for d in sources},
        },
        "truncation": truncation,
        "trainers": trainer_config(
            [str(root / s["file"]) for s in stages if s["file"]], group_filter and group_filter.group_size,
            group_filter and group_filter.train_batch_size,
            # One run trains every stage: the hardest stage's batch must fill too.
            None if not generation or None in generation else max(generation)),
        **(dict(provenance) if provenance else {}),
    }
    write_text_atomic(json.dumps(manifest, indent=2, default=str), staging / MANIFEST)
    return manifest, table


def _write_pool_order(source: ParquetSource, kept: pa.ChunkedArray | None, positions: np.ndarray,
                      table: pa.Table, provenance: Mapping[str, Any] | None, staging: Path) -> dict[int, Path]:
    """Every staged row in verl's columns, appended to its stage's file in pool order as the pool
    streams past (one batch of problems in memory at a time); the files by stage."""
    stage = table.column("stage").to_numpy()
    writers: dict[int, pq.ParquetWriter] = {}
    paths: dict[int, Path] = {}
    keep_mask = kept.to_numpy(zero_copy_only=False) if kept is not None else None
    start = offset = 0  # rows of the source seen; rows kept before this batch
    try:
        for batch in source.batches(batch_rows=POOL_BATCH_ROWS):
            rows = pa.Table.from_batches([batch])
            if keep_mask is not None:
                rows = rows.filter(pa.array(keep_mask[start:start + batch.num_rows]))
            start += batch.num_rows
            lo, hi = np.searchsorted(positions, [offset, offset + rows.num_rows])
            offset += rows.num_rows
            if hi == lo:
                continue
            labelled = rows.take(pa.array(positions[lo:hi] - (offset - rows.num_rows)))
            verl = to_verl(_with_labels(labelled, table.slice(lo, hi - lo)), provenance)
            classes = stage[lo:hi]
            for k in np.unique(classes[classes > 0]):
                part = verl.filter(pa.array(classes == k))
                if int(k) not in writers:
                    paths[int(k)] = staging / f"stage_{k}.pool.parquet"
                    writers[int(k)] = pq.ParquetWriter(paths[int(k)], part.schema)
                writers[int(k)].write_table(part)
    finally:
        for writer in writers.values():
            writer.close()
    return paths


_TARGET = "__position"
"""The column a shuffled stage's buckets carry: each row's position in the shuffled stage."""


def _finish_stage(pooled: Path, order: np.ndarray | None, path: Path) -> None:
    """A stage's file from its rows in pool order: renamed as it is, or permuted by `order` (row
    `order[j]` goes to position j). The permutation is applied out of core: rows are dealt into
    buckets of `BATCH_ROWS` consecutive target positions as the file streams past, then each
    bucket is read back alone and put in order, so memory is one bucket, not the stage (a stage
    can hold a third of a pool of millions of prompts)."""
    if order is None:
        pooled.replace(path)
        return
    target = np.empty_like(order)
    target[order] = np.arange(len(order))
    buckets = pooled.with_name(pooled.stem + ".buckets")
    buckets.mkdir()
    source = pq.ParquetFile(pooled)
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        start = 0
        for batch in source.iter_batches(batch_size=BATCH_ROWS):
            where = target[start:start + batch.num_rows]
            start += batch.num_rows
            bucket = where // BATCH_ROWS
            for b in np.unique(bucket).tolist():
                mask = bucket == b
                part = batch.filter(pa.array(mask)).append_column(_TARGET, pa.array(where[mask]))
                if b not in writers:
                    writers[b] = pq.ParquetWriter(buckets / f"{b:06d}.parquet", part.schema)
                writers[b].write_batch(part)
    finally:
        for writer in writers.values():
            writer.close()
    with pq.ParquetWriter(path, source.schema_arrow) as writer:
        for b in sorted(writers):
            rows = pq.read_table(buckets / f"{b:06d}.parquet")
            writer.write_table(rows.take(pc.sort_indices(rows.column(_TARGET))).drop_columns([_TARGET]))
    shutil.rmtree(buckets)
    pooled.unlink()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The curriculum's manifest; a missing, truncated or garbled one is an error that says how
    to rebuild it."""
    path = folder / MANIFEST
    fix = f"rematerialize `curriculum` to rebuild {folder}"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: {fix}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is truncated or garbled ({exc}): {fix}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), list):
        raise ValueError(f"{path} is not a gradus curriculum manifest (no list of stages): {fix}")
    return manifest


def curriculum_problem_ids(folder: Path, among: Collection[str] | None = None) -> set[str]:
    """The problem ids in the stage files the manifest lists; with `among`, only those of them
    (matched in Arrow: a million staged ids never become a Python set to be intersected)."""
    manifest = read_manifest(folder)
    wanted = None if among is None else pa.array(sorted(among), pa.string())
    found: set[str] = set()
    for s in manifest["stages"]:
        if not s["file"] or not (folder / s["file"]).exists():
            continue
        ids = pq.read_table(folder / s["file"], columns=["problem_id"]).column("problem_id")
        found.update((ids if wanted is None else ids.filter(pc.is_in(ids, value_set=wanted))).to_pylist())
    return found


def manifest_problems(folder: Path) -> list[str]:
    """Why a curriculum folder disagrees with its manifest, one line per problem (empty: agrees)."""
    manifest = read_manifest(folder)
    problems = []
    listed = {s["file"] for s in manifest["stages"] if s.get("file")}
    on_disk = {p.name for p in folder.glob("stage_*.parquet")}
    for name in sorted(on_disk - listed):
        problems.append(f"{name} is on disk but not in the manifest")
    for s in manifest["stages"]:
        if not s.get("file"):
            if s["rows"]:
                problems.append(f"{s['name']} has {s['rows']} rows in the manifest but no file")
            continue
        path = folder / s["file"]
        if not path.exists():
            problems.append(f"{s['file']} is listed but missing")
            continue
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # any damage pyarrow reports: the file is not the one written
            problems.append(f"{s['file']} is not readable Parquet ({type(exc).__name__}: {exc})")
            continue
        if rows != s["rows"]:
            problems.append(f"{s['file']} has {rows} rows, the manifest says {s['rows']}")
        if file_sha256(path) != s["sha256"]:
            problems.append(f"{s['file']} does not match its recorded sha256")
    return problems

"""Difficulty across models: one row per problem, one column group per labelled target.

The label history keeps every label version (`LabelHistory`); each version's rows carry their
label key (model, revision, sampling, extraction policy, verifier). The matrix puts the latest
label of every problem under every key side by side, so one model's pass rate can be read against
another's, and a curriculum can carry them as Skywork-OR1's `extra_info.model_difficulty` map.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.labels.history import LabelHistory

MATRIX_FIELDS = ("pass_rate", "ci_low", "ci_high", "trials")
"""What each column group holds for a problem: the pass rate, its credible interval, its rollouts."""
GROUP_PROVENANCE = ("label_key", "model_id", "revision", "sampling_key")
"""What names a column group, in the order its short name is built from."""


MATRIX_COLUMNS = ("problem_id", *GROUP_PROVENANCE, *MATRIX_FIELDS, "labelled_at")
"""What the matrix reads of each label version."""


def latest_labels(versions: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Every problem's latest label (by `labelled_at`, then by version order) under every label key.

    Folded in one version at a time: memory is the latest labels so far plus one version, never
    the whole history (a version later in order wins a tie, as in one stable sort of them all)."""
    latest = None
    for version in versions:
        if not len(version):
            continue
        rows = version if latest is None else pd.concat([latest, version], ignore_index=True)
        latest = (rows.assign(problem_id=rows["problem_id"].astype(str))
                  .sort_values("labelled_at", kind="stable")
                  .drop_duplicates(["label_key", "problem_id"], keep="last")
                  .reset_index(drop=True))
    if latest is None:
        return pd.DataFrame(columns=list(MATRIX_COLUMNS))
    return latest


def group_names(groups: pd.DataFrame) -> dict[str, str]:
    """label key → the shortest unambiguous name: the model id alone when it has one key, else with
    its revision (`id@rev`), else the whole label key."""
    names = {}
    by_model = groups.groupby("model_id")["label_key"].nunique()
    by_revision = groups.groupby(["model_id", "revision"])["label_key"].nunique()
    for row in groups.itertuples(index=False):
        if by_model[row.model_id] == 1:
            names[row.label_key] = row.model_id
        elif by_revision[(row.model_id, row.revision)] == 1:
            names[row.label_key] = f"{row.model_id}@{row.revision}"
        else:
            names[row.label_key] = row.label_key
    return names


@dataclass(frozen=True)
class DifficultyMatrix:
    """Pass rates of every problem under every labelled target."""

    groups: pd.DataFrame
    """One row per column group: `name`, `label_key`, `model_id`, `revision`, `sampling_key`,
    `problems` (labelled under it), `mean_pass_rate`; in order of each key's earliest current label."""
    values: pd.DataFrame
    """Indexed by `problem_id`; columns (group name, field) for each of `MATRIX_FIELDS`. A problem a
    group never labelled has NaN there: unknown, never a pass rate of 0."""

    def flat(self) -> pd.DataFrame:
        """The matrix as a plain table: `problem_id`, then `<group>.<field>` columns."""
        out = self.values.copy()
        out.columns = [f"{name}.{part}" for name, part in out.columns]
        return out.reset_index()

    def rates(self, name: str) -> pd.Series:
        """One group's pass rates by problem (NaN where it has no label)."""
        if name not in set(self.groups["name"]):
            raise KeyError(f"no labelled model named {name!r} in the difficulty matrix; "
                           f"known: {', '.join(self.groups['name'])}")
        return self.values[(name, "pass_rate")]


def difficulty_matrix(versions: Iterable[pd.DataFrame]) -> DifficultyMatrix:
    """The matrix of the label versions `versions` (each a `PassRate` frame, oldest first)."""
    labels = latest_labels(versions)
    first = labels.sort_values("labelled_at", kind="stable").drop_duplicates("label_key")
    groups = first[list(GROUP_PROVENANCE)].reset_index(drop=True)
    names = group_names(groups)
    stats = labels.groupby("label_key").agg(problems=("problem_id", "size"), mean_pass_rate=("pass_rate", "mean"))
    groups = groups.assign(name=groups["label_key"].map(names)).join(stats, on="label_key")
    groups = groups[["name", *GROUP_PROVENANCE, "problems", "mean_pass_rate"]]
    ids = pd.Index(sorted(labels["problem_id"].unique()), name="problem_id")
    columns = {}
    for key, name in names.items():
        rows = labels[labels["label_key"] == key].set_index("problem_id").reindex(ids)
        for part in MATRIX_FIELDS:
            columns[(name, part)] = rows[part].astype("Int64" if part == "trials" else float)
    values = pd.DataFrame(columns, index=ids)
    values.columns = pd.MultiIndex.from_tuples(values.columns, names=["model", "field"]) if columns else values.columns
    return DifficultyMatrix(groups.astype({"problems": int}), values)


def history_matrix(history: LabelHistory) -> DifficultyMatrix:
    """The matrix of every label version `history` holds, each read for the matrix's columns only."""
    return difficulty_matrix(history.labels(v, MATRIX_COLUMNS) for v in history.summaries()["version"])


def model_difficulty(matrix: DifficultyMatrix, problem_ids: Iterable[str], exclude: str = "") -> list[dict[str, float]]:
    """Per problem, its pass rate under every group but `exclude` (the target itself), keyed by group
    name, as Skywork-OR1's `extra_info.model_difficulty`; groups that never labelled it are left out."""
    names = [n for n in matrix.groups["name"] if n != exclude]
    rates = matrix.values.reindex(pd.Index(list(problem_ids), name="problem_id"))
    return [{n: float(r) for n, r in zip(names, row) if not np.isnan(r)}
            for row in rates[[(n, "pass_rate") for n in names]].to_numpy(dtype=float)]


def model_difficulty_array(maps: Sequence[dict[str, float]], names: Sequence[str]) -> pa.StructArray:
    """`model_difficulty` maps as an Arrow struct column with one pass-rate field per model in `names`
    (null where a model never labelled the problem), for a labels table: the shape Skywork-OR1 ships,
    and one `datasets` and verl can load (`datasets` has no type for an Arrow map)."""
    return _rates_struct([np.array([m.get(n, np.nan) for m in maps], dtype=float) for n in names], names)


def _rates_struct(columns: Sequence[np.ndarray], names: Sequence[str]) -> pa.StructArray:
    """Pass-rate columns (NaN: never labelled) as `model_difficulty_array`'s struct."""
    if not names:
        raise ValueError("model_difficulty needs at least one model name")
    return pa.StructArray.from_arrays([pa.array(c, pa.float64(), mask=np.isnan(c)) for c in columns],
                                      names=list(names))


@dataclass(frozen=True)
class CrossModelSelection:
    """Staging on other models' labels: e.g. only problems the target fails but a stronger model solves."""

    solved_by: str = field(default="", metadata={
        "help": "name of another labelled model (a difficulty_matrix group, e.g. its model id); empty: no "
        "selection on other models. Only problems whose pass rate under it is at least min_other_pass_rate are "
        "staged; problems it never labelled are left out"})
    min_other_pass_rate: float = field(default=0.5, metadata={
        "help": "the pass rate under solved_by a problem needs to be staged"})
    max_target_pass_rate: float = field(default=1.0, metadata={
        "help": "the target's pass rate a problem may have at most to be staged (0: only problems the target "
        "never solved)"})

    def __post_init__(self) -> None:
        for name in ("min_other_pass_rate", "max_target_pass_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    def keep(self, target_rates: pd.Series, matrix: DifficultyMatrix) -> pd.Series:
        """Which problems (the index of `target_rates`, the target's pass rates) pass the selection."""
        if not self.solved_by:
            return pd.Series(True, index=target_rates.index)
        other = matrix.rates(self.solved_by).reindex(target_rates.index)
        return (other >= self.min_other_pass_rate).fillna(False) & (target_rates <= self.max_target_pass_rate)


MODEL_FIELDS = ("name", "model_id", "revision", "sampling_key", "problems", "mean_pass_rate")
"""What a curriculum's manifest (and so its Hub card) records of each other labelled model."""


@dataclass(frozen=True)
class OtherModels:
    """Other labelled models' pass rates for a curriculum of `target_key`'s labels: the
    `model_difficulty` map every staged row carries, and the selection on them."""

    matrix: DifficultyMatrix
    target_key: str
    selection: CrossModelSelection = CrossModelSelection()

    def __post_init__(self) -> None:
        if self.selection.solved_by and self.selection.solved_by == self.target_name:
            raise ValueError(f"solved_by names the target itself ({self.selection.solved_by!r}): name another model")

    @property
    def target_name(self) -> str:
        """The target's group name, empty while the history holds none of its labels."""
        names = self.matrix.groups.loc[self.matrix.groups["label_key"] == self.target_key, "name"]
        return names.iloc[0] if len(names) else ""

    def rates_array(self, problem_ids: Iterable[str], names: Sequence[str]) -> pa.StructArray:
        """`model_difficulty_array` of `model_difficulty(matrix, problem_ids)`, built column by column
        from the matrix: no map per problem."""
        rates = self.matrix.values.reindex(pd.Index(list(problem_ids), name="problem_id"))
        return _rates_struct([rates[(n, "pass_rate")].to_numpy(dtype=float) for n in names], names)

    def apply(self, labels: pd.DataFrame) -> tuple[pa.Table, dict]:
        """`labels` (one row per problem, with `pass_rate`) as a table with a `model_difficulty` column,
        less the problems the selection leaves out; and what the manifest records of both."""
        keep = self.selection.keep(pd.Series(labels["pass_rate"].to_numpy(), index=labels["problem_id"]), self.matrix)
        kept = labels[keep.to_numpy()]
        others = self.matrix.groups[self.matrix.groups["label_key"] != self.target_key]
        table = pa.Table.from_pandas(kept, preserve_index=False).append_column(
            "model_difficulty", self.rates_array(kept["problem_id"], others["name"].tolist()))
        record: dict = {"models": others[list(MODEL_FIELDS)].to_dict("records"), "selection": None}
        if self.selection.solved_by:
            record["selection"] = {**asdict(self.selection), "kept": len(kept), "left_out": len(labels) - len(kept)}
        return table, record


def other_models(history: LabelHistory, target_key: str,
                 selection: CrossModelSelection = CrossModelSelection()) -> OtherModels | None:
    """The other models a curriculum of `target_key` can carry, from the label history; None when the
    history labels nothing else (reading no labels then) and no selection asks for one."""
    keys = set(history.summaries()["label_key"]) - {target_key}
    if not keys:
        if selection.solved_by:
            raise ValueError(f"solved_by {selection.solved_by!r}: the label history holds no model but the target; "
                             "label the pool with that model first (its labels are recorded by difficulty_history)")
        return None
    return OtherModels(history_matrix(history), target_key, selection)

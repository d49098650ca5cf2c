"""Pool hygiene before labelling: `unique_problems` / `duplicate_problems` (duplicates removed),
`evaluation_problems` (the benchmarks) and `contamination` (which problems leak them)."""


from collections.abc import Iterable
from functools import partial

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, AssetOut, MetadataValue, Output, asset, multi_asset

from assets.config import op_config, spec_config
from assets.metadata import PREVIEW_ROWS, counts_table, preview
from assets.resources import GradusStorage, Verifier
from pipeline.hygiene.contamination import METHODS, Benchmark, ContaminationSpec, check, flagged, summary
from pipeline.hygiene.dedup import DedupSpec, deduplicate
from pipeline.ingest.benchmarks import EvaluationSetsSpec, load_evaluation_sets
from pipeline.verify.equivalence import golds_agree


@op_config("unique_problems")
class DedupConfig(spec_config(DedupSpec)):
    """How duplicate problems are found (`pipeline.hygiene.dedup.DedupSpec`)."""


@multi_asset(
    outs={
        "unique_problems": AssetOut(description="The pool without duplicates: one problem per cluster, the first "
                                                "in pool order. Rollouts are sampled for these only.", is_required=True),
        "duplicate_problems": AssetOut(description="Problems left out: exact and near duplicates with their cluster "
                                                   "and kept problem, and copies with conflicting gold answers.",
                                       is_required=True),
    },
    group_name="labelling",
)
def unique_problems(context: AssetExecutionContext, config: DedupConfig, problems: pa.Table, verifier: Verifier):
    """Exact duplicates after normalisation (NFKC with super- and subscripts kept, the case of words,
    whitespace, LaTeX spacing) under the same system prompt, near-duplicates by MinHash-LSH with the
    same gold answer, and identical problems whose answers disagree even to the verifier (all
    copies quarantined as `conflicting_answers`)."""
    result = deduplicate(problems, config.to_spec(), context.log.info, partial(golds_agree, verifier.pool()))
    kept = problems.filter(pa.array(result.keep))
    dropped = result.dropped.to_pandas()
    counts = result.counts()
    context.log.info(f"{problems.num_rows} problems: {counts}")
    yield Output(kept, output_name="unique_problems", metadata={
        "rows": kept.num_rows, "dropped": len(dropped), "outcome": counts_table(counts, "outcome", "problems"),
    })
    shown = dropped.head(PREVIEW_ROWS)
    pairs = shown.assign(kept_text=shown["kept_id"].map(_user_text(problems, shown["kept_id"])))
    yield Output(dropped, output_name="duplicate_problems", metadata={
        "rows": len(dropped),
        "reasons": counts_table(dropped["reason"].value_counts().to_dict(), "reason"),
        "pairs": preview(pairs, ["reason", "similarity", "text", "kept_text", "answer"]),
    })


@op_config("evaluation_problems")
class EvaluationProblemsConfig(spec_config(EvaluationSetsSpec)):
    """The benchmarks the pool is checked against (`pipeline.ingest.benchmarks.EvaluationSetsSpec`)."""


@asset(group_name="labelling")
def evaluation_problems(context: AssetExecutionContext, config: EvaluationProblemsConfig,
                        storage: GradusStorage) -> Output[pd.DataFrame]:
    """Every evaluation set's problems in the pool's schema plus a `benchmark` column; the
    contamination check uses them, and so can a later evaluation of trained policies."""
    frame, bad = load_evaluation_sets(config.to_spec().benchmarks, storage.layout().root)
    if len(bad):
        context.log.warning(f"{len(bad)} unusable benchmark rows left out: "
                            f"{bad.groupby(['benchmark', 'reason']).size().to_dict()}")
    per = frame["benchmark"].value_counts().to_dict()
    return Output(frame, metadata={
        "rows": len(frame), "unusable_rows": len(bad), "per_benchmark": counts_table(per, "benchmark", "problems"),
        "preview": preview(frame, ["benchmark", "category", "answer", "prompt"]),
    })


@op_config("contamination")
class ContaminationConfig(spec_config(ContaminationSpec)):
    """How the pool is checked (`pipeline.hygiene.contamination.ContaminationSpec`)."""


def flagged_pairs(report: pd.DataFrame, problems: pa.Table, benchmarks: pd.DataFrame) -> pd.DataFrame:
    """Flagged problems beside the benchmark problem each matches, one row per (problem, benchmark)."""
    names = list(dict.fromkeys(c.rpartition("/")[0] for c in report.columns if "/" in c))
    shown = {name: report[report[[f"{name}/{m}" for m in METHODS]].any(axis=1)].head(PREVIEW_ROWS) for name in names}
    # The texts of the rows shown only: the pool's prompts never all become Python objects.
    text = _user_text(problems, [pid for hit in shown.values() for pid in hit["problem_id"]])
    bench_text = _user_text(pa.Table.from_pandas(benchmarks, preserve_index=False),
                            [pid for name, hit in shown.items() for pid in hit[f"{name}/match"]])
    rows = []
    for name, hit in shown.items():
        for _, row in hit.iterrows():
            rows.append({"benchmark": name, "methods": ", ".join(m for m in METHODS if row[f"{name}/{m}"]),
                         "problem": text.get(row["problem_id"], ""),
                         "benchmark problem": bench_text.get(row[f"{name}/match"], "")})
    return pd.DataFrame(rows, columns=["benchmark", "methods", "problem", "benchmark problem"])


def _user_text(table: pa.Table, ids: Iterable[object]) -> dict:
    """The user turns of the problems `ids` names, by id (read for those rows alone)."""
    wanted = pa.array([i for i in ids if isinstance(i, str)], pa.string())
    rows = table.select(["problem_id", "prompt"]).filter(pc.is_in(table.column("problem_id"), value_set=wanted))
    return {pid: "\n".join(x["content"] for x in prompt if x["role"] == "user")
            for pid, prompt in zip(rows.column("problem_id").to_pylist(), rows.column("prompt").to_pylist())}


@asset(group_name="labelling")
def contamination(context: AssetExecutionContext, config: ContaminationConfig, unique_problems: pa.Table,
                  evaluation_problems: pd.DataFrame) -> Output[pd.DataFrame]:
    """Per pool problem and per benchmark: a flag for each method (`exact`, `open_r1` 8-grams,
    `datatrove` 12-grams with numbers normalised), a MinHash score and the matched benchmark
    problem, as separate columns `<benchmark>/<method>`."""
    spec = config.to_spec()
    benchmarks = [Benchmark.build(name, part, spec)
                  for name, part in evaluation_problems.groupby("benchmark", sort=False)]
    report = check(unique_problems, benchmarks, spec, context.log.info)
    counts = summary(report)
    context.log.info(f"contamination: {counts}")
    table = "\n".join(f"| {b} | " + " | ".join(str(c[m]) for m in (*METHODS, "any")) + " |" for b, c in counts.items())
    return Output(report, metadata={
        "rows": len(report),
        "flagged": int(flagged(report).sum()),
        "per_benchmark_and_method": MetadataValue.md(
            "| benchmark | " + " | ".join((*METHODS, "any")) + " |\n|---|" + "---|" * (len(METHODS) + 1) + "\n" + table
            if counts else "_(no benchmark)_"),
        "flagged_pairs": preview(flagged_pairs(report, unique_problems, evaluation_problems)),
        "benchmarks": MetadataValue.json({b.name: len(b.ids) for b in benchmarks}),
    })

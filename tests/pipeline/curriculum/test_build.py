import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.curriculum.build import CurriculumSpec, build_curriculum, manifest_problems, read_manifest
from pipeline.difficulty.strata import Strata


def pool(rates):
    """Problems and labels with the given (successes, trials)."""
    ids = [f"p{i}" for i in range(len(rates))]
    problems = pd.DataFrame({
        "problem_id": ids, "source": "src", "prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(len(ids))],
        "answer": [str(i) for i in range(len(ids))], "verifier": "math", "category": "cat", "metadata": "{}",
    })
    s = [r[0] for r in rates]
    n = [r[1] for r in rates]
    labels = pd.DataFrame({"problem_id": ids, "successes": s, "trials": n,
                           "pass_rate": [a / b for a, b in zip(s, n)], "ci_low": 0.0, "ci_high": 1.0})
    return problems, labels


def test_stages_follow_pass_rate_and_exclusions(tmp_path):
    problems, labels = pool([(8, 8), (7, 8), (4, 8), (1, 8), (0, 8), (5, 8)])
    manifest = build_curriculum(problems, labels, CurriculumSpec("c1"), tmp_path, {"model": {"id": "m"}})
    folder = tmp_path / "curricula" / "c1"
    got = {s["name"]: sorted(pq.read_table(folder / s["file"]).column("problem_id").to_pylist())
           for s in manifest["stages"]}
    assert got == {"stage_1": ["p1", "p5"], "stage_2": ["p2"], "stage_3": ["p3"]}  # edges (1, 0.5, 0.25, 0)
    assert manifest["excluded"] == {"solved": 1, "unsolved": 1, "truncation_bound": 0}
    assert manifest["counts"] == {"problems": 6, "labelled": 6, "in_stages": 4}
    assert manifest["model"] == {"id": "m"}
    assert manifest_problems(folder) == []


def test_verl_columns(tmp_path):
    problems, labels = pool([(1, 2)])
    build_curriculum(problems, labels, CurriculumSpec("v"), tmp_path)
    table = pq.read_table(tmp_path / "curricula" / "v" / "stage_2.parquet")
    row = table.to_pylist()[0]
    assert row["data_source"] == "src" and row["ability"] == "math"
    assert row["prompt"] == [{"role": "user", "content": "q0"}]
    assert row["reward_model"] == {"style": "rule", "ground_truth": "0"}
    assert row["extra_info"]["problem_id"] == "p0"
    assert row["pass_rate"] == 0.5 and row["stage"] == 2


def test_including_solved_and_unsolved(tmp_path):
    problems, labels = pool([(8, 8), (0, 8)])
    spec = CurriculumSpec("all", Strata(exclude_solved=False, exclude_unsolved=False))
    manifest = build_curriculum(problems, labels, spec, tmp_path)
    assert [s["rows"] for s in manifest["stages"]] == [1, 0, 1]
    assert manifest["stages"][1]["note"]  # an empty stage says why


def test_unlabelled_problems_are_left_out(tmp_path):
    problems, labels = pool([(1, 2), (1, 2)])
    manifest = build_curriculum(problems, labels.iloc[:1], CurriculumSpec("u"), tmp_path)
    assert manifest["counts"]["labelled"] == 1


def test_manifest_check_detects_tampering(tmp_path):
    problems, labels = pool([(1, 2), (3, 4)])
    build_curriculum(problems, labels, CurriculumSpec("t"), tmp_path)
    folder = tmp_path / "curricula" / "t"
    pq.write_table(pq.read_table(folder / "stage_2.parquet").slice(0, 0), folder / "stage_2.parquet")
    (folder / "stage_9.parquet").write_bytes(b"")
    problems_found = manifest_problems(folder)
    assert any("stage_2.parquet has 0 rows" in p for p in problems_found)
    assert any("stage_9.parquet is on disk" in p for p in problems_found)


def test_rebuild_replaces_folder_atomically(tmp_path):
    problems, labels = pool([(1, 2)])
    build_curriculum(problems, labels, CurriculumSpec("r"), tmp_path)
    build_curriculum(problems, labels, CurriculumSpec("r", Strata((1.0, 0.0))), tmp_path)
    folder = tmp_path / "curricula" / "r"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "stage_1.parquet"]
    assert json.loads((folder / "manifest.json").read_text())["strata"]["edges"] == [1.0, 0.0]
    assert read_manifest(folder)["name"] == "r"
    assert not list(tmp_path.glob("curricula/.*"))


def test_bad_name_is_refused(tmp_path):
    problems, labels = pool([(1, 2)])
    with pytest.raises(ValueError):
        build_curriculum(problems, labels, CurriculumSpec("../escape"), tmp_path)


def test_provenance_describes_the_labels_it_stages_not_todays_target():
    from pipeline.core.model import ModelSpec
    from pipeline.curriculum.build import provenance
    from pipeline.engines.base import SamplingConfig
    from pipeline.labels.pass_rates import LabelTarget, pass_rates

    model = ModelSpec("/m", "org/m", "r1")
    measured_at = LabelTarget(model, SamplingConfig(temperature=0.8), "v1")
    rewards = pd.DataFrame({"problem_id": ["a", "a", "b", "b"], "passed": [True, False, False, False]})
    labels = pass_rates(rewards, measured_at)
    assert provenance(measured_at, "measured", measured=labels)["sampling"]["temperature"] == 0.8

    today = LabelTarget(model, SamplingConfig(temperature=0.2, max_tokens=512), "v1")
    with pytest.raises(ValueError, match=f"{measured_at.key}.*{today.key}.*rematerialize pass_rates"):
        provenance(today, "measured", measured=labels)
    warned = provenance(today, "measured", measured=labels, on_mismatch="warn")
    assert warned["label_key"] == measured_at.key and warned["sampling"] is None
    assert "rematerialize pass_rates" in warned["warnings"][0]
    newer_verifier = LabelTarget(model, SamplingConfig(temperature=0.8), "v2")
    with pytest.raises(ValueError, match="verifier"):
        provenance(newer_verifier, "measured", measured=labels)


def truncated_pool():
    """p0 2/8 with 5 of its 6 failures cut at the cap; p1 2/8 with 1 cut; p2 4/8 not counted."""
    problems, labels = pool([(2, 8), (2, 8), (4, 8)])
    labels["truncated"] = pd.array([5, 1, None], dtype="Int64")
    labels["truncated_failures"] = pd.array([5, 1, None], dtype="Int64")
    return problems, labels


@pytest.mark.parametrize("policy,stage_3", [("flag", ["p0", "p1"]), ("exclude", ["p1"])])
def test_problems_failing_mostly_by_the_token_cap_are_flagged_or_left_out(tmp_path, policy, stage_3):
    problems, labels = truncated_pool()
    made = {"extraction_policy": "auto", "sampling": {"max_tokens": 64}}
    manifest = build_curriculum(problems, labels, CurriculumSpec("t", truncation_bound=policy), tmp_path, made)
    folder = tmp_path / "curricula" / "t"
    rows = {r["problem_id"]: r for s in manifest["stages"] if s["file"]
            for r in pq.read_table(folder / s["file"]).to_pylist()}
    assert sorted(p for p, r in rows.items() if r["stage"] == 3) == stage_3
    assert {p: r["truncation_bound"] for p, r in rows.items()} == (
        {"p0": True, "p1": False, "p2": False} if policy == "flag" else {"p1": False, "p2": False})
    assert rows["p1"]["truncated"] == 1 and rows["p2"]["truncated"] is None
    assert manifest["excluded"]["truncation_bound"] == (1 if policy == "exclude" else 0)
    assert [s["truncation_bound"] for s in manifest["stages"]] == [0, 0, 1 if policy == "flag" else 0]
    truncation = manifest["truncation"]
    assert (truncation["rollouts"], truncation["truncated"], truncation["uncounted_problems"]) == (16, 6, 1)
    assert truncation["truncation_bound_in_stages"] == 1 and not truncation["passed"]
    assert "max_tokens=64" in truncation["message"]


def test_labels_without_truncation_counts_flag_nothing(tmp_path):
    problems, labels = pool([(2, 8)])
    manifest = build_curriculum(problems, labels, CurriculumSpec("n"), tmp_path)
    assert manifest["truncation"] == {"counted": False, "policy": "flag", "truncation_bound_in_stages": 0}
    row = pq.read_table(tmp_path / "curricula" / "n" / "stage_3.parquet").to_pylist()[0]
    assert row["truncation_bound"] is False and "truncated" not in row


def test_the_manifest_predicts_the_group_filter_per_stage_and_gives_the_trainer_lines(tmp_path):
    from pipeline.curriculum.informative import GroupFilter

    problems, labels = pool([(4, 8), (2, 8), (6, 8)])
    labels["ci_low"], labels["ci_high"] = 0.5, 0.5
    manifest = build_curriculum(problems, labels, CurriculumSpec("g"), tmp_path, {"extraction_policy": "auto"},
                                GroupFilter(2, 1))
    stage_1, stage_2, stage_3 = manifest["stages"]
    # stage_1 holds p2 at 6/8: 2 * 0.75 * 0.25 = 0.375 survive; 1 - 0.625^N >= 0.95 first at N = 7.
    assert stage_1["group_filter"]["surviving_fraction"] == 0.375
    assert stage_1["group_filter"]["generation_batch_size"] == 7
    assert stage_1["group_filter"]["surviving_fraction_range"] == [0.5, 0.5]  # every interval is [0.5, 0.5]
    assert stage_2["group_filter"]["surviving_fraction"] == 0.5 and stage_3["group_filter"]["surviving_fraction"] == 0.375
    folder = tmp_path / "curricula" / "g"
    assert manifest["trainers"]["verl"][:2] == [
        f"'data.train_files=[{folder / 'stage_1.parquet'},{folder / 'stage_2.parquet'},{folder / 'stage_3.parquet'}]'",
        "data.shuffle=False"]
    # One verl run trains every stage: the generation batch is the hardest stage's.
    assert manifest["trainers"]["verl"][-1] == "data.gen_batch_size=7"
    assert build_curriculum(problems, labels, CurriculumSpec("h"), tmp_path)["stages"][0]["group_filter"] is None


def test_labels_made_under_another_extraction_policy_are_refused_naming_it():
    """Labels read with `auto`; a curriculum built with `answer_tag` would tell the trainer to reward
    a format under which these problems were never solved."""
    from pipeline.core.model import ModelSpec
    from pipeline.curriculum.build import provenance
    from pipeline.engines.base import SamplingConfig
    from pipeline.labels.pass_rates import LabelTarget, pass_rates

    model = ModelSpec("/m", "org/m", "r1")
    rewards = pd.DataFrame({"problem_id": ["a", "a", "b", "b"], "passed": [True, False, False, False]})
    labels = pass_rates(rewards, LabelTarget(model, SamplingConfig(), "v1", extraction_policy="auto"))
    tagged = LabelTarget(model, SamplingConfig(), "v1", extraction_policy="answer_tag")
    with pytest.raises(ValueError, match="extraction_policy auto → answer_tag.*rematerialize pass_rates"):
        provenance(tagged, "measured", measured=labels)


def test_other_models_rates_ride_in_extra_info_as_a_model_difficulty_struct(tmp_path):
    import pyarrow as pa

    from pipeline.labels.matrix import model_difficulty_array

    problems, labels = pool([(1, 2), (1, 4)])
    table = pa.Table.from_pandas(labels, preserve_index=False).append_column(
        "model_difficulty", model_difficulty_array([{"google/gemma-3-270m": 0.75, "smol@ckpt": 0.5}, {}],
                                               ["google/gemma-3-270m", "smol@ckpt"]))
    build_curriculum(problems, table, CurriculumSpec("m"), tmp_path)
    rows = {r["problem_id"]: r for s in ("stage_2", "stage_3")
            for r in pq.read_table(tmp_path / "curricula" / "m" / f"{s}.parquet").to_pylist()}
    assert rows["p0"]["extra_info"]["model_difficulty"] == {"google/gemma-3-270m": 0.75, "smol@ckpt": 0.5}
    assert rows["p1"]["extra_info"]["model_difficulty"] == {"google/gemma-3-270m": None, "smol@ckpt": None}


@pytest.mark.parametrize("seed", [0, None])
def test_a_streamed_pool_gives_the_stages_built_in_memory(tmp_path, monkeypatch, seed):
    """The pool read from Parquet a few rows at a time, with unlabelled and excluded problems,
    stages the same rows in the same order as the whole table joined at once (`stratify`, each
    stage in pool order, shuffled with seed + k)."""
    import numpy as np
    import pyarrow as pa

    from pipeline.core.storage import ParquetSource
    from pipeline.curriculum import build

    rng = np.random.default_rng(3)
    trials = 8
    problems, labels = pool([(int(s), trials) for s in rng.integers(0, trials + 1, 40)])
    labels = labels.sample(frac=0.8, random_state=1)  # some problems unlabelled, labels not in pool order
    excluded = pa.array(["p3", "p17", "p30"])
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pandas(problems, preserve_index=False), path)
    spec = CurriculumSpec("s", shuffle_seed=seed)

    whole = build.stratify(problems[~problems["problem_id"].isin(excluded.to_pylist())], labels, spec.strata)
    whole = whole.append_column("truncation_bound", pa.array(np.zeros(whole.num_rows, bool)))
    verl = build.to_verl(whole)
    stage = whole.column("stage").to_numpy()
    expected = {}
    for k in range(1, spec.strata.n_stages + 1):
        rows = np.flatnonzero(stage == k)
        if seed is not None:
            rows = rows[np.random.default_rng(seed + k).permutation(rows.size)]
        expected[f"stage_{k}"] = verl.take(pa.array(rows, pa.int64())).to_pylist()

    monkeypatch.setattr(build, "POOL_BATCH_ROWS", 3)
    monkeypatch.setattr(build, "BATCH_ROWS", 3)  # a shuffled stage spans several buckets
    streamed = build.write_curriculum(ParquetSource(path), labels, spec, tmp_path, exclude=excluded)[0]
    in_memory = build.write_curriculum(problems, labels, CurriculumSpec("m", shuffle_seed=seed), tmp_path,
                                       exclude=excluded)[0]
    for manifest, name in ((streamed, "s"), (in_memory, "m")):
        folder = tmp_path / "curricula" / name
        got = {s["name"]: pq.read_table(folder / s["file"]).to_pylist() for s in manifest["stages"] if s["file"]}
        assert got == {k: v for k, v in expected.items() if v}
        assert manifest["counts"] == {"problems": 37, "labelled": whole.num_rows, "in_stages": sum(map(len, got.values()))}
        assert manifest_problems(folder) == []
    assert streamed["source_snapshot"] == in_memory["source_snapshot"]
    assert [s["mean_pass_rate"] for s in streamed["stages"]] == [s["mean_pass_rate"] for s in in_memory["stages"]]

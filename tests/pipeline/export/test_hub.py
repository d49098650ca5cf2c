import inspect
from types import SimpleNamespace

import datasets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard, HfApi

from pipeline.core.model import ModelSpec
from pipeline.curriculum.build import CurriculumSpec, build_curriculum
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import SamplingConfig
from pipeline.export.hub import (
    CARD,
    DEFAULT_NOTES,
    NOTES_END,
    NOTES_START,
    UNKNOWN_LICENCE,
    OverwriteRefused,
    build_hub_folder,
    card_licence,
    publish,
    split_card,
)
from pipeline.labels.history import LabelHistory
from pipeline.labels.matrix import CrossModelSelection, other_models
from pipeline.labels.pass_rates import LabelTarget, pass_rates_from_counts

PROVENANCE = {
    "model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "rev123", "path": "/m"},
    "sampling": {"temperature": 0.8, "top_p": 1.0, "max_tokens": 96, "seed": 0},
    "sampling_key": "s-abc",
    "label_key": "smol@rev123/s-abc",
    "verifier_version": "v1",
    "extraction_policy": "auto",
}


def curriculum(home, rates, source="reasoning_gym/chain_sum", name="c1"):
    """A real curriculum folder for problems with the given (successes, trials)."""
    ids = [f"p{i}" for i in range(len(rates))]
    problems = pd.DataFrame({
        "problem_id": ids, "source": source,
        "prompt": [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(len(ids))],
        "answer": [str(i + 1) for i in range(len(ids))], "verifier": "math", "category": "cat", "metadata": "{}",
    })
    labels = pd.DataFrame({"problem_id": ids, "successes": [s for s, _ in rates], "trials": [n for _, n in rates],
                           "pass_rate": [s / n for s, n in rates], "ci_low": 0.0, "ci_high": 1.0})
    build_curriculum(problems, labels, CurriculumSpec(name), home, PROVENANCE)
    return home / "curricula" / name


# stage_1: p0, p1; stage_2: p2; stage_3: empty; one solved and one unsolved left out
RATES = [(7, 8), (6, 8), (4, 8), (8, 8), (0, 8)]


def test_folder_loads_per_stage_with_datasets(tmp_path):
    out = tmp_path / "hub" / "c1"
    folder = build_hub_folder(curriculum(tmp_path, RATES), out)
    assert folder.configs == ("all", "stage_1", "stage_2")
    assert folder.rows == {"stage_1": 2, "stage_2": 1, "stage_3": 0}
    assert [p for p, _ in folder.files()] == [
        CARD, "data/stage_1/train-00000-of-00001.parquet", "data/stage_2/train-00000-of-00001.parquet"]
    cache = str(tmp_path / "hf_cache")
    for stage, rows in (("stage_1", 2), ("stage_2", 1)):
        ds = datasets.load_dataset(str(out), stage, split="train", cache_dir=cache)
        assert len(ds) == rows and set(ds["stage"]) == {int(stage[-1])}
        assert ds[0]["prompt"][0]["role"] == "user" and ds[0]["reward_model"]["style"] == "rule"
    every = datasets.load_dataset(str(out), "all", cache_dir=cache)
    assert {k: len(v) for k, v in every.items()} == {"stage_1": 2, "stage_2": 1}
    with pytest.raises(ValueError):
        datasets.load_dataset(str(out), "stage_3", cache_dir=cache)


def test_card_has_provenance_and_round_trips_with_hand_written_notes(tmp_path):
    source = curriculum(tmp_path, RATES)
    out = tmp_path / "hub" / "c1"
    build_hub_folder(source, out, repo_id="me/curriculum")
    card = DatasetCard.load(out / CARD)
    assert card.data.license == "apache-2.0"
    assert [c["config_name"] for c in card.data.configs] == ["all", "stage_1", "stage_2"]
    for text in ("rev123", "temperature=0.8", "max_tokens=96", "smol@rev123/s-abc", "reasoning_gym/chain_sum",
                 "Apache-2.0", 'load_dataset("me/curriculum", "stage_1"', "1 always solved", "1 never solved"):
        assert text in card.text, text
    assert DEFAULT_NOTES in card.text

    # Hand edits: notes between the markers and an extra front matter key survive a rebuild.
    meta, body = split_card((out / CARD).read_text())
    edited = body.replace(DEFAULT_NOTES, "Curated by the RL team; see go/rl-curricula.")
    (out / CARD).write_text("---\nlanguage: [en]\n" + (out / CARD).read_text().split("---\n", 2)[1]
                            + "---\n" + edited)
    folder = build_hub_folder(curriculum(tmp_path, RATES[:3]), out, repo_id="me/curriculum")
    meta, body = split_card((out / CARD).read_text())
    assert meta["language"] == ["en"]
    assert body.count(NOTES_START) == body.count(NOTES_END) == 1
    assert "Curated by the RL team; see go/rl-curricula." in body and DEFAULT_NOTES not in body
    assert folder.rows == {"stage_1": 2, "stage_2": 1, "stage_3": 0}
    assert "0 always solved" in body


def test_histogram_counts_stage_pass_rates_in_right_closed_bins(tmp_path):
    rates = [(3, 10), (4, 10), (7, 10), (9, 10)]  # 0.3 sits in (0.2, 0.3], not (0.3, 0.4]
    build_hub_folder(curriculum(tmp_path, rates), tmp_path / "hub")
    body = split_card((tmp_path / "hub" / CARD).read_text())[1]
    rows = {line.split("|")[1].strip(): int(line.split("|")[2]) for line in body.splitlines()
            if line.startswith("| 0.") and "–" in line.split("|")[1]}
    assert rows["0.2–0.3"] == 1 and rows["0.3–0.4"] == 1 and rows["0.6–0.7"] == 1 and rows["0.8–0.9"] == 1
    assert sum(rows.values()) == len(rates)


def test_licence_comes_from_the_sources_unless_declared():
    assert card_licence({"reasoning_gym/a": 3, "reasoning_gym/b": 1}, None)[0] == "apache-2.0"
    licence, lines = card_licence({"reasoning_gym/a": 3, "dataset/mine.jsonl": 2}, None)
    assert licence == "other" and lines["dataset/mine.jsonl"] == UNKNOWN_LICENCE
    licence, lines = card_licence({"dataset/mine.jsonl": 2}, "cc-by-4.0")
    assert licence == "cc-by-4.0" and lines["dataset/mine.jsonl"] == "declared: cc-by-4.0"


def test_an_inconsistent_curriculum_is_not_exported(tmp_path):
    source = curriculum(tmp_path, RATES)
    pq.write_table(pq.read_table(source / "stage_1.parquet").slice(0, 1), source / "stage_1.parquet")
    with pytest.raises(ValueError, match="disagrees with its manifest"):
        build_hub_folder(source, tmp_path / "hub")


class FakeHub:
    """Records calls; each is checked against the real `HfApi` method's signature."""

    def __init__(self, existing=(), branches=("main",)):
        self.existing, self.branches, self.calls = set(existing), set(branches), []

    def __getattr__(self, name):
        real = inspect.signature(getattr(HfApi, name))

        def call(*args, **kwargs):
            real.bind(None, *args, **kwargs)
            self.calls.append((name, args, kwargs))
            return self.answer(name, *args, **kwargs)

        return call

    def answer(self, name, *args, **kwargs):
        if name == "repo_exists":
            return args[0] in self.existing
        if name == "list_repo_refs":
            return SimpleNamespace(branches=[SimpleNamespace(name=b) for b in sorted(self.branches)])
        if name == "upload_folder":
            return SimpleNamespace(oid="c0ffee", commit_url=f"https://hub/{kwargs['repo_id']}/commit/c0ffee")
        return None

    def names(self):
        return [name for name, _, _ in self.calls]


@pytest.fixture
def hub_folder(tmp_path):
    return build_hub_folder(curriculum(tmp_path, RATES), tmp_path / "hub" / "c1")


def test_publish_creates_the_repo_and_uploads_one_commit(hub_folder):
    api = FakeHub()
    pushed = publish(hub_folder, api, "me/cur", message="gradus: v1", private=True)
    assert api.names() == ["repo_exists", "create_repo", "upload_folder"]
    assert api.calls[1][2] == {"private": True, "repo_type": "dataset"}
    upload = api.calls[2][2]
    assert upload["folder_path"] == str(hub_folder.path) and upload["repo_type"] == "dataset"
    assert upload["revision"] is None and upload["commit_message"] == "gradus: v1"
    assert upload["delete_patterns"] == ["data/**"]  # stages that vanished are removed in the same commit
    assert (pushed.commit, pushed.revision, pushed.created_repo) == ("c0ffee", "main", True)


def test_publish_refuses_to_overwrite_unless_asked(hub_folder):
    api = FakeHub(existing={"me/cur"}, branches={"main", "v1"})
    with pytest.raises(OverwriteRefused, match="already exists"):
        publish(hub_folder, api, "me/cur", message="m")
    with pytest.raises(OverwriteRefused, match="branch 'v1'"):
        publish(hub_folder, api, "me/cur", message="m", revision="v1")
    assert "upload_folder" not in api.names()

    pushed = publish(hub_folder, api, "me/cur", message="m", revision="v2")  # a new branch is fine
    assert pushed.revision == "v2" and not pushed.created_repo
    assert ("create_branch", ("me/cur",), {"branch": "v2", "repo_type": "dataset", "exist_ok": True}) in api.calls
    assert api.calls[-1][2]["revision"] == "v2"

    api.calls.clear()
    publish(hub_folder, api, "me/cur", message="m", overwrite=True)
    assert api.names() == ["repo_exists", "upload_folder"]


def test_the_card_lists_the_other_models_a_curriculum_carries(tmp_path):
    smol = LabelTarget(ModelSpec("/s", "HuggingFaceTB/SmolLM2-135M-Instruct", "rev123"), SamplingConfig(), "v1")
    gemma = LabelTarget(ModelSpec("/g", "google/gemma-3-270m", "g1"), SamplingConfig(), "v1")
    ids = [f"p{i}" for i in range(len(RATES))]
    history = LabelHistory(tmp_path / "home")
    history.record(pass_rates_from_counts(np.array(ids), np.array([8, 8, 8, 8, 0]), np.full(5, 8), gemma), Strata())
    labels = pd.DataFrame({"problem_id": ids, "successes": [s for s, _ in RATES], "trials": [n for _, n in RATES],
                           "pass_rate": [s / n for s, n in RATES], "ci_low": 0.0, "ci_high": 1.0})
    others = other_models(history, smol.key, CrossModelSelection(solved_by="google/gemma-3-270m"))
    table, record = others.apply(labels)
    problems = pd.DataFrame({
        "problem_id": ids, "source": "reasoning_gym/chain_sum", "prompt": [[{"role": "user", "content": i}] for i in ids],
        "answer": "1", "verifier": "math", "category": "cat", "metadata": "{}"})
    build_curriculum(problems, table, CurriculumSpec("c1"), tmp_path, {**PROVENANCE, "other_models": record})
    build_hub_folder(tmp_path / "curricula" / "c1", tmp_path / "hub")
    body = split_card((tmp_path / "hub" / CARD).read_text())[1]
    section = body.split("## Difficulty across models")[1].split("##")[0]
    assert "| `google/gemma-3-270m` | `google/gemma-3-270m` | `g1` | 5 | 0.800 |" in section
    assert "`google/gemma-3-270m` solves at a pass rate of at least 0.5" in section and "4 kept, 1 left out" in section
    staged = pq.read_table(tmp_path / "hub" / "data" / "stage_1" / "train-00000-of-00001.parquet").to_pylist()
    assert [dict(r["extra_info"]["model_difficulty"]) for r in staged] == [{"google/gemma-3-270m": 1.0}] * 2
    loaded = datasets.load_dataset(str(tmp_path / "hub"), "stage_1", split="train", cache_dir=str(tmp_path / "cache"))
    assert [r["extra_info"]["model_difficulty"] for r in loaded] == [{"google/gemma-3-270m": 1.0}] * 2

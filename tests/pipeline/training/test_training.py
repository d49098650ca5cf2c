"""Schedules and samplers on fake reward streams (pure, seeded), and the GRPO loop on a tiny random
model built here (the real model's run is in tests/assets/test_training.py)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.core.model import ModelSpec, folder_revision, resolve_model
from pipeline.core.storage import StorageLayout
from pipeline.curriculum.build import CurriculumSpec, build_curriculum
from pipeline.training import (
    GenerationSettings,
    PhaseController,
    SamplerSpec,
    SequentialSampler,
    StageSchedule,
    TargetDifficultySampler,
    TrainingSpec,
    UCBStrataSampler,
    load_curriculum,
    save_checkpoint,
    train_curriculum,
)


def bernoulli_rewards(rng, pass_rate, rows, generations):
    """Fake rewards: each completion of row r passes with probability pass_rate[r]."""
    rows = np.repeat(rows, generations)
    return rows, (rng.random(rows.size) < np.asarray(pass_rate)[rows]).astype(float)


def run_stream(controller, reward_of, batch=4, max_steps=1000):
    """Drive a controller the way the trainer does: draw, reward, record, end phases."""
    while not controller.finished and len(controller.records) < max_steps:
        rows = controller.draw(batch)
        controller.record(*reward_of(rows))
        if controller.phase_done():
            controller.advance()
    return controller.frame()


# --- schedule ------------------------------------------------------------------------------------


def test_fixed_schedule_counts_steps_only():
    schedule = StageSchedule("fixed", steps_per_stage=3)
    assert not schedule.done([1.0, 1.0])
    assert schedule.done([0.0, 0.0, 0.0])


def test_threshold_schedule_waits_for_a_full_window_then_the_threshold():
    schedule = StageSchedule("threshold", threshold=0.6, window=2, max_steps_per_stage=10)
    rewards = [0.9, 0.2, 0.6, 0.7]
    decisions = [schedule.done(rewards[: i + 1]) for i in range(len(rewards))]
    # step 1 is above the threshold but the window is not full; 0.55 after step 2 and 0.4 after 3 are below
    assert decisions == [False, False, False, True]
    assert StageSchedule("threshold", window=2, max_steps_per_stage=5).done([0.0] * 5)


def test_schedule_rejects_bad_settings():
    with pytest.raises(ValueError):
        StageSchedule("sometimes")
    with pytest.raises(ValueError):
        StageSchedule("fixed", steps_per_stage=0)


# --- samplers ------------------------------------------------------------------------------------


def test_sequential_sampler_trains_stage_by_stage_until_the_reward_threshold():
    stage = np.array([1] * 4 + [2] * 4 + [4] * 4)
    rng = np.random.default_rng(0)
    sampler = SequentialSampler(np.zeros(stage.size), stage, seed=0)
    schedule = StageSchedule("threshold", threshold=0.7, window=3, max_steps_per_stage=40)
    controller = PhaseController(sampler, schedule, 3)

    def reward_of(rows):
        # a fake model that improves with every step it spends on a stage
        p = min(1.0, 0.1 + 0.05 * len(controller.phase_rewards()))
        rows = np.repeat(rows, 4)
        return rows, (rng.random(rows.size) < p).astype(float)

    log = run_stream(controller, reward_of)
    assert controller.finished
    assert log.groupby("phase")["stage"].unique().map(list).to_dict() == {1: [1], 2: [2], 3: [4]}
    for _, part in log.groupby("phase"):
        assert part["reward"].tail(3).mean() >= 0.7 or len(part) == 40
        assert part["reward"].head(len(part) - 1).rolling(3).mean().dropna().lt(0.7).all()  # not a step late
        assert part["phase_step"].tolist() == list(range(1, len(part) + 1))
    assert log["samples_seen"].iloc[-1] == 16 * len(log)


def test_sequential_sampler_visits_every_problem_of_a_stage_before_repeating():
    stage = np.array([1, 1, 1, 1, 1, 2])
    sampler = SequentialSampler(np.zeros(6), stage, seed=3)
    sampler.begin_phase(1)
    first_pass = np.concatenate([sampler.draw(2), sampler.draw(3)])
    assert sorted(first_pass) == [0, 1, 2, 3, 4]
    sampler.begin_phase(2)
    assert set(sampler.draw(4)) == {5}


def test_target_difficulty_draws_the_closest_problems():
    rates = np.linspace(0.0, 1.0, 11)
    sampler = TargetDifficultySampler(rates, np.ones(11, int), seed=0, initial_target=0.42)
    rows = sampler.draw(3)
    assert sorted(rates[rows].round(2)) == [0.3, 0.4, 0.5]


def test_target_difficulty_moves_with_reward():
    rates = np.linspace(0.05, 0.95, 19)
    easy_wins = TargetDifficultySampler(rates, np.ones(19, int), seed=0)
    assert easy_wins.target == pytest.approx(0.95)  # starts with the easiest problems
    targets = []
    for _ in range(30):
        easy_wins.observe(easy_wins.draw(4), np.ones(16))
        targets.append(easy_wins.target)
    assert np.all(np.diff(targets) <= 0) and targets[-1] == pytest.approx(0.05)

    lost = TargetDifficultySampler(rates, np.ones(19, int), seed=0, initial_target=0.05)
    for _ in range(30):
        lost.observe(lost.draw(4), np.zeros(16))
    assert lost.target == pytest.approx(0.95)


def test_target_difficulty_settles_where_the_reward_meets_its_aim():
    rates = np.linspace(0.05, 0.95, 19)
    rng = np.random.default_rng(1)
    sampler = TargetDifficultySampler(rates, np.ones(19, int), seed=1, target_reward=0.5)
    controller = PhaseController(sampler, StageSchedule("fixed", steps_per_stage=300), 1)
    log = run_stream(controller, lambda rows: bernoulli_rewards(rng, rates, rows, 8))
    settled = log["target_pass_rate"].tail(100)
    assert abs(settled.mean() - 0.5) < 0.1, settled.describe()
    assert log["target_pass_rate"].iloc[0] == pytest.approx(0.95)


@pytest.mark.parametrize("signal", ["abs_advantage", "reward_variance"])
@pytest.mark.parametrize("temperature", [0.0, 0.05])
def test_ucb_prefers_the_stratum_with_mixed_outcomes(signal, temperature):
    # stratum 1: always solved, 2: solved half the time, 3: never solved
    stage = np.array([1] * 5 + [2] * 5 + [3] * 5)
    rates = np.array([1.0] * 5 + [0.5] * 5 + [0.0] * 5)
    rng = np.random.default_rng(2)
    sampler = UCBStrataSampler(rates, stage, seed=2, exploration=0.1, temperature=temperature, signal=signal)
    controller = PhaseController(sampler, StageSchedule("fixed", steps_per_stage=60), 1)
    log = run_stream(controller, lambda rows: bernoulli_rewards(rng, rates, rows, 8), batch=2)
    assert all(sampler.plays[s] >= 1 for s in (1, 2, 3))  # every arm was explored
    assert sampler.plays[2] > 2 * (sampler.plays[1] + sampler.plays[3])
    assert np.argmax(sampler.scores()) == 1
    assert log["stage"].tail(20).eq(2).mean() > 0.5


def test_ucb_explores_unplayed_strata_first():
    stage = np.array([1, 2, 3])
    sampler = UCBStrataSampler(np.zeros(3), stage, seed=0)
    assert sorted(sampler.stage[sampler.draw(3)]) == [1, 2, 3]
    assert np.isinf(sampler.scores()).all()


def test_sampler_spec_builds_each_kind():
    kinds = {"sequential": SequentialSampler, "target_difficulty": TargetDifficultySampler, "ucb": UCBStrataSampler}
    for kind, cls in kinds.items():
        assert isinstance(SamplerSpec(kind).build([0.5, 0.2], [1, 2], seed=0), cls)
    with pytest.raises(ValueError):
        SamplerSpec("random")


def test_controller_log_and_annotations():
    sampler = SequentialSampler([0.5, 0.25], [1, 2], seed=0)
    controller = PhaseController(sampler, StageSchedule("fixed", steps_per_stage=2), 2)
    rng = np.random.default_rng(0)
    log = run_stream(controller, lambda rows: bernoulli_rewards(rng, [0.5, 0.25], rows, 3), batch=1)
    assert log["step"].tolist() == [1, 2, 3, 4]
    assert log["phase"].tolist() == [1, 1, 2, 2] and log["stage"].tolist() == [1, 1, 2, 2]
    assert log["prompts_seen"].tolist() == [1, 2, 3, 4] and log["samples_seen"].tolist() == [3, 6, 9, 12]
    controller.annotate(2, {"kl": 0.1})
    assert controller.frame()["kl"].tolist()[1] == 0.1
    with pytest.raises(RuntimeError):
        controller.draw(1)


# --- rewards, curriculum and checkpoints ---------------------------------------------------------


def test_verifier_rewards_use_the_labelling_rule(verifier_pool):
    from pipeline.rewards.trainers import RewardRow, completion_text, row_rewards

    rows = [RewardRow("12", "math", "{}", "auto")] * 3
    rewards = row_rewards(["So the answer is 12.", "I think 13", "no idea"], rows, verifier_pool)
    assert rewards == [1.0, 0.0, 0.0]
    assert completion_text([{"role": "assistant", "content": "7"}]) == "7"
    assert completion_text("7") == "7"


def problems_and_labels(rates, answers=None):
    """Problems `What is i + 0 ?` with gold `i` and labels with the given (successes, trials)."""
    n = len(rates)
    answers = answers or [str(i % 10) for i in range(n)]
    problems = pd.DataFrame({
        "problem_id": [f"p{i}" for i in range(n)], "source": "test",
        "prompt": [[{"role": "user", "content": f"What is {a} + 0 ?"}] for a in answers],
        "answer": answers, "verifier": "math", "category": "test", "metadata": "{}",
    })
    labels = pd.DataFrame({
        "problem_id": problems["problem_id"], "successes": [s for s, _ in rates], "trials": [t for _, t in rates],
        "pass_rate": [s / t for s, t in rates], "ci_low": 0.0, "ci_high": 1.0,
    })
    return problems, labels


def test_load_curriculum_reads_the_stages_and_refuses_tampering(home):
    problems, labels = problems_and_labels([(7, 8), (4, 8), (1, 8), (8, 8)])
    build_curriculum(problems, labels, CurriculumSpec("c"), home, {"sampling": {"temperature": 0.7}})
    pool = load_curriculum(StorageLayout(str(home)), "c")
    assert pool.stage.tolist() == [1, 2, 3]
    assert pool.pass_rate.tolist() == [7 / 8, 4 / 8, 1 / 8]
    assert pool.manifest["sampling"]["temperature"] == 0.7
    stage_file = home / "curricula" / "c" / "stage_2.parquet"
    pq.write_table(pq.read_table(stage_file).slice(0, 0), stage_file)
    with pytest.raises(ValueError, match="disagrees with its manifest"):
        load_curriculum(StorageLayout(str(home)), "c")
    with pytest.raises(FileNotFoundError):
        load_curriculum(StorageLayout(str(home)), "missing")


# --- sampling follows the labels ------------------------------------------------------------------

LABELLED_AT = {"sampling": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 4, "seed": 0},
               "extraction_policy": "last_number"}


def test_generation_settings_come_from_the_labels_unless_overridden():
    assert TrainingSpec().generation_settings(LABELLED_AT, "c") == GenerationSettings(1.0, 0.95, 4, "last_number")
    spec = TrainingSpec(temperature=0.5, max_completion_length=9, extraction_policy="auto")
    assert spec.generation_settings(LABELLED_AT, "c") == GenerationSettings(0.5, 0.95, 9, "auto")
    explicit = TrainingSpec(temperature=0.7, top_p=1.0, max_completion_length=3, extraction_policy="auto")
    assert explicit.generation_settings({}, "c") == GenerationSettings(0.7, 1.0, 3, "auto")


def test_a_curriculum_without_sampling_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="Rebuild it with the `curriculum` asset") as raised:
        TrainingSpec(temperature=0.7).generation_settings({"extraction_policy": "auto"}, "curricula/old")
    message = str(raised.value)
    assert "curricula/old" in message and "sampling.top_p" in message and "sampling.max_tokens" in message
    assert "sampling.temperature" not in message  # set explicitly, so not missing


def test_a_curriculum_without_sampling_stops_training_before_any_model_loads(home, verifier_pool):
    problems, labels = problems_and_labels([(7, 8), (1, 8)])
    build_curriculum(problems, labels, CurriculumSpec("bare"), home)
    missing_model = ModelSpec(str(home / "no-model"), "test/none", "r0")
    with pytest.raises(ValueError, match="does not record how its labels were sampled"):
        train_curriculum(TrainingSpec("bare"), missing_model, verifier_pool, StorageLayout(str(home)))
    assert not (home / "checkpoints").exists()


# --- a tiny random model through TRL -------------------------------------------------------------


def tiny_model(folder, seed=0) -> ModelSpec:
    """A 1-layer Llama over a word-level vocabulary that is mostly digits, with a chat template:
    untrained, it writes digits, so single-digit answers pass now and then."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>", *"0123456789", "user", "assistant", ":", "+", "What", "is", "?"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(True)])
    core.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ModelSpec(str(folder), "test/tiny-llama", "tiny0")


def state_dicts_equal(a_path, b_path):
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(a_path).state_dict()
    b = AutoModelForCausalLM.from_pretrained(b_path).state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_checkpoint_gets_a_content_revision(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_model(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(base.path)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    first = save_checkpoint(model, tokenizer, tmp_path / "run" / "stage_1", base, {"phase": 1})
    again = save_checkpoint(model, tokenizer, tmp_path / "run" / "stage_1", base, {"phase": 1})
    assert first.revision == again.revision  # same weights, same revision
    marker = json.loads((tmp_path / "run" / "stage_1" / "gradus_model.json").read_text())
    assert marker["base_model"]["revision"] == "tiny0" and marker["phase"] == 1
    assert resolve_model(first.path) == first
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    moved = save_checkpoint(model, tokenizer, tmp_path / "run" / "stage_2", base, {"phase": 2})
    assert moved.revision != first.revision
    assert not list((tmp_path / "run").glob(".*"))  # no staging folders left behind


@pytest.mark.parametrize("sampler", ["target_difficulty", "ucb"])
def test_adaptive_samplers_train_through_trl(home, tmp_path, verifier_pool, sampler):
    base = tiny_model(tmp_path / "tiny")
    problems, labels = problems_and_labels([(7, 8), (6, 8), (3, 8), (2, 8), (1, 8), (1, 8)])
    build_curriculum(problems, labels, CurriculumSpec("digits"), home, LABELLED_AT)
    spec = TrainingSpec("digits", sampler=SamplerSpec(sampler), schedule=StageSchedule("fixed", steps_per_stage=2),
                        prompts_per_step=2, num_generations=4, learning_rate=1e-2)

    run = train_curriculum(spec, base, verifier_pool, StorageLayout(str(home)))

    assert run.generation == "transformers"
    # nothing set in the spec: the run samples as the labels were sampled
    assert run.settings == GenerationSettings(temperature=1.0, top_p=0.95, max_completion_length=4,
                                              extraction_policy="last_number")
    assert [s.phase for s in run.stages] == [1, 2, 3] and all(s.stage is None for s in run.stages)
    assert run.log["step"].tolist() == list(range(1, 7)) and run.log["phase"].tolist() == [1, 1, 2, 2, 3, 3]
    assert run.log["samples_seen"].iloc[-1] == 6 * 8
    assert run.log[["loss", "entropy", "frac_reward_zero_std", "step_s", "wall_s"]].notna().all().all()
    if sampler == "target_difficulty":
        assert run.log["target_pass_rate"].iloc[0] == pytest.approx(7 / 8)
    # GRPO only learns from groups whose completions disagree: weights move exactly when one did
    learned = (run.log["frac_reward_zero_std"] < 1).any()
    assert state_dicts_equal(base.path, run.stages[-1].checkpoint.path) != learned
    folder = home / "checkpoints" / f"digits-{sampler}"
    assert sorted(p.name for p in folder.iterdir()) == [
        "reward_per_stage.png", "run.json", "stage_1", "stage_2", "stage_3", "training_log.parquet"]
    assert pq.read_table(folder / "training_log.parquet").num_rows == 6
    assert run.plot_png.startswith(b"\x89PNG")


def test_threshold_schedule_through_trl_stops_at_the_cap_without_reward(home, tmp_path, verifier_pool):
    base = tiny_model(tmp_path / "tiny")
    # gold answers the digit-only model can never write: every reward is 0
    problems, labels = problems_and_labels([(6, 8), (2, 8)], answers=["x", "y"])
    build_curriculum(problems, labels, CurriculumSpec("words"), home)  # a manifest without sampling
    schedule = StageSchedule("threshold", threshold=0.5, window=1, max_steps_per_stage=2)
    spec = TrainingSpec("words", run_name="words-run", schedule=schedule, prompts_per_step=1, num_generations=2,
                        temperature=1.0, top_p=1.0, max_completion_length=2, extraction_policy="auto")

    run = train_curriculum(spec, base, verifier_pool, StorageLayout(str(home)))

    assert run.settings == GenerationSettings(1.0, 1.0, 2, "auto")
    assert [(s.stage, s.steps, s.mean_reward) for s in run.stages] == [(1, 2, 0.0), (3, 2, 0.0)]
    assert (run.log["frac_reward_zero_std"] == 1).all()
    # no group ever disagreed, so no step moved the weights and both stages save the same revision
    assert run.stages[0].checkpoint.revision == run.stages[1].checkpoint.revision
    assert state_dicts_equal(base.path, run.stages[1].checkpoint.path)


def test_a_checkpoint_whose_weights_are_replaced_in_place_gets_a_new_revision(tmp_path):
    """The marker save_checkpoint writes names the model; it cannot vouch for weights written after it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_model(tmp_path / "base")
    other = tiny_model(tmp_path / "other", seed=1)
    saved = save_checkpoint(AutoModelForCausalLM.from_pretrained(base.path), AutoTokenizer.from_pretrained(base.path),
                            tmp_path / "run" / "stage_1", base, {"phase": 1})
    shutil.copy(Path(other.path) / "model.safetensors", Path(saved.path) / "model.safetensors")
    replaced = resolve_model(saved.path)
    assert replaced.model_id == base.model_id and replaced.revision != saved.revision
    assert replaced.revision == folder_revision(Path(saved.path))

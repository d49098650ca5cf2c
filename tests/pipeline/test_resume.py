"""Crash safety: SIGKILL a real sampling run at several points, resume it, and get exactly what an
uninterrupted run gets, with no torn file and at most one batch of work lost per kill.

The runs use the transformers engine on the tiny random Llama (`tiny_llama`), so a batch takes a
fraction of a second. A driver (this file run as a script) imports torch once and forks every run
from that state: forking is safe there because the driver never runs torch itself (forking pytest,
which may have, is not), and each run starts in about a second instead of paying the imports again.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
PROBLEMS, SAMPLES, BATCH = 6, 4, 2
KILL_AFTER_PARTS = (2, 5, 8)
"""Kill points, as parts on disk; an uninterrupted run writes PROBLEMS * SAMPLES / BATCH = 12."""
MAX_TOKENS = 16
KEYS = ["problem_id", "sample_index"]


def problems() -> pd.DataFrame:
    ids = [f"p{i}" for i in range(PROBLEMS)]
    prompts = [[{"role": "user", "content": f"What is {i} + {2 * i + 1}?"}] for i in range(PROBLEMS)]
    return pd.DataFrame({"problem_id": ids, "prompt": prompts})


def store_for(home: Path, model_path: str):
    from pipeline.core.model import ModelSpec
    from pipeline.engines.base import SamplingConfig
    from pipeline.rollouts.store import RolloutStore

    return RolloutStore(home, ModelSpec(model_path, "test/tiny-llama", "r1"), SamplingConfig(max_tokens=MAX_TOKENS),
                        engine="transformers")


def sample(model_path: str, home: Path, log: Path) -> None:
    """One sampling run (a forked child): logs each batch as it starts, and the report at the end."""
    from pipeline.difficulty.strata import Strata
    from pipeline.engines.options import TransformersOptions
    from pipeline.engines.transformers_engine import TransformersEngine
    from pipeline.rollouts.allocation import AllocationConfig
    from pipeline.rollouts.sampling import sample_rollouts

    store = store_for(home, model_path)
    engine = TransformersEngine(store.model, TransformersOptions(batch_size=BATCH, threads=1, device="cpu"))
    generate_batch = engine._generate_batch

    def logged(requests, sampling):
        with open(log, "a") as fh:
            fh.write(json.dumps({"batch": [[r.problem_id, r.sample_index] for r in requests]}) + "\n")
        return generate_batch(requests, sampling)

    engine._generate_batch = logged
    uniform = AllocationConfig("uniform", samples_per_problem=SAMPLES)
    report = sample_rollouts(problems(), store, lambda: engine, uniform, Strata())
    with open(log, "a") as fh:
        fh.write(json.dumps({"generated": report.generated}) + "\n")


def drive(workdir: Path, model: str) -> list[dict]:
    """The reference run, then the killed runs and the final resume; what each did."""
    import multiprocessing

    import transformers.models.llama.modeling_llama  # noqa: F401  (imported once, before forking)

    fork = multiprocessing.get_context("fork")
    plan = [("reference", None)] + [("resumed", k) for k in KILL_AFTER_PARTS] + [("resumed", None)]
    phases = []
    for i, (name, kill_after) in enumerate(plan):
        home, log = workdir / name, workdir / f"phase-{i}.jsonl"
        store = store_for(home, model)
        before = [p.name for p in store.parts()]
        child = fork.Process(target=sample, args=(model, home, log))
        child.start()
        killed = False
        if kill_after is not None:
            while child.is_alive() and len(store.parts()) < kill_after:
                time.sleep(0.002)
            killed = child.is_alive()
            if killed:
                child.kill()
        child.join()
        events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        phases.append({
            "home": str(home), "kill_after": kill_after, "killed": killed,
            "exitcode": child.exitcode, "before": before, "after": [p.name for p in store.parts()],
            "started": [e["batch"] for e in events if "batch" in e],
            "generated": next((e["generated"] for e in events if "generated" in e), None),
        })
    return phases


def part_keys(root: Path, names: list[str]) -> list[list[list]]:
    """The (problem_id, sample_index) keys of each part, in write order."""
    return [pq.read_table(root / n, columns=KEYS).to_pandas().values.tolist() for n in names]


def test_killed_runs_resume_to_exactly_the_uninterrupted_rollouts(tiny_llama, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, __file__, str(tmp_path), tiny_llama.path], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    reference, *killed, final = json.loads(out.stdout.splitlines()[-1])

    total = PROBLEMS * SAMPLES
    ref_store = store_for(Path(reference["home"]), tiny_llama.path)
    assert reference["exitcode"] == 0 and reference["generated"] == total
    ref_parts = part_keys(ref_store.root, reference["after"])
    assert len(ref_parts) == total // BATCH
    ref_order = [key for part in ref_parts for key in part]
    assert ref_order == [[f"p{i}", j] for i in range(PROBLEMS) for j in range(SAMPLES)]

    store = store_for(Path(final["home"]), tiny_llama.path)
    for phase in killed:
        assert phase["killed"] and phase["exitcode"] == -9, phase
        new = phase["after"][len(phase["before"]):]
        assert phase["after"][: len(phase["before"])] == phase["before"]
        assert len(phase["after"]) >= phase["kill_after"]
        # Work lost to the kill: batches the run started that never reached the disk.
        assert len(phase["started"]) - len(new) in (0, 1), phase
        # What the killed run kept is exactly the next stretch of the uninterrupted run, batch for batch.
        offset = len(phase["before"])
        assert part_keys(store.root, new) == ref_parts[offset : offset + len(new)]
        assert phase["started"][: len(new)] == ref_parts[offset : offset + len(new)]

    committed = len(final["before"]) * BATCH
    assert 0 < committed < total
    assert final["exitcode"] == 0 and final["generated"] == total - committed
    assert part_keys(store.root, final["after"]) == ref_parts

    # Every part on disk is whole (a kill mid-write leaves at most an ignored temporary file).
    for part in store.root.glob("part-*.parquet"):
        pq.read_table(part)
    assert sum(pq.read_metadata(p).num_rows for p in store.parts()) == total

    resumed = store.load(problems()["problem_id"], SAMPLES).drop(columns="created_at")
    expected = ref_store.load(problems()["problem_id"], SAMPLES).drop(columns="created_at")
    assert len(expected) == total and expected["text"].str.len().gt(0).any()
    pd.testing.assert_frame_equal(resumed, expected)


if __name__ == "__main__":
    print(json.dumps(drive(Path(sys.argv[1]), sys.argv[2])))

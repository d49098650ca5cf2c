"""Crash safety of scoring: SIGKILL a real `score_dataset` run partway (real verifier workers,
rollouts stored as Parquet parts the way an engine's batches are), resume it, and get exactly the
uninterrupted run's rewards, re-scoring only what the killed runs had not written; a run with
other inputs reuses nothing.

Like `test_resume.py`, a driver (this file run as a script) imports the pipeline once and forks
every run from that state; it never starts a verifier pool itself, so each run starts its own.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
PROBLEMS, SAMPLES, BATCH = 24, 4, 8
PARTS = PROBLEMS * SAMPLES // BATCH
ENGINE_BATCH = 16
"""Rollouts per stored part, as an engine writes them; a scoring batch never spans two parts."""


def problems(variant: str):
    """Golds that only the workers can check (fractions); "changed" gives p0 another gold."""
    golds = [f"\\frac{{{i + 1}}}{{{i + 2}}}" for i in range(PROBLEMS)]
    if variant == "changed":
        golds[0] = "\\frac{2}{3}"
    return pa.table({"problem_id": [f"p{i}" for i in range(PROBLEMS)], "answer": golds,
                     "verifier": ["math"] * PROBLEMS, "metadata": ["{}"] * PROBLEMS})


def text(i: int, j: int) -> str:
    """Each rollout's answer differs from every other (no memo hit), some wrong, some missing."""
    k = j + 1
    if (i + j) % 7 == 3:
        return "I cannot tell."
    if (i + j) % 3 == 0:
        return f"So the answer is \\boxed{{\\frac{{{k}}}{{{k * (i + 3)}}}}}."
    return f"So the answer is \\boxed{{\\frac{{{k * (i + 1)}}}{{{k * (i + 2)}}}}}."


def home_of(workdir: Path, name: str) -> Path:
    """A home with the rollouts in its store and the selection `rewards` reads, written once."""
    from pipeline.core.model import ModelSpec
    from pipeline.core.storage import write_parquet_checksummed
    from pipeline.engines.base import Completion, GenerationRequest, SamplingConfig
    from pipeline.rollouts.store import RolloutStore

    home = workdir / name
    selection = home / "selection.parquet"
    if not selection.exists():
        store = RolloutStore(home, ModelSpec("/m", "org/m", "r"), SamplingConfig(), engine="test")
        keys = [(f"p{i}", j) for i in range(PROBLEMS) for j in range(SAMPLES)]
        for start in range(0, len(keys), ENGINE_BATCH):
            chunk = keys[start : start + ENGINE_BATCH]
            store.append([GenerationRequest.of(p, j, []) for p, j in chunk],
                         [Completion(text(int(p[1:]), j), 8, "stop") for p, j in chunk])
        write_parquet_checksummed(pa.table({"problem_id": [f"p{i}" for i in range(PROBLEMS)],
                                            "trials": [SAMPLES] * PROBLEMS}), selection)
    return home


def handle(home: Path):
    from pipeline.rollouts.handles import DatasetHandle

    store = next((home / "rollouts").glob("*/*"))
    return DatasetHandle("rollouts", str(store), PROBLEMS * SAMPLES, "org-m@r/key", str(home / "selection.parquet"))


def score(home: Path, variant: str, out: Path) -> None:
    """One scoring run (a forked child), with its own verifier workers; the summary at the end."""
    from pipeline.verify.scoring import score_dataset
    from pipeline.verify.verification import VerifierPool

    with VerifierPool(workers=2, timeout_s=30) as pool:
        rewards, summary = score_dataset(problems(variant), handle(home), pool, home / "rewards", batch_rows=BATCH,
                                         show_failures=PROBLEMS * SAMPLES, home=home)
    failed = pd.concat(summary.failed)
    out.write_text(json.dumps({"rows": summary.rows, "passed": summary.passed, "resumed": summary.resumed,
                               "statuses": dict(summary.statuses), "mean_reward": summary.mean_reward,
                               "failed": failed[["problem_id", "sample_index"]].values.tolist(),
                               "parts": len(rewards.parts())}))


def staged(home: Path) -> dict[str, list[int]]:
    """Parts staged or published: name -> (inode, mtime), which a rewrite changes and publishing
    (a rename of the folder) keeps."""
    return {p.name: [p.stat().st_ino, p.stat().st_mtime_ns]
            for p in sorted([*home.glob(".rewards.resume-*/part-*.parquet"), *home.glob("rewards/part-*.parquet")])}


def drive(workdir: Path) -> dict:
    import multiprocessing

    import pipeline.verify.scoring  # noqa: F401  (imported once, before forking)

    fork = multiprocessing.get_context("fork")
    phases = {}

    def run(phase: str, name: str, variant: str, kill_after: int | None = None) -> None:
        home = home_of(workdir, name)
        out = workdir / f"{phase}.json"
        before = staged(home)
        child = fork.Process(target=score, args=(home, variant, out))
        child.start()
        killed = False
        if kill_after is not None:
            while child.is_alive() and len(staged(home)) < kill_after:
                time.sleep(0.002)
            killed = child.is_alive()
            if killed:
                child.kill()
        child.join()
        phases[phase] = {"home": str(home), "killed": killed, "exitcode": child.exitcode, "before": before,
                         "after": staged(home), "staging": [p.name for p in home.glob(".rewards.resume-*")],
                         "summary": json.loads(out.read_text()) if out.exists() else None}

    run("reference", "reference", "base")
    run("reference_changed", "reference_changed", "changed")
    run("killed_early", "resumed", "base", kill_after=3)
    run("killed_late", "resumed", "base", kill_after=7)
    # A part damaged since it was written, and a write the kill tore: both are redone.
    damaged = sorted((workdir / "resumed").glob(".rewards.resume-*/part-*.parquet"))[1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (damaged.parent / ".part-000099.parquet.x.tmp").write_bytes(b"torn")
    phases["damaged"] = damaged.name
    run("final", "resumed", "base")
    run("killed_other", "other", "base", kill_after=5)
    run("changed", "other", "changed")
    return phases


def rewards_frame(home: str) -> pd.DataFrame:
    return pd.concat([pq.read_table(p).to_pandas() for p in sorted((Path(home) / "rewards").glob("part-*.parquet"))],
                     ignore_index=True)


def test_a_killed_scoring_resumes_to_exactly_the_uninterrupted_rewards(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, __file__, str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    phases = json.loads(out.stdout.splitlines()[-1])
    reference, final = phases["reference"], phases["final"]
    assert reference["exitcode"] == 0 and reference["summary"]["resumed"] == 0
    assert reference["summary"]["parts"] == PARTS and reference["summary"]["rows"] == PROBLEMS * SAMPLES
    statuses = reference["summary"]["statuses"]
    assert statuses["no_answer"] > 0 and 0 < reference["summary"]["passed"] < PROBLEMS * SAMPLES

    early, late = phases["killed_early"], phases["killed_late"]
    for phase in (early, late):
        assert phase["killed"] and phase["exitcode"] == -9 and phase["summary"] is None, phase
        # Parts kept from before were reused as they were, never written again.
        assert {k: phase["after"][k] for k in phase["before"]} == phase["before"]
    assert 3 <= len(early["after"]) < PARTS and len(late["before"]) < len(late["after"]) < PARTS

    # The final run keeps every whole part but the damaged one, and scores only what is missing.
    kept = len(final["before"]) - 1
    assert final["exitcode"] == 0
    assert final["summary"]["resumed"] == kept * BATCH and 0 < kept < PARTS - 1
    assert final["after"].keys() == {f"part-{n:06d}.parquet" for n in range(PARTS)}
    for name, stamp in final["before"].items():
        assert (final["after"][name] == stamp) == (name != phases["damaged"]), name
    assert final["staging"] == []  # published whole
    assert {k: v for k, v in final["summary"].items() if k != "resumed"} == \
        {k: v for k, v in reference["summary"].items() if k != "resumed"}
    for ours, theirs in zip(sorted((Path(final["home"]) / "rewards").glob("part-*.parquet")),
                            sorted((Path(reference["home"]) / "rewards").glob("part-*.parquet")), strict=True):
        assert pq.read_table(ours).equals(pq.read_table(theirs)), ours.name
    assert not list((Path(final["home"]) / "rewards").glob(".*"))

    # Other inputs (one problem's gold changed) start afresh: the stale parts are not reused.
    stale, changed = phases["killed_other"], phases["changed"]
    assert stale["killed"] and len(stale["after"]) >= 5
    assert changed["exitcode"] == 0 and changed["summary"]["resumed"] == 0 and changed["staging"] == []
    assert not set(map(tuple, changed["after"].values())) & set(map(tuple, stale["after"].values()))
    assert changed["summary"] == phases["reference_changed"]["summary"]
    pd.testing.assert_frame_equal(rewards_frame(changed["home"]), rewards_frame(phases["reference_changed"]["home"]))
    assert not rewards_frame(changed["home"]).equals(rewards_frame(reference["home"]))


if __name__ == "__main__":
    print(json.dumps(drive(Path(sys.argv[1]))))

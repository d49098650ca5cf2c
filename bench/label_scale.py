"""The labelling data path at scale: rollout store -> rewards -> pass_rates -> curriculum, through
the real Dagster assets, for 100k, 1M and 3M problems x 16 rollouts (10k as an option).

    nice -n 10 .venv/bin/python bench/label_scale.py [--sizes 10000 100000 1000000 3000000]

This measures the data path, not the engine: the bench writes the completions straight into the
rollout store (short SmolLM2-like completions, a few sentences ending in a final answer; per
problem a pass rate drawn from a U-shaped Beta, wrong answers clustering on a few values near the
gold, 5% with no answer), as Parquet parts of 4,096 rows like an engine's batches. It then
runs the job Dagster runs from the UI, a schedule or a sensor: `rollouts` (fully cached: no engine
starts; its sampling step compacts the parts), `rewards`, `pass_rates` and `curriculum` with the
project's IO manager and resources, through Dagster's default multiprocess executor (each step in
its own spawned process, the bench's process as the run's orchestrator), in a temporary
DAGSTER_HOME. (`python -m assets.main` runs `label_job` in one process instead; what one step leaves in the
allocator then counts in the next, so its peak is higher: see the README's "Scaling out".)

Each size is synthesised in one fresh child process and measured in another, so the measured peak
is the data path's alone (the synthesised tables never count in it). Peak RSS is sampled every
0.2 s as the sum over the orchestrator, the step processes and their descendants (the verifier
fork server and workers), which counts pages they share more than once: an upper bound. Also
given: the same sum of PSS (shared pages split between sharers). Verifications/s per core =
rollouts / seconds of the `rewards` step / cores available.

Goal (issue 24): 1M x 16 in <= 2 GB peak RSS, and peak RSS growing <= 1.5x from 100k to 1M and
again from 1M to 3M. A step's peak is the tree's peak while it ran (the orchestrator included).
Prints a table, then one JSON object of the figures on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SIZES = (100_000, 1_000_000, 3_000_000)
SAMPLES = 16
PART_ROWS = 4096
GOAL_RSS_MB = 2048.0
GOAL_GROWTH = 1.5
SOURCE_DATASETS = {"reasoning_gym/chain_sum": "chain_sum", "reasoning_gym/basic_arithmetic": "basic_arithmetic"}
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


# -- memory ---------------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            out.extend(int(c) for c in text.split())
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; zeros if it is gone."""
    try:
        rss = pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
        return rss, pss
    except OSError:
        return 0, 0


class TreeMemory:
    """Samples the memory of this process and its descendants in a thread; keeps the peaks."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s = every_s
        self.peak_rss_kb = self.peak_pss_kb = self.peak_self_kb = 0
        self.samples: list[tuple[float, int]] = []  # (unix time, tree RSS in KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        reported = time.time()
        while not self._stop.is_set():
            totals = [_memory_kb(p) for p in _tree(me)]
            self.samples.append((time.time(), sum(r for r, _ in totals)))
            self.peak_rss_kb = max(self.peak_rss_kb, self.samples[-1][1])
            self.peak_pss_kb = max(self.peak_pss_kb, sum(p for _, p in totals))
            self.peak_self_kb = max(self.peak_self_kb, totals[0][0])
            if time.time() - reported >= 60:  # a run cut short still tells its peak so far
                reported = time.time()
                print(f"memory: tree RSS {self.samples[-1][1] / 1024:.0f} MB now, peak {self.peak_rss_kb / 1024:.0f} MB "
                      f"(PSS peak {self.peak_pss_kb / 1024:.0f} MB, main process {self.peak_self_kb / 1024:.0f} MB)",
                      file=sys.stderr, flush=True)
            self._stop.wait(self.every_s)


# -- data -----------------------------------------------------------------------------------------

def problems_table(n: int) -> pa.Table:
    """`n` problems in the `Problem` schema (bench/scale.py's synthesiser), with the metadata a
    reasoning-gym scorer needs."""
    from scale import synthesise

    problems, _ = synthesise(n)
    name = pc.replace_substring(problems.column("source"), "reasoning_gym/", "")
    meta = pc.binary_join_element_wise('{"source_dataset": "', name, '", "level": ',
                                       pc.struct_field(pc.extract_regex(problems.column("metadata").combine_chunks(), r"(?P<l>\d+)"), "l"),
                                       "}", "")
    is_rg = pc.equal(problems.column("verifier"), "reasoning_gym")
    meta = pc.if_else(is_rg, meta, problems.column("metadata"))
    return problems.set_column(problems.schema.get_field_index("metadata"), "metadata", meta)


_LEADS = [
    "Let's solve this step by step. First we look at the numbers given in the problem.",
    "To find the answer, we add and subtract the terms from left to right.",
    "We need to compute the result carefully, one operation at a time.",
    "First, I will write down each term and then combine them.",
]
_ENDS = [("The answer is ", "."), ("So the final answer is ", "."), ("Therefore, the result is ", "."),
         ("\\boxed{", "}"), ("Answer: ", "")]


def write_completions(store, problems: pa.Table, seed: int = 1) -> int:
    """16 completions per problem straight into the store, vectorised per part; returns parts."""
    from pipeline.core.records import Rollout
    from pipeline.core.storage import write_parquet_checksummed

    rng = np.random.default_rng(seed)
    n = problems.num_rows
    gold = np.asarray(pc.cast(problems.column("answer"), pa.int64()))
    pass_rate = rng.beta(0.6, 0.6, n)
    ids = problems.column("problem_id")
    per_part = PART_ROWS // SAMPLES
    leads = pa.array(_LEADS)
    prefixes = pa.array([p for p, _ in _ENDS])
    suffixes = pa.array([s for _, s in _ENDS])
    parts = 0
    for start in range(0, n, per_part):
        rows = np.arange(start, min(start + per_part, n))
        pos = np.repeat(rows, SAMPLES)
        m = len(pos)
        correct = rng.random(m) < pass_rate[pos]
        # A small model's wrong answers cluster: off by a little, or a few favourite slips.
        slip = rng.choice(np.array([-10, -2, -1, 1, 2, 10]), m, p=[0.1, 0.2, 0.25, 0.25, 0.1, 0.1])
        answer = np.where(correct, gold[pos], gold[pos] + slip)
        answer_text = pc.cast(pa.array(answer), pa.string())
        end = rng.integers(0, len(_ENDS), m)
        body = pc.binary_join_element_wise(
            leads.take(pa.array(rng.integers(0, len(_LEADS), m))),
            pc.binary_join_element_wise("Adding the terms gives", answer_text, " ", ""),
            prefixes.take(pa.array(end)), " ")
        text = pc.binary_join_element_wise(body, answer_text, suffixes.take(pa.array(end)), "")
        unsure = rng.random(m) < 0.05
        text = pc.if_else(pa.array(unsure), "I am not sure how to solve this problem.", text)
        table = pa.table({
            "problem_id": ids.take(pa.array(pos)),
            "sample_index": pa.array(np.tile(np.arange(SAMPLES, dtype=np.int32), len(rows))),
            "text": text,
            "num_tokens": pa.array(rng.integers(30, 96, m).astype(np.int32)),
            "finish_reason": pa.array(np.where(rng.random(m) < 0.03, "length", "stop")),
            "model_id": pa.array(np.full(m, store.model.model_id)),
            "revision": pa.array(np.full(m, store.model.revision)),
            "sampling_key": pa.array(np.full(m, store.sampling.key)),
            "engine": pa.array(np.full(m, "bench")),
            "created_at": pa.array(np.full(m, "2026-01-01T00:00:00+00:00")),
        }, schema=Rollout.SCHEMA)
        write_parquet_checksummed(table, store.root / f"part-{time.time_ns():020d}-bench{parts:06d}.parquet")
        parts += 1
    return parts


# -- one size -------------------------------------------------------------------------------------

def _target(tmp: Path):
    from assets.resources import TargetModel

    model_dir = tmp / "model"  # the engine never starts: a config is all the label key needs
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    return TargetModel(model_path=str(model_dir), model_id=MODEL_ID, revision="bench")


def synthesise_home(n: int, tmp: Path) -> dict:
    """The problems and 16 completions each, written under `tmp/home` (its own process, so the
    bench's synthesis never counts in the measured peak)."""
    from pipeline.core.storage import StorageLayout, write_parquet_checksummed
    from pipeline.rollouts.store import RolloutStore

    home = tmp / "home"
    target = _target(tmp)
    layout = StorageLayout(str(home))
    started = time.perf_counter()
    problems = problems_table(n)
    for name in ("problems", "unique_problems"):
        write_parquet_checksummed(problems, layout.asset([name]))
    write_parquet_checksummed(pa.table({"problem_id": pa.array([], pa.string())}), layout.asset(["contamination"]))
    store = RolloutStore(home, target.spec(home), target.sampling(), engine="bench")
    parts = write_completions(store, problems)
    synth_s = time.perf_counter() - started
    print(f"{n} problems: wrote {n * SAMPLES} completions in {parts} parts in {synth_s:.1f}s "
          "(written by the bench: this measures the data path, not the engine)", file=sys.stderr, flush=True)
    return {"synth_s": round(synth_s, 1), "bench_parts": parts}


SELECTION = ["rollouts", "rollout_allocation", "rewards", "pass_rates", "curriculum"]
BENCH_DIR = "GRADUS_LABEL_SCALE_DIR"
"""The environment variable that tells `label_scale_job`, rebuilt in each step process, its home."""


def label_scale_job():
    """The labelling steps on the bench's home (module level: the multiprocess executor rebuilds
    the job from it in every step process)."""
    from dagster import Definitions, define_asset_job

    from assets.deployment import resources
    from assets.jobs import all_assets, probe_assets

    tmp = Path(os.environ[BENCH_DIR])
    defs = Definitions(assets=all_assets + probe_assets,
                       resources=resources({"GRADUS_HOME": str(tmp / "home")}, target_model=_target(tmp)),
                       jobs=[define_asset_job("label_scale_job", selection=SELECTION)])
    return defs.resolve_job_def("label_scale_job")


def measure(n: int, tmp: Path) -> dict:
    """One size on the home `synthesise_home` wrote, this process being the run's orchestrator
    (run it in a fresh one)."""
    from dagster import DagsterEventType, DagsterInstance, execute_job, reconstructable

    from pipeline.verify.verification import available_cores

    os.environ[BENCH_DIR] = str(tmp)
    dagster_home = tmp / "dagster"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    run_config = {"ops": {"rollouts": {"config": {"samples_per_problem": SAMPLES}},
                          "curriculum": {"config": {"name": "scale"}}}}
    with TreeMemory() as memory:
        with DagsterInstance.from_config(str(dagster_home)) as instance:
            started = time.perf_counter()
            with execute_job(reconstructable(label_scale_job), instance=instance, run_config=run_config) as result:
                wall_s = time.perf_counter() - started
                assert result.success
                rewards_meta = {k: v.value for k, v in
                                next(m for m in result.asset_materializations_for_node("rewards")).metadata.items()}
            steps: dict[str, dict[str, float]] = {}
            for entry in instance.all_logs(result.run_id):
                event = entry.dagster_event
                if event is None or not entry.step_key:
                    continue
                if event.event_type == DagsterEventType.STEP_START:
                    steps.setdefault(entry.step_key, {})["start"] = entry.timestamp
                elif event.event_type == DagsterEventType.STEP_SUCCESS:
                    steps.setdefault(entry.step_key, {})["end"] = entry.timestamp
            done = {k: v for k, v in steps.items() if {"start", "end"} <= v.keys()}
            step_s = {k: round(v["end"] - v["start"], 2) for k, v in done.items()}
            step_rss = {k: round(max((kb for t, kb in memory.samples if v["start"] <= t <= v["end"]), default=0)
                                 / 1024, 1) for k, v in done.items()}
        rows = int(rewards_meta["rows"])
        cores = available_cores()
        rewards_s = step_s["rewards"]
    return {
        "problems": n,
        "rows": rows,
        "wall_s": round(wall_s, 1),
        "step_s": step_s,
        "step_peak_rss_mb": step_rss,
        "peak_rss_mb": round(memory.peak_rss_kb / 1024, 1),
        "peak_pss_mb": round(memory.peak_pss_kb / 1024, 1),
        "peak_main_rss_mb": round(memory.peak_self_kb / 1024, 1),
        "verifications_per_s_per_core": round(rows / rewards_s / cores, 1),
        "cores": cores,
        "fast_path": int(rewards_meta["fast_path"]),
        "memo_hits": int(rewards_meta["memo_hits"]),
        "worker_checks": int(rewards_meta["worker_checks"]),
        "memo_hit_rate": round(int(rewards_meta["memo_hits"]) / rows, 3),
        "fast_path_rate": round(int(rewards_meta["fast_path"]) / rows, 3),
        "passed": int(rewards_meta["passed"]),
    }


def run_child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed (exit {out.returncode}); its log is above")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(n: int) -> dict:
    """Synthesise in one fresh process, measure in another."""
    with tempfile.TemporaryDirectory(prefix="gradus-label-scale-") as tmp:
        made = run_child("--synthesise", str(n), "--dir", tmp)
        return {**run_child("--problems", str(n), "--dir", tmp), **made}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--synthesise", type=int, help="write one size's home into --dir (used by the parent)")
    parser.add_argument("--problems", type=int, help="measure one size in --dir in this process (used by the parent)")
    parser.add_argument("--dir", type=Path, help="the folder of one size's home")
    args = parser.parse_args()
    if args.synthesise:
        print(json.dumps(synthesise_home(args.synthesise, args.dir)))
        return
    if args.problems:
        print(json.dumps(measure(args.problems, args.dir)))
        return

    print("data path only: completions are written into the rollout store by this bench, no engine runs")
    results = []
    for n in args.sizes:
        results.append(run_size(n))
        print(json.dumps(results[-1]), flush=True)
    print(f"{'problems':>10}{'rollouts':>11}{'wall s':>8}{'rewards s':>10}{'peak MB':>9}{'PSS MB':>8}"
          f"{'verif/s/core':>13}{'fast':>7}{'memo':>7}")
    for r in results:
        print(f"{r['problems']:>10}{r['rows']:>11}{r['wall_s']:>8.0f}{r['step_s']['rewards']:>10.0f}"
              f"{r['peak_rss_mb']:>9.0f}{r['peak_pss_mb']:>8.0f}{r['verifications_per_s_per_core']:>13.0f}"
              f"{r['fast_path_rate']:>7.2f}{r['memo_hit_rate']:>7.2f}")
    by_size = {r["problems"]: r for r in results}
    def growth(small: int, large: int) -> float | None:
        return (round(by_size[large]["peak_rss_mb"] / by_size[small]["peak_rss_mb"], 2)
                if {small, large} <= by_size.keys() else None)

    growths = {"rss_growth_100k_to_1m": growth(100_000, 1_000_000), "rss_growth_1m_to_3m": growth(1_000_000, 3_000_000)}
    peak_1m = by_size[1_000_000]["peak_rss_mb"] if 1_000_000 in by_size else None
    largest = results[-1]
    figures = {
        "rows": largest["rows"],
        "peak_rss_mb": largest["peak_rss_mb"],
        "peak_pss_mb": largest["peak_pss_mb"],
        **growths,
        "peak_rss_mb_1m": peak_1m,
        "wall_s": largest["wall_s"],
        "step_peak_rss_mb": largest["step_peak_rss_mb"],
        "verifications_per_s_per_core": largest["verifications_per_s_per_core"],
        "memo_hit_rate": largest["memo_hit_rate"],
        "meets_goal": (peak_1m is None or peak_1m <= GOAL_RSS_MB)
        and all(g is None or g <= GOAL_GROWTH for g in growths.values()),
        "goal": {"peak_rss_mb_1m": GOAL_RSS_MB, "rss_growth_per_step": GOAL_GROWTH},
        "load_avg_1m": os.getloadavg()[0],
        "sizes": {str(r["problems"]): r for r in results},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""The main job from the command line: materialize the whole graph on the embedded default.

    .venv/bin/python -m assets.main            # or: .venv/bin/gradus

Runs are recorded in a persistent Dagster instance under `$GRADUS_HOME/dagster/` (unless
`DAGSTER_HOME` is set), so they show up in `dagster dev` afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.core.storage import StorageLayout
from pipeline.curriculum.build import MANIFEST, CurriculumSpec

INSTANCE_SETTINGS = """\
telemetry:
  enabled: false
# Runs whose worker dies before it starts (or, with launchers that report worker health, at any
# time) are marked failed rather than left in progress; the relabel schedule also checks the
# processes of local runs itself.
run_monitoring:
  enabled: true
  start_timeout_seconds: 300
  poll_interval_seconds: 60
"""
"""The instance settings of `$GRADUS_HOME/dagster/dagster.yaml`, also fit for
`DAGSTER_HOME=$GRADUS_HOME/dagster dagster dev`."""


QUIET_LOGGERS = {"console": {"config": {"log_level": "INFO"}}}
"""The console logger of a run without `--verbose`: the steps' own progress lines and warnings."""


def _instance(layout: StorageLayout):
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        dagster_home = layout.dagster
        dagster_home.mkdir(parents=True, exist_ok=True)
        settings = dagster_home / "dagster.yaml"
        if not settings.exists():
            settings.write_text(INSTANCE_SETTINGS)
        os.environ["DAGSTER_HOME"] = str(dagster_home)
    return DagsterInstance.get()


def summary(manifest: dict, by_category: dict[str, tuple[float, int]] | None = None) -> str:
    """A short text summary of a curriculum manifest and the mean pass rate per category."""
    lines = [f"model {manifest['model']['id']} @ {manifest['model']['revision']}  ({manifest['label_key']})"]
    for s in manifest["stages"]:
        lo, hi = s["pass_rate_bin"]
        mean = "-" if s["mean_pass_rate"] is None else f"{s['mean_pass_rate']:.2f}"
        empty = "" if s.get("file") else "  (empty: no file)"
        lines.append(f"  {s['name']}: {s['rows']:>5} problems, pass rate in ({lo:.2f}, {hi:.2f}], mean {mean}{empty}")
    ex = manifest["excluded"]
    lines.append(f"  excluded: {ex['solved']} always solved, {ex['unsolved']} never solved")
    truncation = manifest.get("truncation") or {}
    if truncation.get("message"):
        lines.append(f"  token cap: {truncation['message']}")
    decontamination = manifest.get("decontamination") or {}
    if decontamination.get("excluded_flagged") and decontamination.get("flagged"):
        lines.append(f"  contaminated: {decontamination['flagged']} left out, flagged against "
                     + ", ".join(sorted(decontamination.get("benchmarks", {}))))
    if by_category:
        lines.append("mean pass rate per category:")
        lines += [f"  {c:<32} {rate:.3f}  ({n} problems)" for c, (rate, n) in sorted(by_category.items())]
    return "\n".join(lines)


def pass_rate_by_category(layout: StorageLayout) -> dict[str, tuple[float, int]]:
    import pandas as pd

    problems = pd.read_parquet(layout.asset(["problems"]), columns=["problem_id", "category"])
    rates = pd.read_parquet(layout.asset(["pass_rates"]), columns=["problem_id", "pass_rate"])
    grouped = rates.merge(problems, on="problem_id").groupby("category")["pass_rate"]
    return {c: (float(v.mean()), len(v)) for c, v in grouped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="Dagster run config (YAML or JSON) for the job")
    parser.add_argument("--verbose", action="store_true",
                        help="print Dagster's DEBUG events and vLLM's INFO lines too (default: progress and results)")
    args = parser.parse_args(argv)

    from dagster import DagsterInstance  # noqa: F401  (import cost before the clock starts)

    from assets.definitions import build_definitions
    from assets.jobs import HOST_TAG, PID_TAG
    from assets.preflight import config_errors

    defs = build_definitions()
    layout = defs.resources["storage"].layout()

    run_config = {}
    if args.config:
        import yaml

        run_config = yaml.safe_load(args.config.read_text()) or {}
    errors = config_errors(run_config, {name: type(resource) for name, resource in defs.resources.items()})
    if errors:
        print("gradus: the run config is invalid; nothing was run:\n" + "\n".join(f"- {e}" for e in errors),
              file=sys.stderr)
        return 2
    if not args.verbose:
        # Dagster's console logger prints every engine event at DEBUG, vLLM its start-up at INFO and
        # WARNING (two dozen lines on a CPU), and transformers and vLLM draw progress bars: pages of
        # lines around the few that say how far the run is. The steps log the model conversion and
        # the engine start-up themselves; the run's event log keeps everything.
        run_config = {**run_config, "loggers": run_config.get("loggers") or QUIET_LOGGERS}
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.perf_counter()
    with _instance(layout) as instance:
        job = defs.resolve_job_def("label_job")
        result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False,
                                        tags={PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()})
    elapsed = time.perf_counter() - started
    if not result.success:
        print(f"gradus: the run failed after {elapsed:.0f} s (run id {result.run_id}); see the log above", file=sys.stderr)
        return 1
    name = (run_config.get("ops", {}).get("curriculum", {}).get("config", {}) or {}).get("name", CurriculumSpec.name)
    manifest_path = layout.curriculum(name) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    print(summary(manifest, pass_rate_by_category(layout)))
    print(f"gradus: done in {elapsed:.0f} s (run id {result.run_id})")
    print(f"gradus: curriculum manifest: {manifest_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

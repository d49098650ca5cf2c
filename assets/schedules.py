"""`nightly_relabel_schedule`: relabel on a cron; the rollout cache makes an unchanged night nearly free."""

import os
import socket
from typing import Optional

import psutil
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from dagster._core.launcher import DefaultRunLauncher

from assets.jobs import HOST_TAG, PID_TAG, TRIGGER_TAG, relabel_job, unattended_run_config

DEFAULT_CRON = "0 2 * * *"
IN_PROGRESS = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
               DagsterRunStatus.STARTED]


def run_process(instance: DagsterInstance, run: DagsterRun) -> Optional[int]:
    """The pid of the process executing `run` on this machine, when it is known: the command line
    tags its runs with its pid and host; runs launched by the default (local) launcher log the pid
    their code server started them in. None where the run may live elsewhere (a pod, a remote
    worker): Dagster's run monitoring covers those."""
    if run.tags.get(PID_TAG):
        return int(run.tags[PID_TAG]) if run.tags.get(HOST_TAG) == socket.gethostname() else None
    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return None
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        pid = record.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def live_runs(instance: DagsterInstance, job_name: str) -> list[DagsterRun]:
    """`job_name`'s queued or running runs, less those whose process is gone (killed, out of
    memory, machine rebooted): Dagster would show those STARTED forever, so they are marked failed
    here instead of blocking every later tick."""
    alive = []
    for run in instance.get_runs(RunsFilter(job_name=job_name, statuses=IN_PROGRESS)):
        pid = run_process(instance, run) if run.status == DagsterRunStatus.STARTED else None
        if pid is not None and not psutil.pid_exists(pid):
            instance.report_run_failed(run, f"gradus: the process of this run (pid {pid}) is gone; marked failed")
            continue
        alive.append(run)
    return alive


def build_relabel_schedule(cron: str = DEFAULT_CRON, timezone: str = "UTC") -> ScheduleDefinition:
    """`nightly_relabel_schedule` on another cron or timezone."""

    @schedule(
        name="nightly_relabel_schedule",
        job=relabel_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        description=f"Relabel on `{cron}` ({timezone}); the cache makes an unchanged night nearly free. "
        "Skips while another relabel_job run is queued or running (a run whose process is gone is marked "
        "failed instead).",
    )
    def _schedule(context: ScheduleEvaluationContext):
        running = live_runs(context.instance, relabel_job.name)
        if running:
            return SkipReason(f"{len(running)} relabel_job run(s) still queued or running: "
                              + ", ".join(r.run_id for r in running))
        return RunRequest(run_config=unattended_run_config(), tags={TRIGGER_TAG: "schedule"})

    return _schedule


def relabel_schedule_from_env() -> ScheduleDefinition:
    """The schedule on `GRADUS_RELABEL_CRON` (default 02:00) in `GRADUS_TIMEZONE` (default UTC)."""
    return build_relabel_schedule(os.environ.get("GRADUS_RELABEL_CRON") or DEFAULT_CRON,
                                  os.environ.get("GRADUS_TIMEZONE") or "UTC")


nightly_relabel_schedule = relabel_schedule_from_env()

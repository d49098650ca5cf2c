"""`nightly_relabel_schedule`: relabel on a cron; the rollout cache makes an unchanged night nearly free."""

import os

from dagster import DagsterRunStatus, RunRequest, RunsFilter, ScheduleDefinition, ScheduleEvaluationContext, SkipReason, schedule

from assets.jobs import TRIGGER_TAG, relabel_job, unattended_run_config

DEFAULT_CRON = "0 2 * * *"
IN_PROGRESS = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
               DagsterRunStatus.STARTED]


def build_relabel_schedule(cron: str = DEFAULT_CRON, timezone: str = "UTC") -> ScheduleDefinition:
    """`nightly_relabel_schedule` on another cron or timezone."""

    @schedule(
        name="nightly_relabel_schedule",
        job=relabel_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        description=f"Relabel on `{cron}` ({timezone}); the cache makes an unchanged night nearly free. "
        "Skips while another relabel_job run is queued or running.",
    )
    def _schedule(context: ScheduleEvaluationContext):
        running = context.instance.get_runs_count(RunsFilter(job_name=relabel_job.name, statuses=IN_PROGRESS))
        if running:
            return SkipReason(f"{running} relabel_job run(s) still queued or running")
        return RunRequest(run_config=unattended_run_config(), tags={TRIGGER_TAG: "schedule"})

    return _schedule


def relabel_schedule_from_env() -> ScheduleDefinition:
    """The schedule on `GRADUS_RELABEL_CRON` (default 02:00) in `GRADUS_TIMEZONE` (default UTC)."""
    return build_relabel_schedule(os.environ.get("GRADUS_RELABEL_CRON") or DEFAULT_CRON,
                                  os.environ.get("GRADUS_TIMEZONE") or "UTC")


nightly_relabel_schedule = relabel_schedule_from_env()

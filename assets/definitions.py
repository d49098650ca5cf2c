"""The gradus code location: `dagster dev` loads this module (see workspace.yaml).

Assets live in one module per group, jobs in `jobs.py`, the schedule and the sensor in
`schedules.py` and `sensors.py`, and the resources come from `resources.resources()`, which reads
the environment (GRADUS_HOME, GRADUS_ENGINE, GRADUS_MODEL_PATH, …) once.
"""

from collections.abc import Mapping

from dagster import Definitions

from assets.deployment import resources
from assets.jobs import all_assets, evaluation_assets, jobs, operations_assets, probe_assets, training_assets
from assets.schedules import nightly_relabel_schedule
from assets.sensors import model_checkpoint_sensor

__all__ = ["all_assets", "build_definitions", "defs", "probe_assets"]


def build_definitions(environ: Mapping[str, str] | None = None) -> Definitions:
    """The code location, its resources configured from `environ` (default: the environment)."""
    return Definitions(
        assets=all_assets + probe_assets + operations_assets + training_assets + evaluation_assets,
        jobs=jobs,
        schedules=[nightly_relabel_schedule],
        sensors=[model_checkpoint_sensor],
        resources=resources(environ),
    )


defs = build_definitions()

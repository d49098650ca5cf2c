"""A whole run's configuration checked before any step works: Dagster checks each step's config
only when that step starts, so a bad curriculum name or strata edges would otherwise surface after
every rollout was generated. Every config class validates its specs when made (`assets.config`);
this makes them all at once."""

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from assets.config import OP_CONFIGS, SpecConfig
from assets.resources import GradusStorage, HubPublisher, StrataResource, TargetModel, Verifier
from pipeline.engines.base import SamplingConfig
from pipeline.rollouts.allocation import AllocationConfig, check_independent_trials

RESOURCE_TYPES: dict[str, type] = {
    "storage": GradusStorage, "target_model": TargetModel, "strata": StrataResource, "verifier": Verifier,
    "hub": HubPublisher,
}
"""Resources whose run config is checked when the deployment's own types are not at hand (the
engine's type depends on GRADUS_ENGINE)."""


def config_errors(run_config: Mapping[str, Any], resource_types: Mapping[str, type] = RESOURCE_TYPES) -> list[str]:
    """Every problem in `run_config`, one line each (empty: it is valid)."""
    errors = []
    blocks = [("ops", name, OP_CONFIGS.get(name), block) for name, block in (run_config.get("ops") or {}).items()]
    blocks += [("resources", name, resource_types.get(name), block)
               for name, block in (run_config.get("resources") or {}).items()]
    for section, name, cls, block in blocks:
        if cls is None or not issubclass(cls, SpecConfig):
            continue
        given = (block or {}).get("config") or {}
        values = {k: "<from the environment>" if _is_env(v) else v for k, v in given.items()}
        try:
            cls(**values)
        except (ValidationError, TypeError, ValueError) as exc:
            details = exc.errors() if isinstance(exc, ValidationError) else [{"loc": (), "msg": str(exc)}]
            errors += [f"{section}: {name}: {'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in details]
    return errors


def _is_env(value: Any) -> bool:
    """A value Dagster reads from the environment at run time (`{env: NAME}`)."""
    return isinstance(value, Mapping) and set(value) == {"env"}


def check_run_config(run_config: Mapping[str, Any], resource_types: Mapping[str, type] = RESOURCE_TYPES) -> None:
    """Raise one error listing every problem in `run_config`."""
    errors = config_errors(run_config, resource_types)
    if errors:
        raise ValueError("the run config is invalid; nothing was run:\n" + "\n".join(f"- {e}" for e in errors))


def check_trials(run_config: Mapping[str, Any], sampling: SamplingConfig) -> None:
    """`check_independent_trials` for the run's `rollouts` config and the target's sampling, which
    are set in two places (an op's config, a resource) and meet only when rollouts are sampled."""
    given = (((run_config.get("ops") or {}).get("rollouts") or {}).get("config")) or {}
    config = OP_CONFIGS.get("rollouts")
    if config is None or any(_is_env(v) for v in given.values()):
        return  # known only when the step runs, which checks it then (`sample_rollouts`)
    check_independent_trials(config(**given).to_spec(AllocationConfig), sampling)

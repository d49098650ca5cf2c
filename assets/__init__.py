"""gradus's Dagster layer: assets, checks, resources and schedules over the `pipeline` library."""

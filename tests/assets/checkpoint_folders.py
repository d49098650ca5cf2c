"""Checkpoint folders for sensor tests: what a trainer leaves in the checkpoint folder, and a tick of
the sensor as the daemon runs it."""

import os
import shutil
import time

from dagster import build_sensor_context


def fake_checkpoint(root, name, files=("config.json", "model.safetensors"), age_s=3600.0):
    folder = root / name
    folder.mkdir(parents=True)
    for file in files:
        (folder / file).write_text("{}")
    age(folder, age_s)
    return folder


def age(folder, seconds):
    past = time.time() - seconds
    for p in folder.iterdir():
        os.utime(p, (past, past))


def evaluate(sensor, instance, resources, cursor):
    # The deployment's resources include ones with teardown: they open inside the context manager.
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        data = sensor.evaluate_tick(context)
    for request in data.dynamic_partitions_requests or []:  # what the daemon does with them
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return data


def perturbed_copy(model_path, folder):
    """A checkpoint of the model with one tensor nudged: a new revision, the same architecture."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_path, folder, ignore=shutil.ignore_patterns("*.safetensors", "gradus_model.json"))
    weights = load_file(os.path.join(model_path, "model.safetensors"))
    weights["model.norm.weight"] = weights["model.norm.weight"] * 1.01
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    age(folder, 3600)

"""The configuration reference: every op config and resource field of the code location, with its
default and description, read from the Dagster definitions themselves. The reference section of
docs/configuration.md is this module's output (`python -m assets.reference --write`; a test keeps
them equal)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from dagster import Definitions
from dagster._config.field import Field

START = "<!-- gradus:config-reference:start -->"
END = "<!-- gradus:config-reference:end -->"
REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _fields(prefix: str, fields: dict[str, Field]) -> Iterator[tuple[str, str, str]]:
    """(dotted name, default, description) per field, nested config blocks flattened."""
    for name, spec in fields.items():
        nested = getattr(spec.config_type, "fields", None)
        if nested and not spec.default_provided:
            yield from _fields(f"{prefix}{name}.", nested)
            continue
        default = json.dumps(spec.default_value) if spec.default_provided else "required"
        yield f"{prefix}{name}", default, spec.description or ""


def config_schemas(defs: Definitions) -> Iterator[tuple[str, dict[str, Field]]]:
    """(where to set it, its fields) for each configurable asset and resource."""
    from assets.deployment import ENGINE_RESOURCES

    for asset in sorted(defs.assets, key=lambda a: a.node_def.name):
        node = asset.node_def
        mapping = getattr(node, "config_mapping", None)
        schema = mapping.config_schema if mapping else node.config_schema
        if schema is not None and getattr(schema.config_type, "fields", None):
            yield f"ops: {node.name}", schema.config_type.fields
    resources = dict(defs.resources)
    for key in sorted(resources):
        if key == "engine":
            # The engine resource's fields depend on GRADUS_ENGINE: list every kind.
            for kind, resource in sorted(ENGINE_RESOURCES.items()):
                yield f"resources: engine ({kind})", resource().get_resource_definition().config_schema.config_type.fields
            continue
        schema = resources[key].get_resource_definition().config_schema
        if getattr(schema.config_type, "fields", None) and key != "io_manager":
            yield f"resources: {key}", schema.config_type.fields


def markdown(defs: Definitions) -> str:
    lines = ["| where | setting | default | what it does |", "|---|---|---|---|"]
    for where, fields in config_schemas(defs):
        for name, default, description in _fields("", fields):
            cell = description.replace("|", "\\|")
            lines.append(f"| {where} | `{name}` | `{default}` | {cell} |")
    return "\n".join(lines)


def reference_section(text: str) -> str:
    match = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), text, re.S)
    if not match:
        raise ValueError(f"{REFERENCE.name} has no {START} … {END} section")
    return match.group(1).rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print (or --write into docs/configuration.md) the configuration reference.")
    parser.add_argument("--write", action="store_true", help="replace the reference section of docs/configuration.md")
    args = parser.parse_args(argv)
    from assets.definitions import defs

    table = markdown(defs)
    if not args.write:
        print(table)
        return 0
    text = REFERENCE.read_text()
    reference_section(text)  # refuses a file without the section
    block = re.compile(re.escape(START) + r"\n.*?" + re.escape(END), re.S)
    REFERENCE.write_text(block.sub(lambda _: f"{START}\n{table}\n{END}", text))
    print(f"wrote {len(table.splitlines()) - 2} settings into {REFERENCE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

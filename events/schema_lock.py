"""The schema gate: each message's payload schema per version, committed, and checked against the code.

events/schema_lock/<Name>.v<version>.json holds the payload schema as the AsyncAPI document
publishes it. `python manage.py schema_lock` records new versions and compatible changes and
refuses breaking ones; tests/events/test_schema_gate.py fails while catalogue and lock
disagree. To change an event incompatibly: bump `version=` in its @event_type, register an
@upcaster from the old version, run the command, commit the new lock file beside the old one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_snake

from .asyncapi import payload_schema
from .catalogue import EVENT_TYPES, MESSAGE_TYPES, UPCASTERS
from .compatibility import breaking_changes, canonical, example
from .incoming import InvalidMessage, event_from_message

LOCK_DIR = Path(__file__).resolve().parent / "schema_lock"
LOCK_FILE = re.compile(r"(?P<name>\w+)\.v(?P<version>\d+)\.json")
Key = tuple[str, int]


def current_schemas() -> dict[Key, dict[str, Any]]:
    """Every published message's payload schema, keyed by (name, version); plain messages are v1."""
    return {
        (name, getattr(cls, "version", 1)): canonical(payload_schema(cls))
        for name, cls in MESSAGE_TYPES.items()
    }


def locked_schemas(directory: Path = LOCK_DIR) -> dict[Key, dict[str, Any]]:
    locked = {}
    for path in sorted(directory.glob("*.json")):
        if found := LOCK_FILE.fullmatch(path.name):
            locked[(found["name"], int(found["version"]))] = json.loads(path.read_text())
    return locked


def write_lock(key: Key, schema: dict[str, Any], directory: Path = LOCK_DIR) -> Path:
    name, version = key
    path = directory / f"{name}.v{version}.json"
    path.write_text(json.dumps(canonical(schema), indent=2, sort_keys=True) + "\n")
    return path


def gate_problems(
    *, locked: dict[Key, dict], current: dict[Key, dict], upcasters: set[Key], stored: set[str]
) -> list[str]:
    """Return what keeps the current catalogue from passing the gate; [] when it passes."""
    problems = []
    for (name, version), schema in sorted(current.items()):
        if (name, version) not in locked:
            problems.append(f"{name} v{version} is not in the lock: run `python manage.py schema_lock`")
        elif changes := breaking_changes(locked[(name, version)], schema):
            fix = (
                f"bump its version and add an upcaster from v{version}"
                if name in stored
                else "it is not stored, so publish it under a new name instead"
            )
            problems += [f"{name} v{version}: {change} - {fix}" for change in changes]
        elif canonical(locked[(name, version)]) != canonical(schema):
            problems.append(f"{name} v{version} changed compatibly: run `python manage.py schema_lock`")
        problems += [
            f"{name} v{version}: no upcaster from v{old} to v{old + 1} (events of v{old} are in the log)"
            for old in range(1, version)
            if (name, old) not in upcasters
        ]
    declared = {name: version for name, version in current}
    for name, version in sorted(locked):
        if name not in declared:
            problems.append(f"{name} v{version} is locked but no longer declared: type names never go away")
        elif version > declared[name]:
            problems.append(f"{name} v{version} is locked but the code declares v{declared[name]}")
    return problems


def upcast_problems(locked: dict[Key, dict]) -> list[str]:
    """Check that examples of every older locked version upcast to a valid current event."""
    problems = []
    for (name, version), schema in sorted(locked.items()):
        cls = EVENT_TYPES.get(name)
        if cls is None or version >= cls.version:
            continue
        for all_fields in (False, True):
            wire = example(schema, all_fields=all_fields)
            stored = {
                to_snake(k): v for k, v in wire.items() if k not in (cls.stream_id_field(), "timestamp")
            }
            try:
                event_from_message(name, version, stored)
            except InvalidMessage as error:
                problems.append(f"{name} v{version} example {stored} does not upcast: {error}")
    return problems


def check(directory: Path = LOCK_DIR) -> list[str]:
    """Run the whole gate on the catalogue as declared now."""
    locked = locked_schemas(directory)
    stored = set(EVENT_TYPES)
    problems = gate_problems(
        locked=locked, current=current_schemas(), upcasters=set(UPCASTERS), stored=stored
    )
    return problems + upcast_problems(locked)

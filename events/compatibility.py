"""Would readers of the old schema break on the new one? Pure functions over JSON Schemas.

A schema version is a promise to two kinds of reader. Our own handlers and projections read
every old event in the log, so the new schema must accept all the old one did. Other services
validate what we publish against the document they were built with, so the old schema must
accept all the new one produces, apart from properties it does not know (AsyncAPI consumers
ignore those). Between the two, one change keeps a version: adding an optional property.
Titles, descriptions, examples and defaults are documentation. Anything else (a removed,
retyped or newly required field, an enum losing or gaining values, another format or bound)
needs a new version and an upcaster from the old one.
"""

from __future__ import annotations

import uuid
from typing import Any

#: Keywords that change no instance's validity.
DOCUMENTATION = frozenset({"title", "description", "examples", "default", "$comment", "deprecated"})
#: Keywords compared field by field below rather than as a whole.
STRUCTURE = frozenset({"type", "enum", "properties", "required", "items"})


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """Return one line per change that would break a reader of `old`; [] when compatible."""
    where = path or "payload"
    changes = _type_change(old, new, where) + _enum_change(old, new, where)
    for keyword in sorted((old.keys() | new.keys()) - DOCUMENTATION - STRUCTURE):
        if old.get(keyword) != new.get(keyword):
            changes.append(f"{where}: {keyword} {_shown(old.get(keyword))} -> {_shown(new.get(keyword))}")
    changes += _property_changes(old, new, path)
    if "items" in old or "items" in new:
        changes += breaking_changes(old.get("items", {}), new.get("items", {}), f"{where}[]")
    return changes


def _types(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def _type_change(old: dict, new: dict, where: str) -> list[str]:
    before, after = _types(old), _types(new)
    if before == after:
        return []
    return [f"{where}: type {'|'.join(sorted(before)) or 'any'} -> {'|'.join(sorted(after)) or 'any'}"]


def _enum_change(old: dict, new: dict, where: str) -> list[str]:
    if "enum" not in old and "enum" not in new:
        return []
    if "enum" not in new:
        return [f"{where}: enum removed (any value may now arrive)"]
    if "enum" not in old:
        return [f"{where}: enum added (old values outside it are refused)"]
    lost = [v for v in old["enum"] if v not in new["enum"]]
    gained = [v for v in new["enum"] if v not in old["enum"]]
    changes = [f"{where}: enum narrowed, lost {_shown(lost)}"] if lost else []
    return changes + ([f"{where}: enum widened, gained {_shown(gained)}"] if gained else [])


def _property_changes(old: dict, new: dict, path: str) -> list[str]:
    before, after = old.get("properties", {}), new.get("properties", {})
    was_required, is_required = set(old.get("required", [])), set(new.get("required", []))
    changes = []
    for name in before.keys() - after.keys():
        changes.append(f"{_join(path, name)}: removed")
    for name in after.keys() - before.keys():
        if name in is_required:
            changes.append(f"{_join(path, name)}: added as required (old events lack it)")
    for name in sorted(was_required - is_required):
        if name in after:
            changes.append(f"{_join(path, name)}: no longer required (readers rely on it)")
    for name in sorted(is_required - was_required):
        if name in before:
            changes.append(f"{_join(path, name)}: now required (old events may lack it)")
    for name in before.keys() & after.keys():
        changes += breaking_changes(before[name], after[name], _join(path, name))
    return sorted(changes)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _shown(value: Any) -> str:
    return "(none)" if value is None else repr(value)


def canonical(schema: Any) -> Any:
    """Return the schema with `required` lists sorted, so equal schemas compare equal."""
    if isinstance(schema, list):
        return [canonical(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {key: sorted(value) if key == "required" else canonical(value) for key, value in schema.items()}


# ------------------------------------------------------- example instances of a schema

EXAMPLE_STRINGS = {
    "uuid": str(uuid.UUID(int=1)),
    "date-time": "2026-01-01T12:00:00+00:00",
    "date": "2026-01-01",
    "uri": "https://example.org/resource",
    "email": "someone@example.org",
}


def example(schema: dict[str, Any], *, all_fields: bool = False) -> Any:
    """Return a small instance the schema accepts: required fields only, or every field."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = next((t for t in sorted(_types(schema)) if t != "null"), "null")
    if kind == "object":
        required = set(schema.get("required", []))
        return {
            name: example(sub, all_fields=all_fields)
            for name, sub in schema.get("properties", {}).items()
            if all_fields or name in required
        }
    if kind == "array":
        return [example(schema.get("items", {}), all_fields=all_fields)] * schema.get("minItems", 0)
    if kind in ("integer", "number"):
        return schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
    if kind == "string":
        return EXAMPLE_STRINGS.get(schema.get("format"), "x" * max(1, schema.get("minLength", 1)))
    return {"boolean": True, "null": None}.get(kind)

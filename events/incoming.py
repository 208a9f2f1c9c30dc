"""A message a handler receives is checked against its declared schema before any handler code runs.

The pydantic model in events/catalogue.py is the one declaration: the JSON Schema in the
AsyncAPI document is generated from it, and here it validates in strict JSON mode, so it
refuses what that JSON Schema refuses ("3" or 3.0 for an integer, a Unix time for a
date-time) instead of quietly coercing it. A message that fails is a permanent failure:
events.delivery marks the delivery dead with the error at once, without retries.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from .catalogue import EVENT_TYPES, UPCASTERS, DomainEvent, upcast
from .handlers import Handler
from .models import StoredEvent
from .store import RecordedEvent


class InvalidMessage(ValueError):
    """A message that can never be handled as it is: every retry would fail the same way."""


def event_from_message(event_type: str, schema_version: int, payload: Any) -> DomainEvent:
    """Return the typed event at its current version, or raise InvalidMessage saying why not."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise InvalidMessage(f"unknown event type {event_type!r}")
    name = f"{event_type} v{schema_version}"
    if not 1 <= schema_version <= cls.version:
        raise InvalidMessage(f"{name}: this code reads versions 1 to {cls.version}")
    missing = [v for v in range(schema_version, cls.version) if (event_type, v) not in UPCASTERS]
    if missing:
        raise InvalidMessage(f"{name}: no upcaster from version {missing[0]}")
    if not isinstance(payload, dict):
        raise InvalidMessage(f"{name}: the payload is {type(payload).__name__}, not an object")
    try:
        current = upcast(event_type, schema_version, payload)
    except Exception as error:  # an upcaster that cannot read this payload never will
        raise InvalidMessage(f"{name}: upcasting failed: {error!r}") from error
    try:
        return cls.model_validate_json(to_json(current), strict=True)
    except ValidationError as error:
        raise InvalidMessage(f"{name} does not match its schema: {summary(error, cls)}") from error


def summary(error: ValidationError, cls: type[DomainEvent]) -> str:
    """One clause per problem: the field as stored, pydantic's message and what was there."""
    stored_name = {field.alias: name for name, field in cls.model_fields.items() if field.alias}
    return "; ".join(
        f"{'.'.join(str(stored_name.get(part, part)) for part in e['loc']) or 'payload'}: "
        f"{e['msg']} (got {_short(e['input'])})"
        for e in error.errors(include_url=False)
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def subscribes(handler: Handler, event_type: str) -> bool:
    """Whether the handler receives this event, itself or through a message it announces."""
    if event_type in handler.messages:
        return True
    announced = EVENT_TYPES[event_type].announces if event_type in EVENT_TYPES else ()
    return any(message.message_name in handler.messages for message in announced)


def received_event(handler: Handler, row: StoredEvent) -> RecordedEvent:
    """Return the stored event as the handler sees it, once it is known to be valid."""
    if not subscribes(handler, row.event_type):
        raise InvalidMessage(f"{handler.name} does not receive {row.event_type}")
    return RecordedEvent.from_row(row, parse=event_from_message)

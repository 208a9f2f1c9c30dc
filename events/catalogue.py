"""Every event and published message, declared once.

A declaration gives the type name and schema version the store records, the channel address
the relay routes by, and the JSON Schema that validation and the AsyncAPI document use.
Type names and channel addresses never change: a breaking change is a new version plus an
upcaster (see ``upcaster`` below), never an edit of stored history.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


def _uri(value: str) -> str:
    """Refuse what JSON Schema's "uri" format refuses first: a reference without a scheme."""
    if not urlsplit(value).scheme:
        raise ValueError("a URI needs a scheme, e.g. https://")
    return value


Uri = Annotated[str, AfterValidator(_uri), Field(json_schema_extra={"format": "uri"})]


class Species(enum.StrEnum):
    DOG = "dog"
    CAT = "cat"
    BIRD = "bird"
    RABBIT = "rabbit"


class Message(BaseModel):
    """A payload that travels on a channel; camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    message_name: ClassVar[str]
    channel: ClassVar[str]
    summary: ClassVar[str] = ""

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """Return the payload's JSON Schema as it appears on the wire (camelCase)."""
        return _tidy_schema(cls.model_json_schema(by_alias=True, mode="serialization"))

    @classmethod
    def wire_schema(cls) -> dict[str, Any]:
        """Return the schema of the payload as published."""
        return cls.json_schema()

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class DomainEvent(Message):
    """A fact recorded in the event log; its wire payload adds the stream id and timestamp."""

    event_name: ClassVar[str]
    version: ClassVar[int]
    stream_type: ClassVar[str]
    #: Messages also published when this event is recorded, built from the aggregate.
    announces: ClassVar[tuple[type[Message], ...]] = ()

    def to_stored(self) -> dict[str, Any]:
        """Return the payload as stored in the log (snake_case JSON), checked against its schema.

        Construction validates already; this catches what skipped it (model_construct, a
        mutated field), so an invalid event fails its command before anything is written.
        """
        payload = self.model_dump(mode="json")
        type(self).model_validate(payload)
        return payload

    @classmethod
    def stream_id_field(cls) -> str:
        return f"{cls.stream_type}Id"

    @classmethod
    def wire_schema(cls) -> dict[str, Any]:
        """Return the published payload's schema: stream id, event fields, timestamp."""
        schema = cls.json_schema()
        id_field = cls.stream_id_field()
        schema["properties"] = {
            id_field: {"type": "string", "format": "uuid"},
            **schema.get("properties", {}),
            "timestamp": {"type": "string", "format": "date-time"},
        }
        schema["required"] = [id_field, *schema.get("required", []), "timestamp"]
        return schema

    def to_wire(self, *, stream_id: UUID, recorded_at: datetime) -> dict[str, Any]:
        """Return the payload published on the event's channel."""
        return {
            self.stream_id_field(): str(stream_id),
            **self.model_dump(mode="json", by_alias=True, exclude_none=True),
            "timestamp": recorded_at.isoformat(),
        }


EVENT_TYPES: dict[str, type[DomainEvent]] = {}
MESSAGE_TYPES: dict[str, type[Message]] = {}


def message_type(*, name: str, channel: str, summary: str = "") -> Callable:
    """Register a published message that is not itself stored (e.g. PetAvailable)."""

    def register(cls: type[Message]) -> type[Message]:
        cls.message_name, cls.channel, cls.summary = name, channel, summary
        MESSAGE_TYPES[name] = cls
        return cls

    return register


def event_type(
    *,
    name: str,
    channel: str,
    version: int = 1,
    stream_type: str = "pet",
    summary: str = "",
    announces: tuple[type[Message], ...] = (),
) -> Callable:
    """Register a stored event type under a stable name and channel address."""

    def register(cls: type[DomainEvent]) -> type[DomainEvent]:
        if name in EVENT_TYPES:
            raise ValueError(f"event type {name} declared twice")
        cls.event_name = cls.message_name = name
        cls.channel, cls.version, cls.stream_type = channel, version, stream_type
        cls.summary, cls.announces = summary, announces
        EVENT_TYPES[name] = cls
        MESSAGE_TYPES[name] = cls
        return cls

    return register


# --- upcasting: old stored payloads are upgraded on read, one version step at a time ---

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns a payload of `from_version` into `from_version + 1`."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_name, from_version)] = fn
        return fn

    return register


def upcast(event_name: str, schema_version: int, payload: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored payload up to the current version of its event type."""
    current = EVENT_TYPES[event_name].version
    while schema_version < current:
        payload = UPCASTERS[(event_name, schema_version)](dict(payload))
        schema_version += 1
    return payload


def event_from_stored(event_name: str, schema_version: int, payload: dict[str, Any]) -> DomainEvent:
    """Rebuild a DomainEvent from a stored row, upcasting old versions."""
    cls = EVENT_TYPES[event_name]
    return cls.model_validate(upcast(event_name, schema_version, payload))


def event_from_stored_json(event_name: str, schema_version: int, payload_json: str) -> DomainEvent:
    """event_from_stored for a payload still in JSON text (as replays read it).

    pydantic parses and validates the text in one pass, about twice as fast as json.loads
    and then validating the dict; only an old version needs the dict, for its upcasters.
    """
    cls = EVENT_TYPES[event_name]
    if schema_version == cls.version:
        return cls.model_validate_json(payload_json)
    return event_from_stored(event_name, schema_version, json.loads(payload_json))


def _tidy_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's titles and the null branch of optional fields: absent means unknown."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        branches = prop.pop("anyOf", None)
        if branches:
            prop.update(next(b for b in branches if b.get("type") != "null"))
            prop.pop("default", None)
    for definition in schema.get("$defs", {}).values():
        definition.pop("title", None)
    return schema


# ------------------------------------------------------------------ the catalogue itself


@message_type(
    name="PetAvailable",
    channel="pet.available",
    summary="A pet can be adopted: newly registered or returned to its shelter",
)
class PetAvailable(Message):
    pet_id: UUID
    species: Species
    age: int | None = Field(default=None, ge=0)  # optional in the guide's contract
    name: str | None = None
    shelter_id: UUID | None = None
    timestamp: datetime


@event_type(
    name="PetRegistered",
    channel="pet.registered",
    version=2,
    summary="A shelter registered a new pet",
    announces=(PetAvailable,),
)
class PetRegistered(DomainEvent):
    name: str = Field(min_length=1, max_length=100)
    species: Species
    age: int = Field(ge=0, le=100)
    shelter_id: UUID
    photo_url: str | None = Field(default=None, max_length=500)


@upcaster("PetRegistered", from_version=1)
def _pet_registered_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no photo; photos arrived with version 2."""
    payload.setdefault("photo_url", None)
    return payload


@event_type(
    name="PetAdopted",
    channel="pet.adopted",
    summary="Triggered when a customer adopts a pet",
)
class PetAdopted(DomainEvent):
    adoption_id: UUID
    customer_id: UUID
    shelter_id: UUID | None = None


@event_type(
    name="PetReturned",
    channel="pet.returned",
    summary="An adopted pet came back to its shelter",
    announces=(PetAvailable,),
)
class PetReturned(DomainEvent):
    adoption_id: UUID | None = None
    reason: str = Field(min_length=1, max_length=1000)


@event_type(name="PetNameChanged", channel="pet.renamed", summary="A pet got a new name")
class PetNameChanged(DomainEvent):
    old_name: str
    new_name: str = Field(min_length=1, max_length=100)


@event_type(
    name="AdoptionCompleted",
    channel="adoption.completed",
    stream_type="adoption",
    summary="Published when all adoption steps are complete",
)
class AdoptionCompleted(DomainEvent):
    certificate_url: Uri
    vet_appointment_date: datetime | None = None

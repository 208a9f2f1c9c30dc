"""One declaration per event: names, channels, schemas and upcasters."""

import uuid
from datetime import UTC, datetime

import jsonschema
import pytest
from pydantic import ValidationError

from events.catalogue import (
    EVENT_TYPES,
    MESSAGE_TYPES,
    PetAdopted,
    PetRegistered,
    event_from_stored,
)


def test_every_event_has_a_stable_name_channel_and_version():
    assert {name: cls.channel for name, cls in EVENT_TYPES.items()} == {
        "PetRegistered": "pet.registered",
        "PetAdopted": "pet.adopted",
        "PetReturned": "pet.returned",
        "PetNameChanged": "pet.renamed",
        "AdoptionCompleted": "adoption.completed",
    }
    assert MESSAGE_TYPES["PetAvailable"].channel == "pet.available"


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_wire_schema_is_valid_json_schema(name):
    jsonschema.Draft202012Validator.check_schema(MESSAGE_TYPES[name].wire_schema())


def test_wire_payload_of_pet_adopted_matches_its_schema():
    event = PetAdopted(adoption_id=uuid.uuid4(), customer_id=uuid.uuid4(), shelter_id=uuid.uuid4())
    wire = event.to_wire(stream_id=uuid.uuid4(), recorded_at=datetime.now(UTC))

    jsonschema.validate(wire, PetAdopted.wire_schema(), format_checker=jsonschema.FormatChecker())
    assert set(wire) == {"petId", "adoptionId", "customerId", "shelterId", "timestamp"}


def test_invalid_event_cannot_be_built():
    with pytest.raises(ValidationError):
        PetRegistered(name="", species="lizard", age=-1, shelter_id=uuid.uuid4())


def test_version_1_pet_registered_is_upcast_on_read():
    """Version 1 had no photo_url; stored v1 payloads still load as the current version."""
    stored_v1 = {"name": "Buddy", "species": "dog", "age": 2, "shelter_id": str(uuid.uuid4())}

    event = event_from_stored("PetRegistered", 1, stored_v1)

    assert isinstance(event, PetRegistered)
    assert event.photo_url is None and event.name == "Buddy"

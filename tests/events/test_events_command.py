"""`manage.py events` prints the log as JSON lines, filtered by time and type."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from adoptions import services
from events.context import CommandContext
from events.models import StoredEvent
from tests.factories import adopt_pet, register_pet

pytestmark = pytest.mark.django_db

CONTEXT = CommandContext.system()


def printed(*options: str) -> list[dict]:
    """Run `events`; return its lines, each parsed as one JSON object."""
    out = StringIO()
    call_command("events", *options, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def first_recorded_at(stream_id) -> datetime:
    return StoredEvent.objects.filter(stream_id=stream_id).earliest("position").recorded_at


@pytest.fixture
def old_and_new_pet(shelter):
    """Two pets, each registered then renamed; the new one's events all after the old one's."""
    old = register_pet(shelter=shelter, name="Old")
    services.pet_rename(pet_id=old.id, new_name="Older", context=CONTEXT)
    new = register_pet(shelter=shelter, name="New")
    services.pet_rename(pet_id=new.id, new_name="Newer", context=CONTEXT)
    last_of_old = StoredEvent.objects.filter(stream_id=old.id).latest("position")
    assert last_of_old.recorded_at < first_recorded_at(new.id)
    return old, new


def test_type_prints_only_events_of_that_type_in_log_order(shelter, customer):
    first = register_pet(shelter=shelter, name="First")
    second = register_pet(shelter=shelter, name="Second")
    adopt_pet(pet=first, customer=customer)

    lines = printed("--type", "PetRegistered")

    assert [(e["type"], e["streamId"]) for e in lines] == [
        ("PetRegistered", str(first.id)),
        ("PetRegistered", str(second.id)),
    ]
    assert [e["type"] for e in printed("--type", "PetAdopted")] == ["PetAdopted"]


def test_each_line_is_the_stored_event_as_json(shelter):
    pet = register_pet(shelter=shelter, name="Nova", species="cat", age=4)

    [line] = printed("--type", "PetRegistered")

    stored = StoredEvent.objects.get(stream_id=pet.id)
    assert line == {
        "position": stored.position,
        "eventId": str(stored.event_id),
        "type": "PetRegistered",
        "streamType": stored.stream_type,
        "streamId": str(pet.id),
        "version": 1,
        "schemaVersion": 2,  # PetRegistered's current version, the one `data` is in
        "storedSchemaVersion": stored.schema_version,
        "data": stored.payload,
        "metadata": stored.metadata,
        "recordedAt": stored.recorded_at.isoformat(),
    }
    assert (line["data"]["name"], line["data"]["species"], line["data"]["age"]) == ("Nova", "cat", 4)


def test_since_an_iso_time_prints_only_events_recorded_from_then_on(old_and_new_pet):
    _, new = old_and_new_pet

    lines = printed("--since", iso_z(first_recorded_at(new.id)))

    assert [(e["type"], e["streamId"]) for e in lines] == [
        ("PetRegistered", str(new.id)),
        ("PetNameChanged", str(new.id)),
    ]


def test_since_a_span_counts_back_from_now(old_and_new_pet, monkeypatch):
    _, new = old_and_new_pet
    ninety_seconds_later = first_recorded_at(new.id) + timedelta(seconds=90)
    monkeypatch.setattr("django.utils.timezone.now", lambda: ninety_seconds_later)

    lines = printed("--since", "90s")

    assert {e["streamId"] for e in lines} == {str(new.id)} and len(lines) == 2


def test_since_and_type_together_print_events_matching_both(old_and_new_pet):
    _, new = old_and_new_pet

    lines = printed("--since", iso_z(first_recorded_at(new.id)), "--type", "PetNameChanged")

    assert [(e["type"], e["streamId"], e["data"]["new_name"]) for e in lines] == [
        ("PetNameChanged", str(new.id), "Newer")
    ]


def test_since_a_time_after_the_last_event_prints_nothing(old_and_new_pet):
    assert printed("--since", iso_z(datetime.now(UTC) + timedelta(hours=1))) == []


def test_since_something_neither_a_time_nor_a_span_is_refused():
    with pytest.raises(CommandError, match="ISO time or a span like 24h, not 'last week'"):
        printed("--since", "last week")


def test_a_limit_that_cuts_the_log_short_says_so_on_stderr(old_and_new_pet):
    out, err = StringIO(), StringIO()

    call_command("events", "--limit", "3", stdout=out, stderr=err)

    assert len(out.getvalue().splitlines()) == 3
    assert "stopped after 3 events" in err.getvalue()


def test_limit_zero_prints_every_event_and_a_limit_not_reached_says_nothing(old_and_new_pet):
    err = StringIO()

    every = printed("--limit", "0")
    call_command("events", "--limit", "4", stdout=StringIO(), stderr=err)

    assert len(every) == StoredEvent.objects.count() == 4
    assert err.getvalue() == ""

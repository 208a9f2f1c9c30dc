"""The event store: appends, optimistic concurrency, snapshots, time travel, immutability."""

import contextlib
import time
import uuid
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from pydantic import ValidationError

from adoptions.domain import Pet, PetStatus
from adoptions.services import pets
from events.catalogue import PetNameChanged, PetRegistered
from events.models import OutboxMessage, Snapshot, StoredEvent
from events.store import ConcurrencyConflict, LogPosition, StreamNotFound, append, read_all
from tests.factories import registered_at_version_1

pytestmark = pytest.mark.django_db

META = {"correlation_id": "test", "causation_id": None, "actor_id": None}


def new_pet(**overrides) -> Pet:
    fields = {"name": "Buddy", "species": "dog", "age": 2, "shelter_id": uuid.uuid4(), **overrides}
    return Pet.register(pet_id=uuid.uuid4(), **fields)


def test_save_appends_events_with_gap_free_versions_and_outbox_rows():
    pet = new_pet()
    pets.save(pet, metadata=META)
    pet.rename(new_name="Max")
    pets.save(pet, metadata=META)

    events = list(StoredEvent.objects.filter(stream_id=pet.id))
    assert [e.stream_version for e in events] == [1, 2]
    assert [e.event_type for e in events] == ["PetRegistered", "PetNameChanged"]
    routing = sorted(OutboxMessage.objects.values_list("routing_key", flat=True))
    assert routing == ["pet.available", "pet.registered", "pet.renamed"]


def test_outbox_message_carries_event_id_and_headers():
    pet = new_pet()
    [row] = pets.save(pet, metadata=META)

    message = OutboxMessage.objects.get(routing_key="pet.registered")
    assert message.event_id == row.event_id
    assert message.headers["event-type"] == "PetRegistered"
    assert message.headers["event-id"] == str(row.event_id)
    assert message.payload["petId"] == str(pet.id)
    available = OutboxMessage.objects.get(routing_key="pet.available")
    assert available.payload["species"] == "dog" and available.payload["age"] == 2


def test_stale_expected_version_is_a_conflict_and_writes_nothing():
    pet = new_pet()
    pets.save(pet, metadata=META)
    stale = pets.load(pet.id)
    fresh = pets.load(pet.id)
    fresh.rename(new_name="Max")
    pets.save(fresh, metadata=META)

    stale.rename(new_name="Rex")
    with pytest.raises(ConcurrencyConflict) as conflict:
        with transaction.atomic():
            pets.save(stale, metadata=META)

    assert (conflict.value.expected, conflict.value.actual) == (1, 2)
    assert StoredEvent.objects.filter(stream_id=pet.id).count() == 2


def test_explicit_expected_version_is_checked():
    pet = new_pet()
    pets.save(pet, metadata=META)
    loaded = pets.load(pet.id)
    loaded.rename(new_name="Max")

    with pytest.raises(ConcurrencyConflict):
        pets.save(loaded, metadata=META, expected_version=5)


def test_loading_an_unknown_stream_raises():
    with pytest.raises(StreamNotFound):
        pets.load(uuid.uuid4())


def test_snapshot_is_taken_and_used_and_gives_the_same_state(settings):
    settings.EVENTS_SNAPSHOT_EVERY = 10
    pet = new_pet()
    for n in range(25):
        pet.rename(new_name=f"Buddy {n}")
        pets.save(pet, metadata=META)

    assert list(Snapshot.objects.filter(stream_id=pet.id).values_list("stream_version", flat=True)) == [
        10,
        20,
    ]
    with_snapshot = pets.load(pet.id)
    without = pets.load(pet.id, use_snapshots=False)
    assert with_snapshot.snapshot_state() == without.snapshot_state()
    assert with_snapshot.version == without.version == 26


def test_as_of_returns_the_state_at_that_moment():
    pet = new_pet()
    pets.save(pet, metadata=META)
    StoredEvent.objects.filter(stream_id=pet.id)  # registered at t0
    before_adoption = timezone.now()
    loaded = pets.load(pet.id)
    loaded.adopt(adoption_id=uuid.uuid4(), customer_id=uuid.uuid4())
    pets.save(loaded, metadata=META)

    assert pets.load(pet.id).status is PetStatus.ADOPTED
    assert pets.load(pet.id, as_of=before_adoption).status is PetStatus.AVAILABLE
    with pytest.raises(StreamNotFound):
        pets.load(pet.id, as_of=before_adoption - timedelta(days=1))


def test_as_of_with_snapshots_gives_the_state_a_full_replay_gives(settings):
    settings.EVENTS_SNAPSHOT_EVERY = 5
    pet = new_pet()
    pets.save(pet, metadata=META)
    moments = []
    for n in range(12):
        pet.rename(new_name=f"Buddy {n}")
        pets.save(pet, metadata=META)
        moments.append(timezone.now())

    for moment in moments:
        replayed = pets.load(pet.id, as_of=moment, use_snapshots=False)
        assert pets.load(pet.id, as_of=moment).snapshot_state() == replayed.snapshot_state()
    at_a_snapshot = pets.load(pet.id, as_of=moments[3])  # version 5: nothing after the snapshot
    assert (at_a_snapshot.version, at_a_snapshot.name) == (5, "Buddy 3")
    latest = StoredEvent.objects.filter(stream_id=pet.id).latest("stream_version")
    assert pets.load(pet.id).last_recorded_at == latest.recorded_at  # an aware datetime, as stored


def test_old_schema_version_in_the_log_is_upcast_when_loading():
    pet_id, shelter_id = uuid.uuid4(), uuid.uuid4()
    registered_at_version_1(pet_id=pet_id, shelter_id=shelter_id)

    pet = pets.load(pet_id)

    assert pet.name == "Old" and pet.photo_url is None and pet.shelter_id == shelter_id


def test_the_orm_refuses_to_update_or_delete_events():
    pet = new_pet()
    [row] = pets.save(pet, metadata=META)

    with pytest.raises(TypeError):
        StoredEvent.objects.filter(position=row.position).update(event_type="Tampered")
    with pytest.raises(TypeError):
        StoredEvent.objects.filter(position=row.position).delete()
    with pytest.raises(TypeError):
        row.save()


def test_the_database_refuses_to_update_events_even_with_raw_sql():
    pet = new_pet()
    [row] = pets.save(pet, metadata=META)

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE event_log SET event_type = 'Tampered' WHERE position = %s", [row.position])


def test_the_database_refuses_to_delete_events(settings):
    settings.EVENT_LOG_ERASABLE = False  # as outside tests (SQLite asks it; PostgreSQL never lets a row go)
    pet = new_pet()
    [row] = pets.save(pet, metadata=META)

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM event_log WHERE position = %s", [row.position])


def test_a_connection_allowed_to_erase_the_log_deletes_rows_only_on_sqlite(settings):
    """SQLite empties the test database with DELETE: test settings allow it there. PostgreSQL
    empties it with TRUNCATE (the session says so) and never lets a row go by DELETE."""
    [row] = pets.save(new_pet(), metadata=META)
    settings.EVENT_LOG_ERASABLE = True
    deleted = not connection.vendor == "postgresql"

    with contextlib.suppress(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM event_log WHERE position = %s", [row.position])

    assert StoredEvent.objects.filter(position=row.position).exists() is not deleted


@pytest.mark.django_db(transaction=True)  # the test's own transaction would hold TRUNCATE's lock
def test_the_database_refuses_to_truncate_the_log_unless_the_session_says_it_means_it(require_postgres):
    """Row triggers never see TRUNCATE: a statement trigger refuses it. The test database's own
    connections set petstore.erase_event_log (petstore/settings/test.py) to flush between tests."""
    import psycopg
    from django.conf import settings

    pets.save(new_pet(), metadata=META)
    params = connection.get_connection_params()
    params.pop("options", None)  # a session like the product's: nothing said
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    with psycopg.connect(**params) as plain:
        plain.execute("SET lock_timeout = '5s'")  # a lock held elsewhere fails the test, not hangs it
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="TRUNCATE refused"):
            plain.execute("TRUNCATE event_log")
        plain.rollback()
        plain.execute("SET lock_timeout = '5s'")
        plain.execute("SET petstore.erase_event_log = on")
        plain.execute("TRUNCATE event_log")  # refused only by the trigger: now it goes through
        plain.rollback()  # leave the test's event in place
    assert StoredEvent.objects.count() == 1
    assert "petstore.erase_event_log=on" in settings.DATABASES["default"]["OPTIONS"]["options"]


def read_all_eventually(count: int, timeout: float = 10.0) -> list:
    """Read the log until `count` events are visible.

    Any older transaction still open anywhere in the cluster holds the horizon back (by
    design); on a shared server that can be a moment.
    """
    deadline = time.monotonic() + timeout
    while len(events := read_all()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return events


@pytest.mark.django_db(transaction=True)
def test_read_all_returns_events_in_reader_order_after_a_checkpoint():
    first, second = new_pet(), new_pet()
    pets.save(first, metadata=META)
    pets.save(second, metadata=META)

    everything = read_all_eventually(2)
    after_first = read_all(after=LogPosition.of(everything[0]))

    assert [e.stream_id for e in everything] == [first.id, second.id]
    assert [e.stream_id for e in after_first] == [second.id]


def test_append_refuses_a_version_already_taken():
    stream_id = uuid.uuid4()
    event = PetRegistered(name="A", species="dog", age=1, shelter_id=uuid.uuid4())
    append(stream_type="pet", stream_id=stream_id, events=[event], expected_version=0, metadata=META)

    with pytest.raises(ConcurrencyConflict):
        append(
            stream_type="pet",
            stream_id=stream_id,
            events=[PetNameChanged(old_name="A", new_name="B")],
            expected_version=0,
            metadata=META,
        )


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the point: a wrong value
def test_an_event_that_skipped_validation_fails_its_command_and_writes_nothing():
    invalid = PetRegistered.model_construct(name="", species="lizard", age=-1, shelter_id=uuid.uuid4())

    with pytest.raises(ValidationError, match="PetRegistered"), transaction.atomic():
        append(stream_type="pet", stream_id=uuid.uuid4(), events=[invalid], expected_version=0, metadata={})

    assert not StoredEvent.objects.exists() and not OutboxMessage.objects.exists()

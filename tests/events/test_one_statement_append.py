"""Outside a transaction, on PostgreSQL, a command's writes are one statement: all or nothing.

These tests commit for real (transaction=True): inside a test's transaction, appends take the
transactional path the other store tests cover.
"""

import uuid

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from adoptions import services
from adoptions.models import Adoption, PetRecord
from events import sql
from events.catalogue import PetNameChanged
from events.context import CommandContext
from events.models import OutboxMessage, StoredEvent
from events.store import ConcurrencyConflict, append, stream_version
from tests.factories import CustomerFactory, ShelterFactory

pytestmark = pytest.mark.django_db(transaction=True)

META = {"correlation_id": "test", "causation_id": None, "actor_id": None}


@pytest.fixture
def registered(require_postgres):
    shelter = ShelterFactory()
    change = services.pet_register(
        shelter=shelter, name="Rex", species="dog", age=3, context=CommandContext.system()
    )
    return change.pet_id


def renamed(pet_id, new_name: str, *, expected_version: int, also_write=None):
    return append(
        stream_type="pet",
        stream_id=pet_id,
        events=[PetNameChanged(old_name="Rex", new_name=new_name)],
        expected_version=expected_version,
        metadata=META,
        also_write=also_write,
    )


def written_statements(queries) -> list[str]:
    return [q["sql"] for q in queries if not q["sql"].startswith("SELECT")]


def test_an_adoption_is_one_write_statement_with_the_event_its_outbox_row_and_its_rows(registered):
    customer = CustomerFactory()
    with CaptureQueriesContext(connection) as queries:
        started = services.pet_adopt(pet_id=registered, customer=customer, context=CommandContext.system())

    [write] = written_statements(queries.captured_queries)
    assert write.startswith("WITH appended AS (INSERT INTO")
    assert len(queries.captured_queries) == 2  # the pet's events, then the write: no BEGIN or COMMIT
    event = StoredEvent.objects.get(stream_id=registered, stream_version=2)
    assert (event.event_type, event.position) == ("PetAdopted", started.position)
    adoption = Adoption.objects.get(id=started.adoption.id)
    assert adoption.adopted_event_id == event.event_id and adoption.created_at == event.recorded_at
    record = PetRecord.objects.get(id=registered)
    assert (record.status, record.version, record.updated_at) == ("adopted", 2, event.recorded_at)
    [message] = OutboxMessage.objects.filter(event_id=event.event_id)
    assert message.routing_key == "pet.adopted"
    assert message.headers["position"] == event.position  # read from the event's own INSERT


def test_every_outbox_message_of_a_registration_carries_its_events_position(registered):
    event = StoredEvent.objects.get(stream_id=registered)
    messages = OutboxMessage.objects.filter(event_id=event.event_id)
    assert sorted(m.routing_key for m in messages) == ["pet.available", "pet.registered"]
    assert {m.headers["position"] for m in messages} == {event.position}
    assert PetRecord.objects.get(id=registered).registered_at == event.recorded_at


def test_a_failing_companion_write_leaves_no_event_and_no_outbox_row(registered):
    def impossible(rows):  # age is a positive field: the database refuses -1
        return [sql.update_statement(PetRecord, registered, age=-1)]

    with pytest.raises(IntegrityError):
        renamed(registered, "Max", expected_version=1, also_write=impossible)

    assert stream_version(registered) == 1
    assert not OutboxMessage.objects.filter(routing_key="pet.renamed").exists()
    assert PetRecord.objects.get(id=registered).age == 3


def test_a_taken_version_is_a_conflict_and_none_of_the_statement_is_written(registered):
    services.pet_rename(pet_id=registered, new_name="Max", context=CommandContext.system())
    companion_ran = []

    def rename_record(rows):
        companion_ran.append(rows)
        return [sql.update_statement(PetRecord, registered, name="Late")]

    with pytest.raises(ConcurrencyConflict) as conflict:
        renamed(registered, "Late", expected_version=1, also_write=rename_record)

    assert (conflict.value.expected, conflict.value.actual) == (1, 2)
    assert PetRecord.objects.get(id=registered).name == "Max"
    assert OutboxMessage.objects.filter(routing_key="pet.renamed").count() == 1
    assert companion_ran  # built, then refused with the rest of the statement


def test_several_events_go_in_together_or_not_at_all(registered):
    renames = [
        PetNameChanged(old_name="Rex", new_name="Max"),
        PetNameChanged(old_name="Max", new_name="Rex"),
    ]
    rows = append(stream_type="pet", stream_id=registered, events=renames, expected_version=1, metadata=META)
    assert [r.stream_version for r in rows] == [2, 3]
    assert rows[0].position < rows[1].position
    headers = {
        m.event_id: m.headers["position"] for m in OutboxMessage.objects.filter(routing_key="pet.renamed")
    }
    assert headers == {r.event_id: r.position for r in rows}

    overlapping = renames + [PetNameChanged(old_name="Rex", new_name="Bo")]
    with pytest.raises(ConcurrencyConflict):  # versions 3 and 4: 3 is taken, so 4 is not written
        append(
            stream_type="pet", stream_id=registered, events=overlapping[1:], expected_version=2, metadata=META
        )
    assert stream_version(registered) == 3


def test_each_command_writes_in_a_transaction_of_its_own_newer_than_the_last(registered):
    """Readers follow (transaction id, position): each write's id must follow the one before."""
    services.pet_rename(pet_id=registered, new_name="Max", context=CommandContext.system())
    services.pet_rename(pet_id=registered, new_name="Rex", context=CommandContext.system())
    rows = StoredEvent.objects.filter(stream_id=registered).order_by("stream_version")
    ids = [row.transaction_id for row in rows]
    assert len(ids) == 3 and ids == sorted(set(ids))


def test_a_missing_adoption_row_is_not_needed_to_return_a_pet_adopted_elsewhere(registered):
    """A pet adopted by an event alone (imported history) has no Adoption row to mark returned."""
    pet = services.pets.load(registered)
    pet.adopt(adoption_id=uuid.uuid4(), customer_id=uuid.uuid4())
    services.pets.save(pet, metadata=META)

    services.pet_return(pet_id=registered, reason="allergies", context=CommandContext.system())

    assert PetRecord.objects.get(id=registered).status == "available"
    assert stream_version(registered) == 3

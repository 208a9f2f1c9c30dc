"""Races between commands on one pet, against the real PostgreSQL."""

import threading
import uuid

import pytest
from django.db import connection

from adoptions.models import Adoption
from events.models import OutboxMessage, StoredEvent
from tests.conftest import client_for
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db(transaction=True)


def run_at_once(count: int, request) -> list:
    """Start `count` threads that each call `request(i)` as close together as possible."""
    barrier, results = threading.Barrier(count), [None] * count

    def worker(i):
        try:
            barrier.wait(10)
            results[i] = request(i)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_twenty_concurrent_adoptions_of_one_pet_give_one_202_and_nineteen_409s(require_postgres, pet):
    clients = [client_for(CustomerFactory().user) for _ in range(20)]

    statuses = run_at_once(
        20, lambda i: clients[i].post("/api/adoptions", {"petId": str(pet.id)}, format="json").status_code
    )

    assert sorted(statuses) == [202] + [409] * 19
    versions = list(StoredEvent.objects.filter(stream_id=pet.id).values_list("stream_version", flat=True))
    assert versions == [1, 2]
    assert Adoption.objects.count() == 1
    assert OutboxMessage.objects.filter(routing_key="pet.adopted").count() == 1


def test_concurrent_renames_with_the_same_expected_version_one_wins(require_postgres, staff, pet):
    client = client_for(staff)

    statuses = run_at_once(
        5,
        lambda i: (
            client.post(
                "/api/commands/rename-pet",
                {"petId": str(pet.id), "newName": f"Name {i}", "expectedVersion": 1},
                format="json",
            ).status_code
        ),
    )

    assert sorted(statuses) == [200, 409, 409, 409, 409]
    assert StoredEvent.objects.filter(stream_id=pet.id).count() == 2


def test_concurrent_retries_with_one_idempotency_key_record_one_adoption(require_postgres, customer, pet):
    client = client_for(customer.user)
    key = str(uuid.uuid4())

    responses = run_at_once(
        8,
        lambda i: client.post(
            "/api/adoptions", {"petId": str(pet.id)}, format="json", HTTP_IDEMPOTENCY_KEY=key
        ),
    )

    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["adoptionId"] for r in responses}) == 1
    assert Adoption.objects.count() == 1


def test_a_command_with_an_idempotency_key_loads_its_pet_before_its_first_write(
    require_postgres, customer, pet, monkeypatch
):
    """Waiting for a twin must not give the transaction its id: readers follow transaction
    ids, so a command that had one before loading its pet could be read before the event it
    follows (events/store.py)."""
    from django.db import connection

    from adoptions import services

    ids_at_load = []
    load = services.pet_load

    def watched_load(pet_id):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id_if_assigned()")
            ids_at_load.append(cursor.fetchone()[0])
        return load(pet_id)

    monkeypatch.setattr(services, "pet_load", watched_load)
    client = client_for(customer.user)
    response = client.post(
        "/api/adoptions", {"petId": str(pet.id)}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )

    assert response.status_code == 202
    assert ids_at_load == [None]

"""A handler's incoming message is validated against its declared schema before any handler code.

An invalid one goes dead at once with the validation error (no retries, no half-processing).
The invalid rows here are written straight into the log, as a bug, a bad migration or a
hand-edited row would leave them: `append` itself never records an invalid event.
"""

import uuid

import pytest
from django.test import Client
from django.utils import timezone

from adoptions.models import Adoption, ShelterInventory, WelcomePackage
from events import outbox
from events.catalogue import PetRegistered
from events.delivery import redrive
from events.handlers import HANDLERS, event_handler
from events.incoming import InvalidMessage, event_from_message
from events.models import Delivery, OutboxMessage, StoredEvent
from events.relay import Relay
from petstore.celery import app
from tests.factories import UserFactory, register_pet
from tests.support.processes import celery_worker, child_env, start, stop, wait_for_ready
from tests.support.rabbit import purge_queues
from tests.support.threads import wait_until

pytestmark = pytest.mark.django_db

SHELTER = str(uuid.uuid4())
VALID_REGISTERED = {"name": "Bo", "species": "dog", "age": 3, "shelter_id": SHELTER, "photo_url": None}


@pytest.fixture(scope="module")
def _registered():
    """Register the test handler once: each registration also declares a Celery task."""
    calls, settled = [], []
    event_handler(
        name="test.recording",
        on=("PetRegistered", "PetNameChanged"),
        queue="analytics",
        on_settled=lambda delivery: settled.append(delivery.status),
    )(calls.append)
    yield HANDLERS["test.recording"], calls, settled
    del HANDLERS["test.recording"]
    app.tasks.pop("test.recording", None)  # the next registration declares its own task


@pytest.fixture
def recording_handler(_registered):
    """A handler on PetRegistered and PetNameChanged that records what reached it."""
    handler, calls, settled = _registered
    calls.clear(), settled.clear()
    return handler, calls, settled


def stored(event_type: str, payload, *, schema_version: int = 1) -> StoredEvent:
    """Write a row straight into the log, bypassing the validation `append` does."""
    return StoredEvent.objects.create(
        stream_type="pet",
        stream_id=uuid.uuid4(),
        stream_version=1,
        event_type=event_type,
        schema_version=schema_version,
        payload=payload,
        recorded_at=timezone.now(),
    )


def delivery_of(handler, row) -> Delivery:
    return Delivery.objects.get(handler=handler.name, event_id=row.event_id)


def run_task(handler, row) -> str:
    """Run the handler's Celery task as a worker would, in this process."""
    return app.tasks[handler.name].apply(args=[str(row.event_id)]).get()


def test_invalid_message_goes_dead_at_once_with_the_error_and_the_handler_never_runs(recording_handler):
    handler, calls, settled = recording_handler
    row = stored("PetNameChanged", {"old_name": "Bo", "new_name": ""})

    outcome = run_task(handler, row)

    assert outcome == "dead" and calls == [] and settled == ["dead"]  # its owner hears of it
    delivery = delivery_of(handler, row)
    assert (delivery.status, delivery.attempts) == ("dead", 1)
    assert delivery.last_error.startswith("InvalidMessage: PetNameChanged v1 does not match its schema")
    assert "new_name: String should have at least 1 character" in delivery.last_error
    assert not OutboxMessage.objects.filter(handler=handler.name).exists()  # no retry scheduled


def test_redelivered_invalid_message_stays_dead_and_is_not_retried(recording_handler):
    handler, calls, _ = recording_handler
    row = stored("PetNameChanged", {"old_name": "Bo"})

    outcomes = [run_task(handler, row) for _ in range(2)]

    assert outcomes == ["dead", "skipped"] and calls == []
    assert delivery_of(handler, row).attempts == 1


@pytest.mark.parametrize(
    "change, field",
    [
        ({"age": "3"}, "age"),  # a string is not an integer, even if it looks like one
        ({"age": 3.0}, "age"),
        ({"age": True}, "age"),
        ({"age": -1}, "age"),
        ({"species": "lizard"}, "species"),
        ({"shelter_id": "not-a-uuid"}, "shelter_id"),
        ({"name": 7}, "name"),
        ({"colour": "red"}, "colour"),  # fields the declaration does not know
        ({"shelter_id": None}, "shelter_id"),
    ],
)
def test_payloads_the_schema_refuses_are_refused_not_coerced(recording_handler, change, field):
    handler, calls, _ = recording_handler
    row = stored("PetRegistered", {**VALID_REGISTERED, **change}, schema_version=2)

    assert run_task(handler, row) == "dead" and calls == []
    assert f"PetRegistered v2 does not match its schema: {field}" in delivery_of(handler, row).last_error


def test_missing_required_field_is_named(recording_handler):
    handler, _, _ = recording_handler
    payload = {k: v for k, v in VALID_REGISTERED.items() if k != "shelter_id"}
    row = stored("PetRegistered", payload, schema_version=2)

    run_task(handler, row)

    assert "shelter_id: Field required" in delivery_of(handler, row).last_error


def test_valid_version_1_message_is_upcast_validated_and_handled(recording_handler):
    handler, calls, settled = recording_handler
    v1 = {k: v for k, v in VALID_REGISTERED.items() if k != "photo_url"}
    row = stored("PetRegistered", v1, schema_version=1)

    assert run_task(handler, row) == "succeeded"

    [received] = calls
    assert isinstance(received.event, PetRegistered) and received.event.photo_url is None
    assert str(received.event.shelter_id) == SHELTER and settled == ["succeeded"]


def test_version_newer_than_this_code_is_dead(recording_handler):
    handler, calls, _ = recording_handler
    row = stored("PetRegistered", VALID_REGISTERED, schema_version=3)

    assert run_task(handler, row) == "dead" and calls == []
    assert "PetRegistered v3: this code reads versions 1 to 2" in delivery_of(handler, row).last_error


def test_event_the_handler_does_not_subscribe_to_is_dead(recording_handler):
    handler, calls, _ = recording_handler
    row = stored("PetReturned", {"adoption_id": None, "reason": "allergies"})

    assert run_task(handler, row) == "dead" and calls == []
    assert "test.recording does not receive PetReturned" in delivery_of(handler, row).last_error


def test_a_real_step_never_half_processes_an_invalid_message(shelter):
    inventory = HANDLERS["adoptions.inventory"]
    row = stored(
        "PetRegistered", {**VALID_REGISTERED, "shelter_id": str(shelter.id), "age": "3"}, schema_version=2
    )

    assert run_task(inventory, row) == "dead"

    assert not ShelterInventory.objects.filter(shelter_id=shelter.id).exists()
    assert "age: Input should be a valid integer" in delivery_of(inventory, row).last_error


def test_an_adoption_whose_event_is_invalid_needs_attention_and_redrive_does_not_raise(pet, customer):
    welcome = HANDLERS["adoptions.welcome_package"]
    row = stored("PetAdopted", {"customer_id": str(customer.id), "shelter_id": "not-a-uuid"})
    adoption = Adoption.objects.create(
        pet_id=pet.id, customer=customer, shelter_id=pet.shelter_id, adopted_event_id=row.event_id
    )

    assert run_task(welcome, row) == "dead"
    adoption.refresh_from_db()
    assert adoption.status == Adoption.Status.NEEDS_ATTENTION
    assert not WelcomePackage.objects.filter(adoption=adoption).exists()

    assert redrive(handler=welcome.name, event_id=row.event_id) == 1  # staff retry it
    adoption.refresh_from_db()
    assert adoption.status == Adoption.Status.PROCESSING


@pytest.mark.django_db(transaction=True)
def test_a_worker_dead_letters_an_invalid_message_and_handles_the_valid_one(
    require_postgres, broker, shelter, tmp_path
):
    """Through RabbitMQ and a real worker process: the invalid event never reaches the step."""
    inventory = HANDLERS["adoptions.inventory"]
    purge_queues(broker, [inventory.queue])
    invalid = stored(
        "PetRegistered", {**VALID_REGISTERED, "shelter_id": str(shelter.id), "age": 3.5}, schema_version=2
    )
    outbox.enqueue_handler(inventory, invalid.event_id, at=timezone.now())
    valid = register_pet(shelter=shelter)  # its outbox row fans out to the same step
    Relay().drain()
    log = tmp_path / "worker.log"
    worker = start(celery_worker(queues=[inventory.queue]), env=child_env(), log=log)
    try:
        wait_for_ready(worker, log)
        settled = Delivery.objects.filter(handler=inventory.name, status__in=["succeeded", "dead"])
        wait_until(lambda: settled.count() == 2, timeout=30, what="both deliveries settled")
    finally:
        stop(worker, grace=15)

    outcomes = dict(Delivery.objects.filter(handler=inventory.name).values_list("event_id", "status"))
    valid_event = StoredEvent.objects.get(stream_id=valid.id).event_id
    assert outcomes == {invalid.event_id: "dead", valid_event: "succeeded"}
    assert ShelterInventory.objects.get(shelter_id=shelter.id).available == 1  # the valid one only


def test_the_dead_letter_shows_the_validation_error_in_the_admin(recording_handler):
    handler, _, _ = recording_handler
    row = stored("PetNameChanged", {"old_name": "Bo", "new_name": ""})
    run_task(handler, row)
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    page = client.get("/admin/events/delivery/", {"status__exact": "dead"})

    assert page.status_code == 200
    assert "does not match its schema" in page.content.decode()


# ------------------------------------------------------------------ event_from_message itself


def test_unknown_event_type_is_invalid():
    with pytest.raises(InvalidMessage, match="unknown event type 'PetTeleported'"):
        event_from_message("PetTeleported", 1, {})


def test_a_missing_upcaster_is_invalid(monkeypatch):
    from events import catalogue

    monkeypatch.delitem(catalogue.UPCASTERS, ("PetRegistered", 1))

    with pytest.raises(InvalidMessage, match="no upcaster from version 1"):
        event_from_message("PetRegistered", 1, VALID_REGISTERED)


def test_a_payload_that_is_not_an_object_is_invalid():
    with pytest.raises(InvalidMessage, match="the payload is list, not an object"):
        event_from_message("PetRegistered", 2, ["not", "an", "object"])


def test_an_upcaster_that_cannot_read_the_payload_makes_it_invalid(monkeypatch):
    from events import catalogue

    monkeypatch.setitem(catalogue.UPCASTERS, ("PetRegistered", 1), lambda payload: payload["photo"])

    with pytest.raises(InvalidMessage, match="upcasting failed: KeyError"):
        event_from_message("PetRegistered", 1, VALID_REGISTERED)


def test_a_certificate_url_without_a_scheme_is_not_a_uri():
    with pytest.raises(InvalidMessage, match="certificate_url: Value error, a URI needs a scheme"):
        event_from_message("AdoptionCompleted", 1, {"certificate_url": "certificate.pdf"})

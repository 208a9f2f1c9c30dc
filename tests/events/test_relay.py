"""The relay publishes every outbox row to the broker and marks it sent only once confirmed."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import kombu
import pytest

from events import outbox
from events.broker import UNROUTED_QUEUE, ConfirmingPublisher, broker_connection, unrouted_queue
from events.models import OutboxMessage
from tests.factories import adopt_pet, register_pet
from tests.support.rabbit import (
    bind_queue,
    declare_topology_on,
    delete_queue,
    deliveries,
    fetch_all,
)
from tests.support.threads import HeldTransaction, run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)


def outbox_rows() -> set[tuple[str, str]]:
    """Every outbox row as (event id, routing key), the key a delivery is counted under."""
    return {(str(e), k) for e, k in OutboxMessage.objects.values_list("event_id", "routing_key")}


def unsent() -> int:
    return OutboxMessage.objects.filter(published_at__isnull=True).count()


def queue_depth(url: str, queue: str) -> int:
    with broker_connection(url) as conn:
        return kombu.Queue(queue)(conn.channel()).queue_declare(passive=True).message_count


class ObservedPublisher:
    """Pass batches to a real publisher and note the outbox and the queue as each returns."""

    def __init__(self, inner: ConfirmingPublisher, *, url: str, queue: str) -> None:
        self.inner, self.url, self.queue = inner, url, queue
        self.at_confirm: list[dict] = []

    def publish(self, messages):
        result = self.inner.publish(messages)
        self.at_confirm.append(
            {
                "confirmed": len(result.confirmed),
                "already_marked": OutboxMessage.objects.filter(published_at__isnull=False).count(),
                "in_queue": queue_depth(self.url, self.queue),
            }
        )
        return result

    def keep_alive(self) -> None:
        self.inner.keep_alive()

    def close(self) -> None:
        self.inner.close()


# ---------------------------------------------------------------- embedded broker


def test_relay_drains_the_outbox_through_the_embedded_filesystem_broker(
    embedded_broker, make_relay, shelter, customer
):
    bind_queue(embedded_broker, "test.pets", "pet.#")
    pet = register_pet(shelter=shelter)
    adopt_pet(pet=pet, customer=customer)

    sent = make_relay().drain(timeout=10)

    assert sent == 3 and unsent() == 0
    messages = fetch_all(embedded_broker, "test.pets", at_least=3, timeout=1)
    assert sorted(m.delivery_info["routing_key"] for m in messages) == [
        "pet.adopted",
        "pet.available",
        "pet.registered",
    ]
    assert set(deliveries(messages)) == outbox_rows()
    adopted = next(m for m in messages if m.delivery_info["routing_key"] == "pet.adopted")
    assert adopted.headers["event-type"] == "PetAdopted"
    assert adopted.payload["petId"] == str(pet.id)


def test_embedded_broker_keeps_messages_no_queue_is_bound_for(embedded_broker, make_relay, shelter):
    register_pet(shelter=shelter)

    sent = make_relay().drain(timeout=10)

    assert sent == 2 and unsent() == 0
    kept = fetch_all(embedded_broker, UNROUTED_QUEUE, at_least=2, timeout=1)
    assert set(deliveries(kept)) == outbox_rows()


# ---------------------------------------------------------------- RabbitMQ


def test_relay_publishes_persistent_json_messages_with_event_headers(
    broker, events_queue, make_relay, shelter, customer
):
    pet = register_pet(shelter=shelter, name="Nova")
    started = adopt_pet(pet=pet, customer=customer)
    rows = {row.routing_key: row for row in OutboxMessage.objects.all()}
    publisher = ObservedPublisher(ConfirmingPublisher(broker), url=broker, queue=events_queue)

    sent = make_relay(publisher).drain(timeout=10)

    assert sent == 3
    # When the broker confirmed, the messages were queued and no row was marked yet.
    assert publisher.at_confirm == [{"confirmed": 3, "already_marked": 0, "in_queue": 3}]
    assert unsent() == 0
    consumed = fetch_all(broker, events_queue, at_least=3)
    messages = {m.delivery_info["routing_key"]: m for m in consumed}
    assert len(consumed) == 3
    assert set(messages) == {"pet.registered", "pet.available", "pet.adopted"}
    for key, message in messages.items():
        row = rows[key]
        assert message.properties["delivery_mode"] == 2
        assert message.content_type == "application/json"
        assert message.properties["message_id"] == str(row.event_id)
        assert message.headers["event-type"] == row.message_name
        assert message.headers["event-id"] == str(row.event_id)
        assert datetime.fromisoformat(message.headers["timestamp"]) == row.created_at
        assert json.loads(message.body) == row.payload
    adopted = json.loads(messages["pet.adopted"].body)
    assert adopted == {
        "petId": str(pet.id),
        "adoptionId": str(started.adoption.id),
        "customerId": str(customer.id),
        "shelterId": str(shelter.id),
        "timestamp": rows["pet.adopted"].created_at.isoformat(),
    }
    assert json.loads(messages["pet.registered"].body)["name"] == "Nova"


def test_message_no_queue_is_bound_for_lands_in_the_unrouted_queue_and_is_marked_sent(
    broker, make_relay, shelter
):
    register_pet(shelter=shelter)  # nothing in the vhost listens to pet.*

    sent = make_relay(ConfirmingPublisher(broker)).drain(timeout=10)

    assert sent == 2 and unsent() == 0
    kept = deliveries(fetch_all(broker, UNROUTED_QUEUE, at_least=2))
    assert {key: kept[key] for key in outbox_rows()} == {key: 1 for key in outbox_rows()}


def test_the_unrouted_queue_keeps_only_the_newest_events_up_to_its_limit(
    broker, make_relay, shelter, settings
):
    """Until a service binds to petstore.events every event is unrouted: the queue must not grow
    for ever (the stream keeps them all)."""
    delete_queue(broker, UNROUTED_QUEUE)  # declared with the default limits: redeclared smaller
    settings.EVENTS_UNROUTED_MAX_LENGTH = 2
    try:
        register_pet(shelter=shelter, name="First")
        second = register_pet(shelter=shelter, name="Second")

        sent = make_relay(ConfirmingPublisher(broker)).drain(timeout=10)

        kept = fetch_all(broker, UNROUTED_QUEUE, at_least=2)
    finally:
        delete_queue(broker, UNROUTED_QUEUE)
        settings.EVENTS_UNROUTED_MAX_LENGTH = 100_000
        declare_topology_on(broker)  # petstore.unrouted back as the other tests expect it
    assert sent == 4
    # The oldest two, First's pet.registered and pet.available, were dropped first.
    assert sorted(m.delivery_info["routing_key"] for m in kept) == ["pet.available", "pet.registered"]
    assert {m.headers["stream-id"] for m in kept} == {str(second.id)}


def test_the_unrouted_queue_is_declared_with_a_retention_and_a_length_limit(settings):
    settings.EVENTS_UNROUTED_KEEP_HOURS, settings.EVENTS_UNROUTED_MAX_LENGTH = 1.5, 10
    assert unrouted_queue().queue_arguments == {"x-message-ttl": 5_400_000, "x-max-length": 10}

    settings.EVENTS_UNROUTED_KEEP_HOURS, settings.EVENTS_UNROUTED_MAX_LENGTH = 0, 0
    assert not unrouted_queue().queue_arguments


def test_message_even_the_alternate_exchange_cannot_route_is_returned_and_stays_unsent(
    broker, make_relay, shelter
):
    relay = make_relay(ConfirmingPublisher(broker))
    register_pet(shelter=shelter)
    relay.drain(timeout=10)  # connected, topology declared, first pet published
    delete_queue(broker, UNROUTED_QUEUE)  # now the alternate exchange leads nowhere either
    try:
        register_pet(shelter=shelter)

        sent = relay.run_once()
    finally:
        declare_topology_on(broker)  # petstore.unrouted back, for the tests after this one

    assert sent == 0
    returned = OutboxMessage.objects.filter(published_at__isnull=True)
    assert returned.count() == 2
    for row in returned:
        assert row.attempts == 1 and row.last_error.startswith("unroutable (312 NO_ROUTE)")
        assert row.available_at > row.created_at  # tried again later, with backoff


def test_three_relays_publish_every_row_exactly_once(
    broker, events_queue, make_relay, require_postgres, shelter
):
    for number in range(500):
        register_pet(shelter=shelter, name=f"Pet {number}")  # each: PetRegistered + PetAvailable
    expected = outbox_rows()
    assert len(expected) == 1000

    def relay_until_done() -> int:
        return make_relay(ConfirmingPublisher(broker), batch_size=20).drain(timeout=60)

    published = run_concurrently([relay_until_done] * 3, timeout=90)

    assert sum(published) == 1000 and unsent() == 0
    assert sum(1 for count in published if count) >= 2, published  # they really shared the work
    counted = deliveries(fetch_all(broker, events_queue, at_least=1000, timeout=20))
    assert set(counted) == expected  # nothing lost, nothing unexpected
    assert set(counted.values()) == {1}  # and no row published twice
    assert outbox.backlog().pending == 0


def test_a_claim_skips_rows_another_relay_holds_and_leases_the_rest_in_order(require_postgres, shelter):
    for name in ("A", "B", "C"):
        register_pet(shelter=shelter, name=name)  # two outbox rows each
    ids = sorted(OutboxMessage.objects.values_list("id", flat=True))
    held = ids[:2]
    other_relay = HeldTransaction(lambda: list(OutboxMessage.objects.select_for_update().filter(id__in=held)))
    other_relay.start()
    assert other_relay.did_work.wait(10)
    try:
        claim = outbox.claim_batch(limit=10, lease=timedelta(seconds=30))
        again = outbox.claim_batch(limit=10, lease=timedelta(seconds=30))
    finally:
        other_relay.finish()

    assert [m.id for m in claim.messages] == ids[2:]
    assert {m.claim_token for m in claim.messages} == {claim.token}
    assert all(m.claimed_until > m.created_at for m in claim.messages)
    assert again.messages == []  # leased: nobody else gets them until the lease runs out


def test_an_idle_relay_keeps_its_broker_connection_alive(broker, shelter, settings):
    """RabbitMQ closes a connection that misses two heartbeats; between batches the relay's
    loop sends them (keep_alive), so the batch after a quiet spell goes out on the same one."""
    settings.CELERY_BROKER_HEARTBEAT = 1  # the broker gives up on silence after about 2 s
    publisher = ConfirmingPublisher(broker)
    try:
        register_pet(shelter=shelter)
        first = publisher.publish(list(OutboxMessage.objects.all()))
        connection = publisher.connection
        for _ in range(16):  # 4 s of quiet, kept alive as the relay's loop does
            time.sleep(0.25)
            publisher.keep_alive()
        second = publisher.publish(list(OutboxMessage.objects.all()))
        same_connection = publisher.connection is connection
    finally:
        publisher.close()

    assert not first.connection_lost and len(first.confirmed) == 2
    assert not second.connection_lost and len(second.confirmed) == 2
    assert same_connection  # no reconnect was needed


def test_without_heartbeats_an_idle_connection_is_closed_by_the_broker(broker, shelter, settings):
    """What keep_alive prevents: the same quiet spell, no heartbeats sent, the batch fails."""
    settings.CELERY_BROKER_HEARTBEAT = 1
    publisher = ConfirmingPublisher(broker)
    try:
        register_pet(shelter=shelter)
        assert not publisher.publish(list(OutboxMessage.objects.all())).connection_lost
        time.sleep(4)
        assert publisher.publish(list(OutboxMessage.objects.all())).connection_lost
    finally:
        publisher.close()

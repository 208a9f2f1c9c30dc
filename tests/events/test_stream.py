"""Every event also goes to a RabbitMQ stream, which consume_stream replays from any offset."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import kombu
import pytest
from amqp.exceptions import PreconditionFailed
from django.core.management import CommandError, call_command
from django.utils import timezone

from events.broker import UNROUTED_QUEUE, broker_connection, envelopes_for, events_stream
from events.models import OutboxMessage
from events.stream import check_offset
from tests.factories import adopt_pet, register_pet
from tests.support.rabbit import deliveries, fetch_all

pytestmark = pytest.mark.django_db(transaction=True)


def consume(*options: str) -> list[dict]:
    """Run consume_stream; return the JSON lines it printed."""
    out = io.StringIO()
    call_command("consume_stream", *options, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def event_rows() -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(handler="").order_by("id"))


@pytest.fixture
def adopted_pet(event_stream, make_relay, shelter, customer):
    """A pet registered and adopted, its three events relayed (to the stream too)."""
    pet = register_pet(shelter=shelter, name="Nova")
    adopt_pet(pet=pet, customer=customer)
    assert make_relay().drain(timeout=10) == 3
    return pet


# ---------------------------------------------------------------- RabbitMQ


def test_stream_replays_every_event_in_order_with_its_offset(adopted_pet):
    read = consume("--from-beginning")

    assert [m["offset"] for m in read] == [0, 1, 2]
    assert [(m["routingKey"], m["eventType"]) for m in read] == [
        ("pet.registered", "PetRegistered"),
        ("pet.available", "PetAvailable"),
        ("pet.adopted", "PetAdopted"),
    ]
    for message, row in zip(read, event_rows(), strict=True):
        assert message["eventId"] == str(row.event_id)
        assert message["timestamp"] == row.headers["timestamp"]
        assert message["payload"] == row.payload
    assert read[2]["payload"]["petId"] == str(adopted_pet.id)


def test_offset_skips_the_messages_before_it(adopted_pet):
    read = consume("--offset", "1")

    assert [(m["offset"], m["routingKey"]) for m in read] == [(1, "pet.available"), (2, "pet.adopted")]


def test_type_keeps_only_that_routing_key(adopted_pet):
    read = consume("--from-beginning", "--type", "pet.adopted")

    assert [(m["offset"], m["eventType"]) for m in read] == [(2, "PetAdopted")]


def test_limit_stops_after_that_many(adopted_pet):
    assert [m["offset"] for m in consume("--from-beginning", "--limit", "2")] == [0, 1]


def test_interval_back_from_now_finds_new_events_and_a_future_time_none(adopted_pet):
    an_hour_ahead = (timezone.now() + timedelta(hours=1)).isoformat()

    assert [m["offset"] for m in consume("--from", "1h")] == [0, 1, 2]
    assert consume("--from-time", an_hour_ahead) == []


def test_next_reads_only_what_arrives_after_subscribing(adopted_pet):
    assert consume() == []


def test_stream_keeps_messages_after_they_are_read(adopted_pet):
    first = consume("--from-beginning")

    assert consume("--from-beginning") == first and len(first) == 3


def test_unroutable_event_still_lands_in_the_unrouted_queue_and_the_stream(
    broker, event_stream, make_relay, shelter
):
    register_pet(shelter=shelter)  # nothing in the vhost listens to pet.*

    sent = make_relay().drain(timeout=10)

    assert sent == 2
    rows = {(str(row.event_id), row.routing_key) for row in event_rows()}
    kept = deliveries(fetch_all(broker, UNROUTED_QUEUE, at_least=2))
    assert {key: kept[key] for key in rows} == {key: 1 for key in rows}
    assert {(m["eventId"], m["routingKey"]) for m in consume("--from-beginning")} == rows


def test_event_the_stream_cannot_take_stays_unsent(broker, event_stream, make_relay, shelter):
    relay = make_relay()
    register_pet(shelter=shelter)
    relay.drain(timeout=10)  # connected, topology declared, first pet published
    with broker_connection(broker) as conn:
        kombu.Queue(event_stream)(conn.channel()).delete()  # the log exchange now leads nowhere
    register_pet(shelter=shelter)

    sent = relay.run_once()

    assert sent == 0
    unsent = OutboxMessage.objects.filter(published_at__isnull=True)
    assert unsent.count() == 2
    assert all(row.last_error.startswith("unroutable (312 NO_ROUTE) on test.log.") for row in unsent)


def test_relay_declares_the_stream_with_the_retention_from_settings(
    broker, event_stream, make_relay, settings, shelter
):
    settings.EVENTS_STREAM_MAX_AGE = "7D"
    register_pet(shelter=shelter)

    make_relay().drain(timeout=10)  # connects, declares its topology, publishes

    def declare_stream(max_age: str) -> None:
        with broker_connection(broker) as conn:
            arguments = {"x-queue-type": "stream", "x-max-age": max_age}
            kombu.Queue(event_stream, durable=True, queue_arguments=arguments)(conn.channel()).declare()

    # The broker refuses a declaration whose arguments differ from the queue's own.
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-max-age'"):
        declare_stream("30D")
    declare_stream("7D")


# ---------------------------------------------------------------- no broker needed


def test_stream_queue_asks_for_the_retention_from_settings(settings):
    settings.EVENTS_STREAM_MAX_AGE = "12h"

    queue = events_stream()

    assert queue.name == settings.EVENTS_STREAM_NAME and queue.durable
    assert queue.queue_arguments == {"x-queue-type": "stream", "x-max-age": "12h"}
    assert (queue.exchange.name, queue.exchange.type) == (settings.EVENTS_STREAM_EXCHANGE, "fanout")


def test_stream_envelope_is_the_event_again_on_the_log_exchange(settings, shelter):
    register_pet(shelter=shelter)
    row = event_rows()[0]

    event, stream, *tasks = envelopes_for(row, stream=True)

    assert event.exchange == settings.EVENTS_EXCHANGE and stream.exchange == settings.EVENTS_STREAM_EXCHANGE
    assert (stream.routing_key, stream.body) == (event.routing_key, event.body)
    assert stream.properties == event.properties  # headers event-type, event-id, timestamp, …
    without_stream = [e.exchange for e in envelopes_for(row)]  # what the embedded broker gets
    assert without_stream == [event.exchange] + [t.exchange for t in tasks]


@pytest.mark.parametrize(
    "options, error",
    [
        (["--from", "100"], "not first, last, next or an interval"),
        (["--from-time", "2026-03-13T10:00:00"], "needs a time zone"),
        (["--offset", "-1"], "0 or more"),
    ],
)
def test_start_the_broker_would_refuse_is_refused_first(options, error):
    with pytest.raises(CommandError, match=error):
        consume(*options)


def test_embedded_broker_has_no_stream(embedded_broker):
    with pytest.raises(CommandError, match="needs RabbitMQ"):
        consume("--from-beginning")


@pytest.mark.parametrize("interval, sent", [("7d", "7D"), ("7D", "7D"), ("24h", "24h"), ("30m", "30m")])
def test_days_are_read_in_either_case_as_the_other_commands_read_them(interval, sent):
    """replay_events --since and events --since take 7d; RabbitMQ spells days D."""
    assert check_offset(interval) == sent

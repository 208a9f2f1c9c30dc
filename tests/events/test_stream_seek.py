"""Where a reader of the RabbitMQ event stream starts: a past time, the last chunk, what comes next.

RabbitMQ seeks by chunk, not by message: a chunk is what the stream wrote in one go (here
roughly one relay publish) and carries the time it was written. A time seek starts at the
first chunk written at or after that time, which AMQP 0.9.1 gives in whole seconds (the
broker reads 10:00:01.7 as 10:00:01). So the bursts below are published apart, more than a
second from the time sought on either side: then every older chunk was written before the
truncated time and every newer one after it, and the answer is exact, not approximate.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime

import kombu
import pytest
from django.core.management import call_command
from django.utils import timezone

from adoptions import services
from adoptions.models import PetRecord
from events.context import CommandContext
from events.models import OutboxMessage
from events.relay import Relay
from events.stream import read_stream
from tests.factories import adopt_pet, register_pet

pytestmark = pytest.mark.django_db(transaction=True)

CONTEXT = CommandContext.system(causation_id="test")
APART = 1.6  # seconds between a burst and the time sought: more than the second RabbitMQ drops
QUIET = 1.0  # seconds a reader waits for more before it stops
NEW_YORK = timezone.get_fixed_timezone(-5 * 60)


@pytest.fixture
def relay(event_stream, make_relay) -> Relay:
    return make_relay()


def burst(relay: Relay, command: Callable[[], object]) -> list[str]:
    """Run the command, relay its events to the stream; return their event ids, in order."""
    before = OutboxMessage.objects.order_by("-id").values_list("id", flat=True).first() or 0
    command()
    relay.drain(timeout=10)
    rows = OutboxMessage.objects.filter(handler="", id__gt=before).order_by("id")
    assert rows and all(row.published_at for row in rows), "the relay did not publish the burst"
    return [str(row.event_id) for row in rows]


def consume(*options: str) -> list[str]:
    """Run consume_stream; return the event ids it printed."""
    out = io.StringIO()
    call_command("consume_stream", *options, stdout=out)
    return [json.loads(line)["eventId"] for line in out.getvalue().splitlines()]


def read(offset, **options) -> list[str]:
    return [message.event_id for message in read_stream(offset, idle_seconds=QUIET, **options)]


@pytest.fixture
def two_bursts(relay, shelter, customer) -> tuple[list[str], list[str], datetime]:
    """(older ids, newer ids, a time between them): each burst a pet registered and adopted,
    published more than a second before and after that time."""

    def registered_and_adopted(name: str) -> Callable[[], None]:
        return lambda: adopt_pet(pet=register_pet(shelter=shelter, name=name), customer=customer)

    older = burst(relay, registered_and_adopted("Older"))
    time.sleep(APART)
    between = timezone.now()
    time.sleep(APART)
    newer = burst(relay, registered_and_adopted("Newer"))
    return older, newer, between


def test_from_time_between_two_bursts_reads_all_of_the_newer_and_none_of_the_older(two_bursts):
    older, newer, between = two_bursts

    by_command = consume("--from-time", between.astimezone(NEW_YORK).isoformat())  # …-05:00
    by_function = read(between)  # in UTC

    assert len(older) == len(newer) == 3  # registered, available, adopted
    assert by_command == by_function == newer
    assert consume("--from-beginning") == older + newer  # the older burst is still kept


def test_from_time_with_a_type_reads_only_the_newer_events_of_that_type(two_bursts):
    _, newer, between = two_bursts

    adopted = consume("--from-time", between.isoformat(), "--type", "pet.adopted")

    assert adopted == newer[-1:]  # the newer burst's PetAdopted, the older one's left out
    assert read(between, routing_keys={"pet.adopted", "pet.registered"}) == [newer[0], newer[-1]]


def test_last_starts_at_the_last_chunk_and_first_at_the_oldest_message(relay, two_bursts):
    older, newer, _ = two_bursts
    pet = PetRecord.objects.get(name="Newer")
    time.sleep(0.5)  # the rename, published on its own, is a chunk of its own
    [renamed] = burst(relay, lambda: services.pet_rename(pet_id=pet.id, new_name="Lone", context=CONTEXT))

    last, first = read("last"), read("first")

    assert last == [renamed]  # the newest message, not the oldest ones
    assert first == older + newer + [renamed]


def test_next_reads_only_what_is_published_after_subscribing(relay, shelter, monkeypatch):
    before = burst(relay, lambda: register_pet(shelter=shelter, name="Before"))
    subscribed = noticing_subscriptions(monkeypatch)
    got, errors = [], []

    def read_from_next() -> None:
        messages = read_stream("next", follow=True)  # however long the burst takes to come
        try:
            for message in messages:
                got.append(message.event_id)
                if len(got) == 2:  # a registration's two events: anything older comes first
                    break
        except BaseException as error:  # noqa: B036 - reported to the test's thread below
            errors.append(error)
        finally:
            messages.close()

    reader = threading.Thread(target=read_from_next, daemon=True)
    reader.start()
    assert subscribed.wait(10), "the reader never subscribed"
    after = burst(relay, lambda: register_pet(shelter=shelter, name="After"))
    reader.join(15)

    assert not reader.is_alive() and not errors, errors
    assert len(after) == 2 and got == after and not set(got) & set(before)


def noticing_subscriptions(monkeypatch) -> threading.Event:
    """An event set once a kombu consumer's subscription is confirmed by the broker (the
    stream then knows where "next" is); a stream's consumers show in no passive declare."""
    subscribed, consume = threading.Event(), kombu.Consumer.consume

    def consume_then_tell(self, *args, **kwargs):
        consume(self, *args, **kwargs)  # basic.consume, waiting for consume-ok
        subscribed.set()

    monkeypatch.setattr(kombu.Consumer, "consume", consume_then_tell)
    return subscribed

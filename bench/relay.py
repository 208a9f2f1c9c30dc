"""Figure 3: outbox rows published to RabbitMQ with publisher confirms, messages per second.

Ours: events.relay.Relay(ConfirmingPublisher).drain() over an outbox filled with PetNameChanged
events (one message each): claim a batch, publish it, wait for the confirms, mark it sent.
Reference: the same AMQP messages (events.broker.envelopes_for: same bodies, properties,
routing keys, and the stream copy of each event when the stream is on, as the relay sends it;
same batch size) published with raw py-amqp and batched confirms, without the database.
A third variant runs the relay with 100,000 already published rows left in the table, as a
running system has them (published rows are never deleted). A queue bound to `pet.#` makes
every message routed; its depth is checked after each round, then purged.
"""

from __future__ import annotations

import time
import uuid

from django.conf import settings

from . import rabbit
from .harness import Bench, Figure, Goal, log, pet_repository

QUEUE = "bench.relay"
SIDES = ["ours", "ref", "aged"]  # aged: ours, with KEPT_ROWS published rows left in the table
KEPT_ROWS = 100_000
REFERENCE = "raw py-amqp publish of the same AMQP messages, batched confirms, no database"


def run(bench: Bench) -> list[Figure]:
    count = int(bench.scale(10000, 3000))
    rounds = int(bench.scale(2, 1))
    rabbit.bind_queue(bench.broker_url, QUEUE, "pet.#")
    elapsed = dict.fromkeys(SIDES, 0.0)
    sent = dict.fromkeys(SIDES, 0)
    notes: list[str] = []
    try:
        for index in range(rounds):
            for side in SIDES if index % 2 == 0 else list(reversed(SIDES)):
                messages = _refill_outbox(count, kept=KEPT_ROWS if side == "aged" else 0)
                log(f"relay: round {index + 1}, {side}, {len(messages)} messages")
                start = time.perf_counter()
                published = _raw_publish(bench.broker_url, messages) if side == "ref" else _relay_drain()
                elapsed[side] += time.perf_counter() - start
                sent[side] += published
                depth = rabbit.queue_depth(bench.broker_url, QUEUE)
                if published != count or depth != count:
                    note = f"round {index + 1} {side}: {published} confirmed, {depth} queued"
                    notes.append(f"{note}, of {count}")
                rabbit.purge(bench.broker_url, QUEUE)
    finally:
        rabbit.delete_queue(bench.broker_url, QUEUE)
    rate = {side: sent[side] / elapsed[side] for side in SIDES}
    batch = settings.RELAY_BATCH_SIZE
    notes.append(f"{count:,} messages per round, batch size {batch}, {rounds} round(s) each")
    return [
        Figure(
            "relay outbox -> RabbitMQ (confirms)",
            rate["ours"],
            "msg/s",
            rate["ref"],
            REFERENCE,
            Goal("ratio", ">=", 0.5),
            notes,
        ),
        Figure(
            f"relay, {KEPT_ROWS:,} published rows kept",
            rate["aged"],
            "msg/s",
            rate["ref"],
            REFERENCE,
            notes=["the same relay with the published rows of a running system still in event_outbox"],
        ),
    ]


def _relay_drain() -> int:
    from events.broker import ConfirmingPublisher
    from events.relay import Relay

    relay = Relay(ConfirmingPublisher())
    try:
        return relay.drain(timeout=300)
    finally:
        relay.publisher.close()


def _raw_publish(url: str, messages: list) -> int:
    publisher = rabbit.BatchConfirmPublisher(url)
    try:
        size = settings.RELAY_BATCH_SIZE
        for start in range(0, len(messages), size):
            publisher.publish_batch(messages[start : start + size])
        return len(messages) - publisher.nacked
    finally:
        publisher.close()


def _refill_outbox(count: int, *, kept: int = 0) -> list:
    """Empty the outbox, append `count` rename events (100 per save), add `kept` published rows."""
    from django.db import connection, transaction

    from adoptions.domain import Pet
    from events.catalogue import Species
    from events.context import CommandContext
    from events.models import OutboxMessage

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE event_outbox")
    pets = pet_repository()
    metadata = CommandContext.system().as_metadata()
    herd = [
        Pet.register(pet_id=uuid.uuid4(), name="Pet", species=Species.DOG, age=2, shelter_id=uuid.uuid4())
        for _ in range(10)
    ]
    for pet in herd:
        with transaction.atomic():
            pets.save(pet, metadata=metadata)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE event_outbox")  # the registrations' own messages are not counted
    for index in range(count // 100):
        pet = herd[index % len(herd)]
        for _ in range(100):
            pet.rename(new_name=f"Pet {pet.version + 1}")
        with transaction.atomic():
            pets.save(pet, metadata=metadata)
    if kept:
        _add_published_rows(kept)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE event_outbox")
    return list(OutboxMessage.objects.filter(published_at__isnull=True).order_by("id"))


def _add_published_rows(count: int) -> None:
    """Copy a pending row `count` times as already published rows (new event ids)."""
    from django.db import connection

    from events.models import OutboxMessage

    fields = [f.column for f in OutboxMessage._meta.concrete_fields if f.column != "id"]
    values = {
        "event_id": "gen_random_uuid()",
        "published_at": "now()",
        "claim_token": "NULL",
        "claimed_until": "NULL",
    }
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO event_outbox ({', '.join(map(quote, fields))}) "
        f"SELECT {', '.join(values.get(c, quote(c)) for c in fields)} "
        "FROM (SELECT * FROM event_outbox ORDER BY id LIMIT 1) AS template, generate_series(1, %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [count])

"""Figure 4: commit-to-consume latency at a steady 200 events/s.

Four producer processes each rename their own pets at 50 commands/s (open loop), one
PetNameChanged per transaction through AggregateRepository(Pet).save (event, outbox row,
NOTIFY), and record the wall time right after COMMIT, keyed by the event's log position.
Ours: the relay runs as `manage.py relay_outbox` (LISTEN/NOTIFY wake-ups) and a consumer
process on a queue bound to `pet.#` records when each message arrives (`position` header).
Reference: the same commands, each followed by a direct publish from the producer right
after its commit (no outbox, no confirms): the broker's own share of the delay.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import uuid
from dataclasses import dataclass, field

from .harness import (
    Bench,
    Figure,
    Goal,
    abba,
    django_child_setup,
    log,
    percentile,
    pet_repository,
    run_together,
)
from .stack import RelayProcess

QUEUE = "bench.latency"
RATE = 200.0
PRODUCERS = 4
PETS_PER_PRODUCER = 15
REFERENCE = "producer publishes each event itself right after COMMIT (py-amqp, no outbox, no confirms)"


def run(bench: Bench) -> list[Figure]:
    from . import rabbit

    rounds, seconds = int(bench.scale(2, 1)), bench.scale(10, 6)
    rabbit.bind_queue(bench.broker_url, QUEUE, "pet.#")
    ctx = multiprocessing.get_context("spawn")
    consumer = Consumer(ctx, bench.broker_url)
    commits = {"ours": Production(), "ref": Production()}
    try:
        for index, side in abba(rounds):
            log(f"latency: round {index + 1}, {side}, {RATE:.0f} events/s for {seconds:.0f} s")
            if side == "ours":
                with RelayProcess():
                    _probe_commit()  # the relay is warm: its first publish is not counted
                    _wait_for_empty_outbox(timeout=30)
                    commits[side] += _produce(seconds, None)
                    _wait_for_empty_outbox(timeout=15)
            else:
                commits[side] += _produce(seconds, bench.broker_url)
                _truncate_outbox()  # never published: the next relay must not send them late
            log(f"latency: {side} so far: {commits[side].seconds:.1f} s of producing")
        arrivals = consumer.stop()
    finally:
        consumer.terminate()
        rabbit.delete_queue(bench.broker_url, QUEUE)
    return _figures(commits, arrivals)


def _figures(commits: dict[str, Production], arrivals: dict[int, float]) -> list[Figure]:
    latency, notes = {}, []
    for side, production in commits.items():
        rows = production.commits
        samples = [arrivals[pos] - committed for pos, committed in rows if pos in arrivals]
        latency[side] = [s * 1000 for s in samples]
        missing = len(rows) - len(samples)
        notes.append(
            f"{side}: {len(rows)} commits in {production.seconds:.1f} s "
            f"({len(rows) / production.seconds:.0f}/s achieved), {missing} never consumed, "
            f"p99.9 {percentile(latency[side], 99.9):.1f} ms, "
            f"max {max(latency[side], default=float('nan')):.1f} ms"
        )
    ours, ref = latency["ours"], latency["ref"]
    return [
        Figure(
            "commit->consume p50 @200 events/s",
            percentile(ours, 50),
            "ms",
            percentile(ref, 50),
            REFERENCE,
        ),
        Figure(
            "commit->consume p99 @200 events/s",
            percentile(ours, 99),
            "ms",
            percentile(ref, 99),
            REFERENCE,
            Goal("value", "<=", 100, "ms"),
            notes,
        ),
    ]


# ----------------------------------------------------------------------------- producers


@dataclass
class Production:
    commits: list[tuple[int, float]] = field(default_factory=list)  # (log position, commit time)
    seconds: float = 0.0

    def __iadd__(self, other: Production) -> Production:
        self.commits += other.commits
        self.seconds += other.seconds
        return self


def _produce(seconds: float, direct_url: str | None) -> Production:
    rate = RATE / PRODUCERS
    args = [(rate, seconds, direct_url)] * PRODUCERS
    out = run_together(_producer, args, timeout=seconds * 3)
    return Production([row for rows, _ in out for row in rows], max(elapsed for _, elapsed in out))


def _producer(rate: float, seconds: float, direct_url: str | None):
    """Register this producer's own pets; return the paced loop (open loop: never waits)."""
    command = _rename_command(direct_url)
    command(0)

    def loop() -> tuple[list[tuple[int, float]], float]:
        rows, start = [], time.perf_counter()
        for slot in range(1, int(rate * seconds) + 1):
            time.sleep(max(0.0, start + slot / rate - time.perf_counter()))
            rows.append(command(slot))
        return rows, time.perf_counter() - start

    return loop


def _rename_command(direct_url: str | None):
    """Return a function that renames the next pet and returns (position, commit wall time)."""
    import json

    import amqp
    from django.conf import settings

    from events.context import CommandContext

    from . import rabbit

    pets = pet_repository()
    herd = [_register_pet(pets) for _ in range(PETS_PER_PRODUCER)]
    channel = rabbit.connect(direct_url).channel() if direct_url else None

    def command(slot: int) -> tuple[int, float]:
        pet = herd[slot % len(herd)]
        pet.rename(new_name=f"Name {pet.version + 1}")
        # As the commands save: one statement, committed on its own, so it has committed when
        # it returns.
        rows = pets.save(pet, metadata=CommandContext.system().as_metadata())
        committed_at = time.time()
        position = rows[-1].position
        if channel is not None:
            body = json.dumps({"petId": str(pet.id), "version": pet.version})
            message = amqp.Message(body, application_headers={"position": position})
            channel.basic_publish(message, settings.EVENTS_EXCHANGE, routing_key="pet.renamed")
        return position, committed_at

    return command


def _register_pet(pets):
    from django.db import transaction

    from adoptions.domain import Pet
    from events.catalogue import Species
    from events.context import CommandContext

    pet = Pet.register(
        pet_id=uuid.uuid4(), name="Name 1", species=Species.CAT, age=1, shelter_id=uuid.uuid4()
    )
    with transaction.atomic():
        pets.save(pet, metadata=CommandContext.system().as_metadata(), expected_version=0)
    return pet


def _truncate_outbox() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE event_outbox")


def _wait_for_empty_outbox(timeout: float) -> None:
    from events.models import OutboxMessage

    deadline = time.monotonic() + timeout
    while OutboxMessage.objects.filter(published_at__isnull=True).exists():
        if time.monotonic() > deadline:
            log("latency: the relay did not drain the outbox in time; unsent events are missing")
            return
        time.sleep(0.1)


# ----------------------------------------------------------------------------- consumer


def _probe_commit() -> None:
    _register_pet(pet_repository())


class Consumer:
    """A process that records when each message arrives, by its `position` header."""

    def __init__(self, ctx, url: str) -> None:
        self.stop_event, self.results, ready = ctx.Event(), ctx.Queue(), ctx.Event()
        self.process = ctx.Process(
            target=_consume, args=(url, self.stop_event, ready, self.results), daemon=True
        )
        self.process.start()
        if not ready.wait(timeout=60):
            raise RuntimeError("the consumer did not start")

    def stop(self) -> dict[int, float]:
        time.sleep(0.5)  # let the last messages arrive
        self.stop_event.set()
        try:
            arrivals = self.results.get(timeout=60)
        except queue.Empty:
            raise RuntimeError("the consumer sent no results") from None
        self.process.join(timeout=10)
        return arrivals

    def terminate(self) -> None:
        if self.process.is_alive():
            self.process.terminate()


def _consume(url, stop_event, ready, results) -> None:

    django_child_setup()
    from . import rabbit

    arrivals: dict[int, float] = {}

    def on_message(message) -> None:
        now = time.time()
        position = (message.properties.get("application_headers") or {}).get("position")
        if position is not None:
            arrivals.setdefault(int(position), now)  # a redelivery must not move the first arrival

    connection = rabbit.connect(url)
    channel = connection.channel()
    channel.basic_consume(QUEUE, callback=on_message, no_ack=True)
    ready.set()
    while not stop_event.is_set():
        try:
            connection.drain_events(timeout=0.2)
        except TimeoutError:
            pass
    connection.close()
    results.put(arrivals)

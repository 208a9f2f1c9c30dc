"""Figure 2a: events appended per second, one event per command with its outbox rows.

Ours: AggregateRepository(Pet).save of a newly registered pet, outside a transaction as the
commands call it (one PetRegistered event and its outbox rows for pet.registered and
pet.available in one statement, and the NOTIFY on commit). Reference: the eventsourcing
library saving one new aggregate (one event) per call on the same PostgreSQL. Each writer is
a process with its own connection; all writers of a measurement start together and run for
the same time.
"""

from __future__ import annotations

import time
import uuid
from typing import NamedTuple

from .harness import Bench, Figure, Goal, log, pet_repository, run_together
from .stack import machine_busy, proc_stat

CONFIGS = [("ours", 1), ("es", 1), ("ours", 4), ("es", 4)]


class Measured(NamedTuple):
    """One configuration's round: its writers together."""

    events: int
    seconds: float
    cpu_seconds: float  # the writers' own, summed
    busy: float  # the share of the machine's CPU time that was busy meanwhile


def run(bench: Bench) -> list[Figure]:
    rounds = int(bench.scale(2, 1))
    seconds = bench.scale(5, 3)
    es_env = _es_tables_created(bench.es_env())
    totals: dict[tuple[str, int], list[Measured]] = {c: [] for c in CONFIGS}
    for index in range(rounds):
        order = CONFIGS if index % 2 == 0 else list(reversed(CONFIGS))
        for side, writers in order:
            log(f"append: round {index + 1}, {side}, {writers} writer(s)")
            totals[(side, writers)] += measure(side, writers, seconds, es_env)
    rate = {config: _rate(results) for config, results in totals.items()}
    es_label = "eventsourcing {n} writer(s): Application.save of a new aggregate (1 event), PostgreSQL"
    notes = [_note(side, n, totals[(side, n)]) for side, n in CONFIGS]
    return [
        Figure(
            "append 1 writer",
            rate[("ours", 1)],
            "events/s",
            rate[("es", 1)],
            es_label.format(n=1),
            Goal("ratio", ">=", 2.0),
            notes,
        ),
        Figure(
            "append 4 writers (scaling)",
            rate[("ours", 4)],
            "events/s",
            rate[("ours", 1)],
            "ours with 1 writer",
            Goal("ratio", ">=", 1.5),
        ),
        Figure(
            "append 4 writers vs eventsourcing",
            rate[("ours", 4)],
            "events/s",
            rate[("es", 4)],
            es_label.format(n=4),
        ),
    ]


def _rate(results: list[Measured]) -> float:
    """Events per second over all rounds of one configuration."""
    return sum(r.events for r in results) / sum(r.seconds for r in results)


def _note(side: str, writers: int, results: list[Measured]) -> str:
    events = sum(r.events for r in results)
    cpu_ms = sum(r.cpu_seconds for r in results) * 1000 / max(1, events)
    busy = sum(r.busy for r in results) / max(1, len(results))
    # Writers that wait on each other leave the cores idle; writers bound by CPU keep them busy.
    return (
        f"{side} {writers} writer(s): {events} events, {cpu_ms:.2f} ms client CPU per event,"
        f" both cores {busy:.0%} busy"
    )


def measure(side: str, writers: int, seconds: float, es_env: dict[str, str]) -> list[Measured]:
    """Run `writers` processes together for `seconds`; return the round's measurement."""
    started: list[list[int]] = []
    counts = run_together(
        _writer,
        [(side, seconds, es_env)] * writers,
        timeout=seconds,
        on_start=lambda: started.append(proc_stat()),
    )
    ended = proc_stat()
    busy = (machine_busy(ended) - machine_busy(started[0])) / max(1, sum(ended) - sum(started[0]))
    # The group's rate is the sum of its writers' own rates (each timed itself from the start).
    events = sum(count for count, _, _ in counts)
    cpu = sum(cpu for _, _, cpu in counts)
    return [Measured(events, events / sum(count / elapsed for count, elapsed, _ in counts), cpu, busy)]


def _writer(side: str, seconds: float, es_env: dict[str, str]):
    """Connect and warm up; return the timed loop, which saves one event per command."""
    save_one = _our_save() if side == "ours" else _es_save(es_env)
    for _ in range(20):
        save_one()

    def loop() -> tuple[int, float, float]:
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        end = start + seconds
        while time.perf_counter() < end:
            save_one()
            count += 1
        return count, time.perf_counter() - start, time.process_time() - cpu

    return loop


def _our_save():
    from adoptions.domain import Pet
    from events.catalogue import Species
    from events.context import CommandContext

    pets = pet_repository()
    shelter_id = uuid.uuid4()

    def save_one() -> None:
        pet = Pet.register(pet_id=uuid.uuid4(), name="Rex", species=Species.DOG, age=3, shelter_id=shelter_id)
        # As the commands save (adoptions/services.py): outside a transaction, so the event and
        # its outbox rows are one statement, committed on its own.
        pets.save(pet, metadata=CommandContext.system().as_metadata(), expected_version=0)

    return save_one


def _es_tables_created(es_env: dict[str, str]) -> dict[str, str]:
    """Create the library's tables once here, so concurrent writers never race on DDL."""
    from .es_reference import make_app

    make_app(es_env).close()
    return {**es_env, "CREATE_TABLE": "false"}


def _es_save(es_env: dict[str, str]):
    from .es_reference import Dog, make_app

    app = make_app(es_env)

    def save_one() -> None:
        app.save(Dog(name="Rex", species="dog", age=3))

    return save_one

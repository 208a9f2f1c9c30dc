"""Figure 2b: time to load a pet with 1,000 and 10,000 events, with and without snapshots.

Pets are built through AggregateRepository.save, 100 events per save, so snapshots fall
where the product's policy (EVENTS_SNAPSHOT_EVERY) puts them. A pet whose version is a
multiple of 100 loads from a snapshot with no events after it (the best case); the
1,099-event pet shows the worst case (99 events after the snapshot). Loads run outside a
transaction, as in GET /api/pets/<id>. Reference: the eventsourcing library replaying an
aggregate with as many events (no snapshots, no cache). Variants alternate call by call.
"""

from __future__ import annotations

import statistics
import time
import uuid

from django.conf import settings

from .harness import Bench, Figure, Goal, log, pet_repository

ES_LABEL = "eventsourcing repository.get() of a {n:,}-event aggregate (PostgreSQL, no snapshots)"


def run(bench: Bench) -> list[Figure]:
    from .es_reference import make_app

    app = make_app(bench.es_env())
    log("load: building pets of 1,000, 1,099 and 10,000 events, and the eventsourcing ones")
    pets = pet_repository()
    ours = {n: _build_pet(pets, n) for n in (1000, 1099, 10000)}
    theirs = {n: _build_dog(app, n) for n in (1000, 10000)}
    timings = {}
    for n, repeats in ((1000, int(bench.scale(40, 12))), (10000, int(bench.scale(10, 4)))):
        log(f"load: timing {n:,}-event loads, {repeats} times each")
        variants = {
            "snapshots": lambda n=n: pets.load(ours[n], use_snapshots=True),
            "replay": lambda n=n: pets.load(ours[n], use_snapshots=False),
            "es": lambda n=n: app.repository.get(theirs[n]),
        }
        if n == 1000:
            variants["worst"] = lambda: pets.load(ours[1099], use_snapshots=True)
        timings[n] = _time_alternating(variants, repeats)
    return _figures(timings)


def _figures(t: dict[int, dict[str, list[float]]]) -> list[Figure]:
    def ms(n: int, variant: str) -> float:
        return statistics.median(t[n][variant]) * 1000

    every = settings.EVENTS_SNAPSHOT_EVERY
    goal = Goal("value", "<=", 20, "ms")
    es1k, es10k = ES_LABEL.format(n=1000), ES_LABEL.format(n=10000)
    median = ["median of alternating loads"]
    return [
        Figure(
            f"load 1,000-event pet, snapshots every {every}",
            ms(1000, "snapshots"),
            "ms",
            ms(1000, "es"),
            es1k,
            goal,
            median,
        ),
        Figure(
            "load 1,099-event pet, snapshots (99 to replay)",
            ms(1000, "worst"),
            "ms",
            ms(1000, "es"),
            es1k,
            goal,
        ),
        Figure(
            "load 1,000-event pet, no snapshots",
            ms(1000, "replay"),
            "ms",
            ms(1000, "es"),
            es1k,
            goal,
        ),
        Figure(
            f"load 10,000-event pet, snapshots every {every}",
            ms(10000, "snapshots"),
            "ms",
            ms(10000, "es"),
            es10k,
        ),
        Figure("load 10,000-event pet, no snapshots", ms(10000, "replay"), "ms", ms(10000, "es"), es10k),
    ]


def _time_alternating(variants: dict, repeats: int) -> dict[str, list[float]]:
    """Call each variant in turn, rotating the order, after one untimed warm-up call each."""
    names = list(variants)
    for name in names:
        variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            variants[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def _build_pet(pets, events: int) -> uuid.UUID:
    """Register a pet and rename it until it has `events` events, saving 100 at a time."""
    from django.db import transaction

    from adoptions.domain import Pet
    from events.catalogue import Species
    from events.context import CommandContext

    metadata = CommandContext.system().as_metadata()
    pet = Pet.register(
        pet_id=uuid.uuid4(), name="Name 1", species=Species.CAT, age=4, shelter_id=uuid.uuid4()
    )
    while pet.version < events:
        while pet.version < events and len(pet.pending_events) < 100:
            pet.rename(new_name=f"Name {pet.version + 1}")
        with transaction.atomic():
            pets.save(pet, metadata=metadata)
    return pet.id


def _build_dog(app, events: int) -> uuid.UUID:
    from .es_reference import Dog

    dog = Dog(name="Name 1", species="cat", age=4)
    for version in range(2, events + 1):
        dog.rename(f"Name {version}")
    app.save(dog)
    return dog.id

"""Figure 7: full rebuild of available_pets from a million events, in events/s.

The log holds 600,000 PetRegistered, 300,000 PetAdopted and 100,000 PetReturned events
(--quick: a tenth), written straight into event_log by bench/readside.py. Ours:
readmodels.projector.rebuild(available_pets, batch_size=5000), the code behind
`manage.py replay_events --projection available_pets`, into a new generation then swapped
in. Reference: a plain ordered read of the same log (Django values_list of every column, in
reader order, streamed 5,000 rows at a time; the first 250,000 events, as a scan's rate does
not change along the log) — what reading alone costs — timed just before and just after the
rebuild, so a drift in the machine's speed hits both. The read_all loop
without applying is timed on the first 100,000 events for the notes.
"""

from __future__ import annotations

import time

from .harness import Bench, Figure, Goal, log
from .readside import fresh_log, seed_pets, shelters

BATCH = 5000
READ_EVENTS = 250_000  # the reference reads this much of the log (a scan's rate does not change)
READ_ALL_EVENTS = 100_000  # the read_all loop for the notes reads this much of the log
REFERENCE = (
    "plain ordered read of event_log (Django values_list, reader order, 5,000 rows a fetch; "
    "first 250,000 events)"
)


def run(bench: Bench) -> list[Figure]:
    from readmodels.projections import available_pets

    fresh_log()
    pets = int(bench.scale(600_000, 60_000))
    events = seed_pets(pets=pets, adopt_every=2, return_every=6, spread=pets // 20, shelter_ids=shelters())
    samples: dict[str, list[float]] = {"ours": [], "ref": []}
    try:
        # One rebuild of a million events takes minutes: the reads bracket it, before and after.
        for side in ("ref", "ours", "ref"):
            log(f"rebuild: {side}, {events:,} events")
            began = time.perf_counter()
            count = rebuild_available(available_pets) if side == "ours" else plain_read(limit=READ_EVENTS)
            samples[side].append(count / (time.perf_counter() - began))
            log(f"rebuild: {side}: {samples[side][-1]:,.0f} events/s")
        began = time.perf_counter()
        read_all_count = read_all_loop(limit=READ_ALL_EVENTS)
        read_all_rate = read_all_count / (time.perf_counter() - began)
        listed = _listed()
    finally:
        fresh_log()  # a million events would burden every figure run after this one
    return _figures(samples, read_all_rate, events, listed)


def rebuild_available(projection) -> int:
    from readmodels.projector import rebuild

    return rebuild(projection, batch_size=BATCH)


def plain_read(*, limit: int) -> int:
    from django.db import transaction

    from events.models import StoredEvent

    columns = [f.attname for f in StoredEvent._meta.concrete_fields]
    rows = StoredEvent.objects.order_by("transaction_id", "position").values_list(*columns)[:limit]
    with transaction.atomic():  # a server-side cursor lives in a transaction
        return sum(1 for _ in rows.iterator(chunk_size=BATCH))


def read_all_loop(*, limit: int) -> int:
    """The rebuild's own reads (events.store.read_all, batch by batch), applying nothing."""
    from django.db import transaction

    from events.store import LogPosition, read_all

    after, count = LogPosition(), 0
    while count < limit:
        with transaction.atomic():
            rows = read_all(after=after, limit=BATCH)
        if not rows:
            return count
        after, count = LogPosition.of(rows[-1]), count + len(rows)
    return count


def _listed() -> tuple[int, int]:
    from readmodels.models import PetListing
    from readmodels.projector import live_generation

    live = PetListing.objects.filter(generation=live_generation("available_pets"))
    return live.count(), live.filter(available=True).count()


def _figures(samples, read_all_rate: float, events: int, listed: tuple[int, int]) -> list[Figure]:
    ours, ref = (sum(samples[s]) / len(samples[s]) for s in ("ours", "ref"))
    notes = [
        f"{events:,} events; events/s: plain read {_rates(samples['ref'])} (before and after), "
        f"rebuild {_rates(samples['ours'])}",
        f"read_all loop alone (no applying, first {READ_ALL_EVENTS:,} events): {read_all_rate:,.0f} events/s",
        f"after the rebuild: {listed[0]:,} listings, {listed[1]:,} available",
    ]
    name = f"rebuild available_pets, {events:,} events"
    return [
        Figure(name, ours, "events/s", ref, REFERENCE, Goal("ratio", ">=", 0.25)),
        Figure(name, ours, "events/s", ref, REFERENCE, Goal("value", ">=", 20_000, "events/s"), notes),
    ]


def _rates(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)

"""The reference event store: the `eventsourcing` library (pyeventsourcing) on PostgreSQL.

A Dog aggregate with a creation event and a rename event, in an Application whose tables
live in the bench's second database (petstore_bench_es), so the two stores never share a table.
"""

from __future__ import annotations

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str, species: str, age: int) -> None:
        self.name, self.species, self.age = name, species, age

    @event("Renamed")
    def rename(self, name: str) -> None:
        self.name = name


class BenchShelter(Application):
    """Default settings: no snapshots, no aggregate cache (every get() replays)."""


def make_app(env: dict[str, str]) -> BenchShelter:
    return BenchShelter(env=env)

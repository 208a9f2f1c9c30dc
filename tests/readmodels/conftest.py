"""Helpers for read-side tests."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from events.models import StoredEvent
from readmodels.projections import available_pets
from readmodels.projector import PROJECTIONS, lag, state_of
from readmodels.runner import catch_up_all
from tests.factories import register_pet


def project(timeout: float = 10.0) -> None:
    """Catch every running projection up with every committed event.

    The log's horizon is shared by the whole PostgreSQL server: a transaction left open by
    another session holds events back for a moment, so poll until nothing is behind.
    """
    deadline = time.monotonic() + timeout
    while True:
        catch_up_all()
        behind = [n for n in PROJECTIONS if state_of(n).status == "running" and lag(n).events]
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{', '.join(behind)} still behind the log after {timeout} s")
        time.sleep(0.05)


def fail_on_pets_named(names: set[str], monkeypatch, *, message: str | None = None) -> Callable[[], None]:
    """Make available_pets' PetRegistered handler raise for pets with these names ("cannot list
    <name>", or `message`); return the fix: the handler as it was."""
    original = available_pets.handlers["PetRegistered"]

    def fails_on_them(event, batch):
        if event.event.name in names:
            raise ValueError(message or f"cannot list {event.event.name}")
        original(event, batch)

    monkeypatch.setitem(available_pets.handlers, "PetRegistered", fails_on_them)
    return lambda: monkeypatch.setitem(available_pets.handlers, "PetRegistered", original)


@dataclass
class StoppedProjection:
    """A projection stopped on an event, and how to deploy the fix for it."""

    position: int  # of the event it could not apply
    error: str
    fix: Callable[[], None]


@pytest.fixture
def listing_stopped_on_bad(shelter, monkeypatch) -> StoppedProjection:
    """available_pets stopped on the registration of a pet named Bad, after listing Good.

    Needs a transactional test: projectors read only committed events.
    """
    register_pet(shelter=shelter, name="Good")
    bad = register_pet(shelter=shelter, name="Bad")
    fix = fail_on_pets_named({"Bad"}, monkeypatch, message="cannot list this one")
    project()
    position = StoredEvent.objects.get(stream_id=bad.id, event_type="PetRegistered").position
    assert state_of("available_pets").status == "failed"
    return StoppedProjection(
        position=position,
        error=f"PetRegistered at #{position}: ValueError: cannot list this one",
        fix=fix,
    )

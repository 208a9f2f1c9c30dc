"""Rows the database refuses fail the event that wrote them, as a handler that raises does.

The refusal is the database's own: a rule on the read-model table that refuses listings named
Bad (PostgreSQL: a CHECK constraint; SQLite, which cannot add one to a table: a trigger).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection, connections

from adoptions import services
from events.context import CommandContext
from events.models import StoredEvent
from events.store import read_all
from readmodels import runner
from readmodels.models import AdoptionHistoryEntry, PetListing, ProjectionDeadLetter, ShelterDashboard
from readmodels.projections import available_pets
from readmodels.projector import PROJECTIONS, lag, rebuild, state_of
from tests.factories import adopt_pet, register_pet
from tests.readmodels.conftest import project
from tests.support.threads import wait_until

# Transactional: projections read only committed events (the test's own transaction is not).
pytestmark = pytest.mark.django_db(transaction=True)

CONTEXT = CommandContext.system()
TABLE = PetListing._meta.db_table


def _execute(statements: list[str]) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _refusal_rule() -> tuple[list[str], list[str]]:
    """The statements that make the database refuse listings named Bad, and those that drop it."""
    if connection.vendor == "postgresql":  # NOT VALID: listings already there may stay
        check = "listing_not_named_bad"
        return (
            [f"ALTER TABLE {TABLE} ADD CONSTRAINT {check} CHECK (name <> 'Bad') NOT VALID"],
            [f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS {check}"],
        )
    triggers = {f"listing_not_named_bad_on_{op}": op.upper() for op in ("insert", "update")}
    return (
        [
            f"CREATE TRIGGER {name} BEFORE {op} ON {TABLE} WHEN NEW.name = 'Bad' "
            "BEGIN SELECT RAISE(ABORT, 'no listing may be named Bad'); END"
            for name, op in triggers.items()
        ],
        [f"DROP TRIGGER IF EXISTS {name}" for name in triggers],
    )


@pytest.fixture
def refuse_bad_listings(transactional_db) -> Callable[[], Callable[[], None]]:
    """A function that makes the database refuse listings named Bad and returns the fix.

    These tests commit, so nothing rolls the rule back: it is dropped after the test.
    """
    add, drop = _refusal_rule()

    def refuse() -> Callable[[], None]:
        _execute(add)
        return lambda: _execute(drop)

    yield refuse
    _execute(drop)


def registration_position(pet) -> int:
    return StoredEvent.objects.get(stream_id=pet.id, event_type="PetRegistered").position


def listing_rows() -> list[tuple]:
    gen = state_of("available_pets").generation
    fields = ("pet_id", "name", "species", "age", "shelter_id", "available", "available_since")
    return sorted(PetListing.objects.filter(generation=gen).values_list(*fields))


def listed_names() -> list[str]:
    return sorted(row[1] for row in listing_rows())


def projections_line(name: str, *options: str) -> str:
    """The `projections` command's table line for this projection (after what an option says)."""
    out = StringIO()
    call_command("projections", *options, stdout=out)
    return [line for line in out.getvalue().splitlines() if line.startswith(f"{name} ")][-1]


@dataclass
class Refused:
    """available_pets stopped on the registration of Bad, whose listing the database refused."""

    good: object
    bad: object
    later: object
    position: int  # of Bad's registration
    fix: Callable[[], None]


@pytest.fixture(params=["insert", "copy"])
def listing_refused_at_bad(request, shelter, customer, monkeypatch, refuse_bad_listings) -> Refused:
    """Good, Bad and Later registered, Good adopted, all projected in one batch; with "copy",
    PostgreSQL writes even one row by COPY then merge."""
    if request.param == "copy":
        monkeypatch.setattr("readmodels.projector.COPY_FROM_ROWS", 1)
    fix = refuse_bad_listings()
    good = register_pet(shelter=shelter, name="Good")
    bad = register_pet(shelter=shelter, name="Bad")
    later = register_pet(shelter=shelter, name="Later")
    adopt_pet(pet=good, customer=customer)
    project()
    return Refused(good, bad, later, registration_position(bad), fix)


def test_a_refused_write_stops_its_projection_at_that_event_and_the_others_go_on(
    listing_refused_at_bad, shelter, client
):
    bad_at = listing_refused_at_bad.position

    state = state_of("available_pets")
    assert (state.status, state.error_position) == ("failed", bad_at)
    assert state.error.startswith(f"PetRegistered at #{bad_at}: IntegrityError: ")
    assert state.position == StoredEvent.objects.filter(position__lt=bad_at).latest("position").position
    assert listed_names() == ["Good"]  # the events before it applied, none after
    assert not ProjectionDeadLetter.objects.exists()  # stopped, not skipped
    for other in ("adoption_history", "shelter_dashboard"):
        assert (state_of(other).status, lag(other).events) == ("running", 0)
    dashboard = ShelterDashboard.objects.get(shelter_id=shelter.id)
    assert (dashboard.available, dashboard.adopted) == (2, 1)
    assert AdoptionHistoryEntry.objects.get().pet_id == listing_refused_at_bad.good.id

    line = projections_line("available_pets")
    assert f"failed at #{bad_at}: PetRegistered at #{bad_at}: IntegrityError" in line
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests"))
    page = client.get("/admin/readmodels/projectionstate/").content.decode()
    assert f"PetRegistered at #{bad_at}: IntegrityError" in page


def test_after_the_fix_a_resumed_projection_applies_the_refused_event_and_equals_a_rebuild(
    listing_refused_at_bad,
):
    listing_refused_at_bad.fix()  # the rule that refused it is gone

    assert projections_line("available_pets", "--resume", "available_pets").split()[-1] == "running"
    project()

    state = state_of("available_pets")
    assert (state.status, state.error, state.error_position) == ("running", "", None)
    assert listed_names() == ["Bad", "Good", "Later"]
    incremental = listing_rows()
    rebuild(available_pets)
    assert listing_rows() == incremental


def test_a_dead_letter_projection_lists_the_events_whose_rows_are_refused_and_goes_on(
    shelter, monkeypatch, refuse_bad_listings
):
    monkeypatch.setattr(available_pets, "on_error", "dead_letter")
    refuse_bad_listings()
    register_pet(shelter=shelter, name="Good")
    bad = register_pet(shelter=shelter, name="Bad")
    later = register_pet(shelter=shelter, name="Later")
    services.pet_rename(pet_id=later.id, new_name="Bad", context=CONTEXT)  # an update refused
    register_pet(shelter=shelter, name="After")

    project()

    assert (state_of("available_pets").status, lag("available_pets").events) == ("running", 0)
    assert listed_names() == ["After", "Good", "Later"]
    listed = ProjectionDeadLetter.objects.filter(projection="available_pets")
    rename_at = StoredEvent.objects.get(stream_id=later.id, event_type="PetNameChanged").position
    assert list(listed.values_list("event_type", "position")) == [
        ("PetRegistered", registration_position(bad)),
        ("PetNameChanged", rename_at),
    ]
    assert all("IntegrityError" in error for error in listed.values_list("error", flat=True))
    assert projections_line("available_pets").endswith("(2 dead-lettered)")


@pytest.mark.parametrize("bad_index", [3, 14, 22], ids=["first-batch", "second-batch", "tail"])
def test_a_rebuild_stops_at_an_event_whose_rows_are_refused_and_resumes_after_the_fix(
    shelter, refuse_bad_listings, bad_index
):
    for n in range(25):  # batches of 10: two full batches and a tail of 5
        register_pet(shelter=shelter, name="Bad" if n == bad_index else f"Pet {n}")
    project()
    live, generation = listing_rows(), state_of("available_pets").generation
    fix = refuse_bad_listings()

    with pytest.raises(
        CommandError, match=r"(?s)stopped on PetRegistered at #\d+: IntegrityError.*run the command"
    ):
        call_command("replay_events", projection="available_pets", batch_size=10, stdout=StringIO())

    written = bad_index // 10 * 10  # the full batches before Bad's
    state = state_of("available_pets")
    assert (state.generation, state.rebuild_generation) == (generation, generation + 1)  # not swapped
    assert state.rebuild_position == (read_all(limit=written)[-1].position if written else 0)
    assert listing_rows() == live  # the live generation still answers
    fix()
    out = StringIO()
    call_command("replay_events", projection="available_pets", batch_size=10, stdout=out)
    assert out.getvalue() == f"rebuilt available_pets from {25 - written} events and swapped it in\n"
    assert listing_rows() == live


def test_a_dead_letter_projection_rebuilds_past_the_events_whose_rows_are_refused(
    shelter, monkeypatch, refuse_bad_listings
):
    bad_indexes = (3, 14, 22)  # first batch, second, tail
    for n in range(25):
        register_pet(shelter=shelter, name="Bad" if n in bad_indexes else f"Pet {n}")
    project()
    generation = state_of("available_pets").generation
    monkeypatch.setattr(available_pets, "on_error", "dead_letter")
    refuse_bad_listings()

    assert rebuild(available_pets, batch_size=10) == 25

    assert state_of("available_pets").generation == generation + 1
    assert len(listed_names()) == 22 and "Bad" not in listed_names()
    events = read_all(limit=25)
    listed = ProjectionDeadLetter.objects.values_list("position", "generation")
    assert list(listed) == [(events[n].position, generation + 1) for n in bad_indexes]


def test_catch_up_all_goes_on_with_the_other_projections_when_one_raises(shelter, monkeypatch, caplog):
    """available_pets comes first: it raising must not keep the others behind."""
    register_pet(shelter=shelter, name="Rex")
    register_pet(shelter=shelter, name="Tom")
    wait_until(lambda: len(read_all()) == 2, timeout=10, what="the events to be readable")
    original = available_pets.handlers["PetRegistered"]

    def lock_timeout(event, batch):
        raise OperationalError("canceling statement due to lock timeout")

    monkeypatch.setitem(available_pets.handlers, "PetRegistered", lock_timeout)
    with caplog.at_level(logging.ERROR, logger="readmodels.runner"):
        runner.catch_up_all()

    assert list(PROJECTIONS)[0] == "available_pets"
    assert "projection available_pets failed; the others go on" in caplog.text
    state = state_of("available_pets")
    assert (state.status, state.error, lag("available_pets").events) == ("running", "", 2)  # retried later
    for other in ("adoption_history", "shelter_dashboard"):
        assert lag(other).events == 0
    assert ShelterDashboard.objects.get(shelter_id=shelter.id).available == 2

    monkeypatch.setitem(available_pets.handlers, "PetRegistered", original)
    runner.catch_up_all()  # the projector's next pass
    assert listed_names() == ["Rex", "Tom"]


def test_a_database_that_is_gone_ends_the_pass_for_the_projector_to_retry(shelter, monkeypatch):
    register_pet(shelter=shelter, name="Rex")
    wait_until(read_all, timeout=10, what="the event to be readable")

    def connection_lost(event, batch):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setitem(available_pets.handlers, "PetRegistered", connection_lost)
    monkeypatch.setattr(type(connections["default"]), "is_usable", lambda self: False)
    with pytest.raises(OperationalError):
        runner.catch_up_all()  # run_forever logs it, waits, and tries again

    assert all(lag(name).events == 1 for name in PROJECTIONS)  # the others would fail alike

"""Operators' commands on the read side: replay_events and projections, through call_command."""

import sys
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from adoptions import services
from events.context import CommandContext
from events.models import StoredEvent
from readmodels import projector
from readmodels.management.commands.replay_events import moment
from readmodels.models import PetListing, ProjectionDeadLetter
from readmodels.projections import available_pets
from readmodels.projector import PROJECTIONS, state_of
from tests.factories import register_pet
from tests.readmodels.conftest import fail_on_pets_named, project

# Transactional: projections read only committed events (the test's own transaction is not).
pytestmark = pytest.mark.django_db(transaction=True)

CONTEXT = CommandContext.system()


class Terminal(StringIO):
    """Output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def iso_z(moment: datetime) -> str:
    """Write a moment as the issue does: 2026-03-13T10:00:00Z (here with microseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def first_recorded_at(stream_id) -> datetime:
    return StoredEvent.objects.filter(stream_id=stream_id).earliest("position").recorded_at


def listed_names() -> list[str]:
    listings = PetListing.objects.filter(generation=state_of("available_pets").generation)
    return sorted(listings.values_list("name", flat=True))


def record_applied_events(monkeypatch) -> list[tuple[str, object]]:
    """From now on, note (event type, stream id) of each event available_pets applies."""
    applied = []
    for event_type, handler in list(available_pets.handlers.items()):

        def noting(event, batch, handler=handler):
            applied.append((event.event_type, event.stream_id))
            handler(event, batch)

        monkeypatch.setitem(available_pets.handlers, event_type, noting)
    return applied


def projections_table(*options: str) -> tuple[list[str], dict[str, dict]]:
    """Run `projections`; return the lines before its table, and the table's rows by name."""
    out = StringIO()
    call_command("projections", *options, stdout=out)
    lines = out.getvalue().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("projection "))
    assert lines[header].split() == ["projection", "position", "behind", "lag", "s", "gen", "state"]
    rows = {}
    for line in lines[header + 1 :]:
        name, position, behind, lag_seconds, generation, state = line.split(maxsplit=5)
        rows[name] = {
            "position": int(position),
            "behind": int(behind),
            "lag_seconds": lag_seconds,
            "generation": int(generation),
            "state": state,
        }
    return lines[:header], rows


# ---------------------------------------------------------------- replay_events


def test_replay_since_an_iso_time_reapplies_only_the_events_recorded_from_then_on(shelter, monkeypatch):
    old = register_pet(shelter=shelter, name="Old")
    services.pet_rename(pet_id=old.id, new_name="Older", context=CONTEXT)
    new = register_pet(shelter=shelter, name="New")
    services.pet_rename(pet_id=new.id, new_name="Newer", context=CONTEXT)
    project()
    since = first_recorded_at(new.id)
    assert StoredEvent.objects.filter(stream_id=old.id).latest("position").recorded_at < since
    applied = record_applied_events(monkeypatch)
    out = StringIO()

    call_command("replay_events", "--projection", "available_pets", "--since", iso_z(since), stdout=out)

    assert applied == [("PetRegistered", new.id), ("PetNameChanged", new.id)]
    assert out.getvalue() == "re-applied 2 events to available_pets\n"
    assert listed_names() == ["Newer", "Older"]


def test_replay_since_a_time_after_the_last_event_reapplies_nothing(shelter, monkeypatch):
    register_pet(shelter=shelter)
    project()
    applied = record_applied_events(monkeypatch)
    out = StringIO()
    an_hour_ahead = iso_z(datetime.now(UTC) + timedelta(hours=1))

    call_command("replay_events", "--projection", "available_pets", "--since", an_hour_ahead, stdout=out)

    assert applied == [] and out.getvalue() == "re-applied 0 events to available_pets\n"


@pytest.mark.parametrize("span", ["7d", "7D"])  # 7D as consume_stream --from and RabbitMQ spell it
def test_since_days_are_read_in_either_case(span, monkeypatch):
    now = datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
    monkeypatch.setattr("django.utils.timezone.now", lambda: now)

    assert moment(span) == now - timedelta(days=7)


def test_replay_since_something_neither_a_time_nor_a_span_is_refused():
    with pytest.raises(CommandError, match="ISO time or a span like 24h, not 'yesterday'"):
        call_command("replay_events", "--projection", "available_pets", "--since", "yesterday")


@pytest.mark.parametrize("process_output", [StringIO, Terminal], ids=["pipe", "terminal"])
def test_replay_events_draws_no_progress_bar_when_its_output_is_not_a_terminal(
    shelter, monkeypatch, process_output
):
    """Its own output decides, not the process's: run from a shell into a file, no bar."""
    register_pet(shelter=shelter, name="One")
    register_pet(shelter=shelter, name="Two")
    project()  # past the server's log horizon: a rebuild now reads both events
    monkeypatch.setattr(sys, "stdout", process_output())
    out = StringIO()

    call_command("replay_events", "--projection", "available_pets", stdout=out)

    assert out.getvalue() == "rebuilt available_pets from 2 events and swapped it in\n"


def test_replay_events_draws_a_progress_bar_on_a_terminal(shelter):
    register_pet(shelter=shelter, name="One")
    register_pet(shelter=shelter, name="Two")
    project()  # past the server's log horizon: a rebuild now reads both events
    terminal = Terminal()

    call_command("replay_events", "--projection", "available_pets", stdout=terminal)

    assert terminal.getvalue() == (
        f"\r[{'#' * 40}] 2/2 events\nrebuilt available_pets from 2 events and swapped it in\n"
    )


# ---------------------------------------------------------------- projections


def test_projections_lists_each_checkpoint_lag_in_events_and_seconds_generation_and_state(
    shelter, monkeypatch
):
    register_pet(shelter=shelter, name="Seen")
    project()
    checkpoint = StoredEvent.objects.latest("position").position
    late = register_pet(shelter=shelter, name="Not yet projected")
    services.pet_rename(pet_id=late.id, new_name="Still not", context=CONTEXT)
    oldest_unapplied = first_recorded_at(late.id)
    monkeypatch.setattr(projector.timezone, "now", lambda: oldest_unapplied + timedelta(seconds=90))

    before_table, rows = projections_table()

    assert before_table == []
    assert list(rows) == list(PROJECTIONS)
    for row in rows.values():
        assert row == {
            "position": checkpoint,
            "behind": 2,
            "lag_seconds": "90.0",
            "generation": 1,
            "state": "running",
        }


def test_projections_shows_where_a_stopped_projection_failed_and_why(listing_stopped_on_bad):
    _, rows = projections_table()

    stopped = rows["available_pets"]
    assert stopped["state"] == f"failed at #{listing_stopped_on_bad.position}: {listing_stopped_on_bad.error}"
    event_before = StoredEvent.objects.filter(position__lt=listing_stopped_on_bad.position).latest("position")
    assert stopped["position"] == event_before.position  # applied up to the failing event
    assert rows["shelter_dashboard"]["state"] == "running"


def test_projections_resume_lets_a_stopped_projection_apply_its_failing_event_again(listing_stopped_on_bad):
    listing_stopped_on_bad.fix()

    said, rows = projections_table("--resume", "available_pets")

    assert said == ["available_pets resumed"]
    assert rows["available_pets"]["state"] == "running"
    project()
    assert listed_names() == ["Bad", "Good"]


def test_projections_reset_forgets_the_tables_checkpoint_and_dead_letters_of_that_projection_only(
    shelter, monkeypatch
):
    register_pet(shelter=shelter, name="Good")
    register_pet(shelter=shelter, name="Bad")
    fix = fail_on_pets_named({"Bad"}, monkeypatch, message="cannot list this one")
    monkeypatch.setattr(available_pets, "on_error", "dead_letter")
    project()
    _, before = projections_table()
    assert before["available_pets"]["state"] == "running (1 dead-lettered)"
    fix()  # the fix is deployed

    said, rows = projections_table("--reset", "available_pets")

    assert said == ["available_pets reset: it will catch up from the first event"]
    assert rows["available_pets"]["position"] == 0
    assert rows["available_pets"]["behind"] == StoredEvent.objects.count() == 2
    assert rows["available_pets"]["state"] == "running"
    assert not PetListing.objects.exists() and not ProjectionDeadLetter.objects.exists()
    assert rows["shelter_dashboard"] == before["shelter_dashboard"]
    project()
    assert listed_names() == ["Bad", "Good"]


@pytest.mark.parametrize("option", ["--reset", "--resume"])
def test_projections_refuses_a_name_it_does_not_know(option):
    with pytest.raises(CommandError, match="unknown projection 'available_cats'; known: available_pets"):
        call_command("projections", option, "available_cats", stdout=StringIO())

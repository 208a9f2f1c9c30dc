"""Projections follow the log exactly once; rebuilds and replays give the same tables."""

import gc
import random
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError, transaction
from django.db.transaction import TransactionManagementError

from adoptions import services
from events.context import CommandContext
from events.store import LogPosition, read_all
from readmodels import projector
from readmodels.models import AdoptionHistoryEntry, PetListing, ProjectionDeadLetter, ShelterDashboard
from readmodels.projections import available_pets
from readmodels.projector import (
    PROJECTIONS,
    Batch,
    ProjectionFailed,
    RebuildInterrupted,
    apply_events,
    catch_up,
    rebuild,
    reset,
    resume,
    state_of,
)
from tests.factories import CustomerFactory, register_pet
from tests.readmodels.conftest import fail_on_pets_named
from tests.readmodels.conftest import project as catch_up_all
from tests.support.threads import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CONTEXT = CommandContext.system()


def listing_rows() -> list[tuple]:
    gen = state_of("available_pets").generation
    fields = ("pet_id", "name", "species", "age", "shelter_id", "available", "available_since")
    return sorted(PetListing.objects.filter(generation=gen).values_list(*fields))


def history_rows() -> list[tuple]:
    gen = state_of("adoption_history").generation
    fields = ("event_id", "pet_id", "kind", "adoption_id", "customer_id", "reason", "occurred_at")
    return sorted(AdoptionHistoryEntry.objects.filter(generation=gen).values_list(*fields))


def dashboard_rows() -> list[tuple]:
    gen = state_of("shelter_dashboard").generation
    fields = ("shelter_id", "available", "adopted", "returned")
    return sorted(ShelterDashboard.objects.filter(generation=gen).values_list(*fields))


def snapshot_all() -> tuple:
    return listing_rows(), history_rows(), dashboard_rows()


def random_commands(shelters, count: int, seed: int) -> None:
    """Register, adopt, return and rename pets at random, through the services."""
    rng = random.Random(seed)
    pets = [register_pet(shelter=rng.choice(shelters), name=f"P{i}") for i in range(5)]
    customers = [CustomerFactory() for _ in range(3)]
    for i in range(count):
        pet = rng.choice(pets)
        state = services.pets.load(pet.id)
        roll = rng.random()
        if roll < 0.15:
            pets.append(
                register_pet(shelter=rng.choice(shelters), name=f"N{i}", species=rng.choice(["cat", "bird"]))
            )
        elif roll < 0.3:
            services.pet_rename(pet_id=pet.id, new_name=f"R{i}", context=CONTEXT)
        elif state.status.value == "available":
            services.pet_adopt(pet_id=pet.id, customer=rng.choice(customers), context=CONTEXT)
        else:
            services.pet_return(pet_id=pet.id, reason=f"reason {i}", context=CONTEXT)


@pytest.mark.parametrize(
    "copy_from_rows, remembered_rows",
    [(200, 1_000_000), (1, 1_000_000), (200, 4)],
    ids=["insert", "copy", "rebuild-forgets-rows"],
)
def test_applying_events_one_batch_at_a_time_equals_a_rebuild(
    shelter, other_shelter, monkeypatch, copy_from_rows, remembered_rows
):
    """Both ways of writing a batch: one INSERT … ON CONFLICT, and (PostgreSQL) COPY then merge;
    and a rebuild whose memory of its rows is so small that it keeps reading them back."""
    monkeypatch.setattr("readmodels.projector.COPY_FROM_ROWS", copy_from_rows)
    monkeypatch.setattr("readmodels.projector.REMEMBERED_ROWS", remembered_rows)
    random_commands([shelter, other_shelter], 60, seed=7)
    for projection in PROJECTIONS.values():  # tiny batches: many checkpoints
        while catch_up(projection, batch_size=3):
            pass
    incremental = snapshot_all()

    for projection in PROJECTIONS.values():
        rebuild(projection, batch_size=7)
    rebuilt = snapshot_all()

    assert incremental == rebuilt
    assert len(incremental[0]) >= 5 and incremental[1] and incremental[2]


def test_a_rebuild_stops_when_a_second_rebuild_writes_batches_in_between(shelter, other_shelter):
    """A rebuild keeps the rows it wrote in memory; a second one resuming the same generation
    in between would make that memory stale, so the first stops and a rerun resumes."""
    random_commands([shelter, other_shelter], 60, seed=11)
    while catch_up(available_pets, batch_size=50):
        pass
    incremental = listing_rows()

    def second_rebuild_takes_a_batch(replayed, position):
        with transaction.atomic():
            state = state_of("available_pets", lock=True)
            after = LogPosition(state.rebuild_transaction_id, state.rebuild_position)
            rows = read_all(after=after, limit=5)
            if rows and state.rebuild_generation is not None:
                apply_events(available_pets, rows, Batch(state.rebuild_generation))
                state.rebuild_transaction_id, state.rebuild_position = (
                    rows[-1].transaction_id,
                    rows[-1].position,
                )
                state.save()

    with pytest.raises(RebuildInterrupted, match="run it again to resume"):
        rebuild(available_pets, batch_size=5, progress=second_rebuild_takes_a_batch)
    rebuild(available_pets, batch_size=5)  # resumes the same generation, reading its rows back

    assert listing_rows() == incremental


def test_a_rebuild_whose_write_fails_stops_keeps_the_live_tables_and_resumes(shelter, monkeypatch):
    random_commands([shelter], 30, seed=5)
    catch_up_all()
    incremental, live = listing_rows(), state_of("available_pets").generation
    real_write, writes = projector.write_rows, {"n": 0}

    def database_gone_on_the_third_write(batch_writes):
        writes["n"] += 1
        if writes["n"] == 3:
            raise OperationalError("server closed the connection unexpectedly")
        real_write(batch_writes)

    monkeypatch.setattr(projector, "write_rows", database_gone_on_the_third_write)
    with pytest.raises(OperationalError):
        rebuild(available_pets, batch_size=4)
    state = state_of("available_pets")
    assert state.generation == live and state.rebuild_generation == live + 1
    assert 0 < state.rebuild_position and listing_rows() == incremental  # queries never noticed

    monkeypatch.setattr(projector, "write_rows", real_write)
    rebuild(available_pets, batch_size=4)  # resumes from the last batch that was written
    assert state_of("available_pets").generation == live + 1 and listing_rows() == incremental


@pytest.mark.parametrize("collector_on", [True, False])
def test_a_rebuild_pauses_the_garbage_collector_and_leaves_it_as_it_found_it(
    shelter, monkeypatch, collector_on
):
    random_commands([shelter], 12, seed=9)
    seen_while_applying = []
    original = available_pets.handlers["PetRegistered"]

    def noting_the_collector(event, batch):
        seen_while_applying.append(gc.isenabled())
        if len(seen_while_applying) == 5:
            raise RuntimeError("a handler bug")
        original(event, batch)

    monkeypatch.setitem(available_pets.handlers, "PetRegistered", noting_the_collector)
    (gc.enable if collector_on else gc.disable)()
    try:
        with pytest.raises(ProjectionFailed):
            rebuild(available_pets, batch_size=3)
        after_failure = gc.isenabled()
    finally:
        gc.enable()

    assert seen_while_applying and not any(seen_while_applying)
    assert after_failure == collector_on


def test_a_batch_that_dies_half_way_leaves_nothing_and_resumes_from_its_checkpoint(shelter, monkeypatch):
    random_commands([shelter], 20, seed=3)
    catch_up(available_pets, batch_size=5)
    before = state_of("available_pets").position
    calls = {"n": 0}
    original = available_pets.handlers["PetRegistered"]

    def dies_on_the_third_event(event, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("killed mid-batch")  # not an Exception: like a kill, not a bad event
        original(event, batch)

    monkeypatch.setitem(available_pets.handlers, "PetRegistered", dies_on_the_third_event)
    with pytest.raises(SystemExit):
        catch_up(available_pets, batch_size=50)
    assert state_of("available_pets").position == before  # the half batch was rolled back

    monkeypatch.setitem(available_pets.handlers, "PetRegistered", original)
    catch_up_all()
    incremental = listing_rows()
    rebuild(available_pets)
    assert incremental == listing_rows()


def test_a_failing_handler_stops_its_projection_at_that_event_and_others_go_on(
    shelter, customer, monkeypatch
):
    good = register_pet(shelter=shelter, name="Good")
    bad = register_pet(shelter=shelter, name="Bad")
    fix = fail_on_pets_named({"Bad"}, monkeypatch, message="cannot list this one")
    catch_up_all()

    state = state_of("available_pets")
    assert state.status == "failed" and "cannot list this one" in state.error
    assert [row[0] for row in listing_rows()] == [good.id]  # applied up to the failing event
    assert state_of("shelter_dashboard").status == "running"
    assert dashboard_rows()[0][1] == 2  # another projection kept going
    out = StringIO()
    call_command("projections", stdout=out)
    assert "failed" in out.getvalue() and "cannot list this one" in out.getvalue()

    fix()  # the fix is deployed
    resume("available_pets")
    catch_up_all()
    assert {row[0] for row in listing_rows()} == {good.id, bad.id}


def test_a_dead_letter_projection_skips_the_event_and_lists_it(shelter, monkeypatch):
    register_pet(shelter=shelter, name="Good")
    register_pet(shelter=shelter, name="Bad")
    fail_on_pets_named({"Bad"}, monkeypatch, message="cannot list this one")
    monkeypatch.setattr(available_pets, "on_error", "dead_letter")
    catch_up_all()

    assert state_of("available_pets").status == "running"
    assert [row[1] for row in listing_rows()] == ["Good"]
    assert list(ProjectionDeadLetter.objects.values_list("projection", "event_type")) == [
        ("available_pets", "PetRegistered")
    ]


def test_a_rebuild_stops_at_an_event_it_cannot_apply_and_resumes_after_the_fix(shelter, monkeypatch):
    for n in range(30):
        register_pet(shelter=shelter, name="Bad" if n == 24 else f"Pet {n}")
    catch_up_all()
    live = listing_rows()
    fail_on_pets_named({"Bad"}, monkeypatch)

    with pytest.raises(CommandError, match="cannot list Bad.*run the command again"):
        call_command("replay_events", projection="available_pets", batch_size=10, stdout=StringIO())
    state = state_of("available_pets")
    assert state.rebuild_position > 0 and state.rebuild_generation is not None  # two batches kept
    assert listing_rows() == live  # the live generation still answers

    monkeypatch.undo()  # the fix is deployed
    out = StringIO()
    call_command("replay_events", projection="available_pets", batch_size=10, stdout=out)
    assert out.getvalue() == "rebuilt available_pets from 10 events and swapped it in\n"  # the rest
    assert listing_rows() == live


def test_a_dead_letter_projection_rebuilds_past_what_it_cannot_apply_and_lists_only_that(
    shelter, monkeypatch
):
    for n in range(30):
        register_pet(shelter=shelter, name=f"Bad {n}" if n in (3, 14, 29) else f"Pet {n}")
    monkeypatch.setattr(available_pets, "on_error", "dead_letter")
    fix = fail_on_pets_named({"Bad 3", "Bad 14", "Bad 29"}, monkeypatch)  # first batch, second, tail
    catch_up_all()
    assert ProjectionDeadLetter.objects.count() == 3

    fix()
    fail_on_pets_named({"Bad 14"}, monkeypatch)  # two of the three are fixed
    rebuild(available_pets, batch_size=10)

    names = [row[1] for row in listing_rows()]
    assert len(names) == 29 and "Bad 14" not in names and {"Bad 3", "Bad 29"} <= set(names)
    [(event_type, generation)] = ProjectionDeadLetter.objects.values_list("event_type", "generation")
    assert (event_type, generation) == ("PetRegistered", state_of("available_pets").generation)
    out = StringIO()
    call_command("projections", dead_letters="available_pets", stdout=out)
    assert "cannot list Bad 14" in out.getvalue() and "1 event(s) skipped" in out.getvalue()


def test_re_applying_from_a_point_stops_at_an_event_it_cannot_apply_or_skips_it(shelter, monkeypatch):
    for n in range(6):
        register_pet(shelter=shelter, name="Bad" if n == 4 else f"Pet {n}")
    catch_up_all()
    fail_on_pets_named({"Bad"}, monkeypatch)

    with pytest.raises(CommandError, match="cannot list Bad.*--from-position"):
        call_command("replay_events", projection="available_pets", from_position=1, stdout=StringIO())

    monkeypatch.setattr(available_pets, "on_error", "dead_letter")
    out = StringIO()
    call_command("replay_events", projection="available_pets", from_position=1, stdout=out)
    assert out.getvalue() == "re-applied 6 events to available_pets\n"
    assert ProjectionDeadLetter.objects.get().event_type == "PetRegistered"
    assert len(listing_rows()) == 6  # "Bad" was listed before: re-applying skipped it


def test_a_database_error_in_a_projection_is_retried_not_blamed_on_the_event(shelter, monkeypatch):
    register_pet(shelter=shelter, name="Rex")
    original = available_pets.handlers["PetRegistered"]
    calls = {"n": 0}

    def database_hiccup_once(event, batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("server closed the connection unexpectedly")
        original(event, batch)

    monkeypatch.setitem(available_pets.handlers, "PetRegistered", database_hiccup_once)
    wait_until(read_all, timeout=10, what="the event to be readable")  # past open transactions
    with pytest.raises(OperationalError):
        catch_up(available_pets)
    assert state_of("available_pets").status == "running"  # not stopped, nothing dead-lettered
    assert not ProjectionDeadLetter.objects.exists()

    catch_up_all()  # the projector's next round
    assert [row[1] for row in listing_rows()] == ["Rex"]


def test_replay_while_commands_keep_arriving_ends_identical_to_incremental(shelter, other_shelter):
    random_commands([shelter, other_shelter], 20, seed=11)
    catch_up_all()
    seen = {"batches": 0}

    def more_commands_during_the_rebuild(done, position):
        seen["batches"] += 1
        if seen["batches"] <= 3:
            random_commands([shelter], 3, seed=seen["batches"])
            catch_up_all()  # the live projector keeps the old generation current

    rebuild(available_pets, batch_size=10, progress=more_commands_during_the_rebuild)
    catch_up_all()
    rebuilt = listing_rows()

    reset("available_pets")
    catch_up_all()
    assert rebuilt == listing_rows()
    assert seen["batches"] > 3


def test_a_new_projection_catches_up_from_the_beginning(shelter):
    register_pet(shelter=shelter, name="Old")

    reset("adoption_history")  # as if it had just been added to the code
    reset("available_pets")
    catch_up_all()

    assert [row[1] for row in listing_rows()] == ["Old"]


def test_replay_events_command_rebuilds_and_replays_from_a_position(shelter, customer):
    pet = register_pet(shelter=shelter)
    services.pet_adopt(pet_id=pet.id, customer=customer, context=CONTEXT)
    catch_up_all()
    before = snapshot_all()

    call_command("replay_events", "--projection", "available_pets", stdout=StringIO())
    call_command(
        "replay_events", "--projection", "adoption_history", "--from-position", "1", stdout=StringIO()
    )
    call_command("replay_events", "--projection", "available_pets", "--since", "24h", stdout=StringIO())

    assert snapshot_all() == before
    assert state_of("available_pets").generation == 2
    with pytest.raises(Exception, match="counters"):
        call_command("replay_events", "--projection", "shelter_dashboard", "--from-position", "1")


def test_events_command_prints_json_lines(shelter):
    pet = register_pet(shelter=shelter)
    out = StringIO()

    call_command("events", "--stream", str(pet.id), stdout=out)

    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and '"type": "PetRegistered"' in lines[0]


def test_a_rebuild_refuses_to_run_inside_a_transaction(shelter):
    """It commits batch by batch, on PostgreSQL from a second connection."""
    register_pet(shelter=shelter, name="Old")
    with transaction.atomic(), pytest.raises(TransactionManagementError, match="outside a transaction"):
        rebuild(available_pets)


def test_a_dead_letter_keeps_the_newest_generation_that_skipped_it(shelter, monkeypatch):
    """A rebuild (generation 2) and the live tables (1) both skip an event: at the swap it must
    still be listed, so the live tables' later failure may not lower its generation."""
    register_pet(shelter=shelter, name="Bad")
    [row] = wait_until(read_all, timeout=10, what="the event to be readable")
    failure = ProjectionFailed(row, ValueError("cannot list Bad"))
    monkeypatch.setattr(available_pets, "on_error", "dead_letter")

    projector.skip_or_stop(available_pets, failure, generation=2)
    projector.skip_or_stop(available_pets, failure, generation=1)

    assert list(ProjectionDeadLetter.objects.values_list("generation", flat=True)) == [2]

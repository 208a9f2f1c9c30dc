"""The real projector process (`manage.py run_projections`) sleeps until a commit notifies it.

Its sweep is set to a minute here, so a read model updated within seconds can only have been
woken by the commit's NOTIFY (events/migrations/0004).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection, transaction

from adoptions import services
from adoptions.models import PetRecord
from events import outbox
from events.context import CommandContext
from events.models import StoredEvent
from readmodels.models import AdoptionHistoryEntry, PetListing, ProjectionState, ShelterDashboard
from readmodels.projector import PROJECTIONS, lag, state_of
from tests.factories import CustomerFactory, adopt_pet, register_pet
from tests.support.processes import child_env, start, stop
from tests.support.threads import HeldTransaction, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CONTEXT = CommandContext.system(causation_id="test")
SWEEP_SECONDS = 60  # far longer than any wait below: only a notification wakes it in time
WOKEN_WITHIN = 5.0  # seconds: generous on a busy two-core machine, still far below the sweep


class Projector:
    """A `run_projections` child process against the test database."""

    def __init__(self, log: Path, *, sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.log, self.sweep_seconds = log, sweep_seconds
        self.process: subprocess.Popen | None = None

    def start(self) -> Projector:
        env = child_env(PROJECTION_SWEEP_SECONDS=str(self.sweep_seconds))
        self.process = start([sys.executable, "manage.py", "run_projections"], env=env, log=self.log)
        self.wait(self.listening, timeout=30, what="the projector to LISTEN")
        self.wait(caught_up, timeout=30, what="the projector's first pass")
        return self

    def stop(self) -> None:
        if self.process is not None:
            # SIGTERM is only noticed once the sweep's sleep ends (a minute here): kill it soon
            # after, as safe for a projector as any crash.
            stop(self.process, grace=1)
            self.process = None

    def wait(self, condition: Callable[[], object], *, timeout: float, what: str) -> float:
        """Wait for `condition` while the process runs; return how long it took."""
        started = time.monotonic()

        def met_or_died() -> object:
            assert self.process.poll() is None, f"projector exited:\n{self.log.read_text()}"
            return condition()

        try:
            wait_until(met_or_died, timeout=timeout, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log.read_text()[-3000:]}") from None
        return time.monotonic() - started

    def listening(self) -> bool:
        """Whether a session on the test database LISTENs for commits (the process's Wakeup)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND query = %s",
                [f"LISTEN {outbox.WAKE_CHANNEL}"],
            )
            return cursor.fetchone()[0] > 0


@pytest.fixture
def projector(require_postgres, tmp_path) -> Iterator[Projector]:
    running = Projector(tmp_path / "projector.log")
    try:
        yield running.start()
    finally:
        running.stop()


def caught_up() -> bool:
    """Whether every projection has a state row (read, never created here) and no lag."""
    states = ProjectionState.objects.filter(name__in=PROJECTIONS)
    return len(states) == len(PROJECTIONS) and all(
        state.status == "running" and not lag(state.name, state=state).events for state in states
    )


def listed(pet_id) -> bool:
    generation = state_of("available_pets").generation
    return PetListing.objects.filter(generation=generation, pet_id=pet_id).exists()


def idle_for_a_moment(projector: Projector) -> None:
    """Let the projector finish its pass and go back to sleep, so only a new wake-up moves it."""
    projector.wait(caught_up, timeout=30, what="the projector to catch up")
    time.sleep(0.5)


def register_with_the_log_clear(shelter, name: str) -> tuple[PetRecord, bool]:
    """Register a pet; return it and whether, just before its commit, no older transaction
    ran anywhere on the server.

    Readers stop at the oldest running transaction of the whole server, any database; the
    notification goes to this database alone. A wake-up while another session's older
    transaction runs reads nothing, and the next wake-up is the sweep's. Only when none ran
    does listing the pet within seconds show that the notification alone woke the projector.
    """
    with transaction.atomic():
        pet = register_pet(shelter=shelter, name=name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot()) = pg_current_xact_id()")
            [clear] = cursor.fetchone()
    return pet, clear


def woken_by(projector: Projector, shelter, name: str, *, attempts: int = 10) -> PetRecord:
    """Register pets until one commits with the log clear; assert it is listed within seconds."""
    for attempt in range(attempts):
        time.sleep(0.5)  # asleep again after the last wake-up
        pet, clear = register_with_the_log_clear(shelter, f"{name} ({attempt})")
        if clear:
            took = projector.wait(
                lambda pet=pet: listed(pet.id), timeout=WOKEN_WITHIN, what=f"{pet.name} listed"
            )
            assert took < WOKEN_WITHIN < SWEEP_SECONDS
            return pet
    raise AssertionError(f"other sessions held the log back at each of {attempts} commits")


def test_each_committed_command_wakes_the_projector_within_seconds(projector, shelter):
    for n in range(4):
        # Given the projector asleep, a minute before its sweep; when a pet is registered,
        # then it is listed within seconds: the commit's notification woke the projector
        woken_by(projector, shelter, f"Woken {n}")


def test_a_rolled_back_command_leaves_the_projector_as_it_was_and_ready(projector, shelter):
    idle_for_a_moment(projector)
    before = {name: (state_of(name).position, state_of(name).events_applied) for name in PROJECTIONS}

    # When a command appends its events, then fails and rolls back
    with pytest.raises(RuntimeError), transaction.atomic():
        doomed = register_pet(shelter=shelter, name="Doomed")
        raise RuntimeError("the command failed after appending")
    time.sleep(1.5)  # time enough to notice, had anything woken it

    # Then nothing was recorded, listed or counted, and the projector is still running
    assert not StoredEvent.objects.filter(stream_id=doomed.id).exists()
    assert not PetRecord.objects.filter(id=doomed.id).exists() and not listed(doomed.id)
    assert {name: (state_of(name).position, state_of(name).events_applied) for name in PROJECTIONS} == before
    assert projector.process.poll() is None
    # and the next command still wakes it at once
    woken_by(projector, shelter, "Survivor")
    assert all(state_of(name).status == "running" for name in PROJECTIONS)


def test_a_command_committed_behind_one_that_rolls_back_is_listed_by_the_next_sweep(
    require_postgres, shelter, tmp_path
):
    """The older transaction holds the log back; its rollback notifies nobody, and the
    newer command's own notification came while it could not be read yet."""
    projector = Projector(tmp_path / "projector.log", sweep_seconds=2).start()
    try:
        idle_for_a_moment(projector)
        older = HeldTransaction(lambda: register_pet(shelter=shelter, name="Doomed"), rollback=True)
        older.start()
        assert older.did_work.wait(10)
        newer = register_pet(shelter=shelter, name="Newer")
        time.sleep(1)
        assert not listed(newer.id)  # readers never pass a transaction still open

        older.finish()  # rolls back

        projector.wait(lambda: listed(newer.id), timeout=2 + WOKEN_WITHIN, what="Newer listed")
        assert not PetListing.objects.filter(name="Doomed").exists()
    finally:
        projector.stop()


def test_a_projector_started_later_resumes_from_its_checkpoints_and_a_new_projection_from_the_start(
    require_postgres, shelter, customer, tmp_path
):
    # Given a projector that projected some history, then stopped
    first = Projector(tmp_path / "first.log", sweep_seconds=1)  # a commit may wake it or not
    try:
        first.start()
        early = [register_pet(shelter=shelter, name=f"Early {n}") for n in range(2)]
        adopt_pet(pet=early[0], customer=customer)
        first.wait(caught_up, timeout=30, what="the first projector to catch up")
    finally:
        first.stop()
    checkpoint = state_of("available_pets").events_applied
    # and more history committed while no projector ran
    late = [register_pet(shelter=shelter, name=f"Late {n}") for n in range(2)]
    adopt_pet(pet=late[0], customer=CustomerFactory())
    services.pet_return(pet_id=late[0].id, reason="allergic", context=CONTEXT)
    # and adoption_history deployed as new: no state row, no rows at all
    ProjectionState.objects.filter(name="adoption_history").delete()
    AdoptionHistoryEntry.objects.all().delete()
    events = StoredEvent.objects.count()
    assert 0 < checkpoint < events

    # When a projector starts
    second = Projector(tmp_path / "second.log")
    try:
        second.start()  # returns once every projection has caught up
    finally:
        second.stop()

    # Then the projector gave the new projection a state row, and every event from the first
    assert ProjectionState.objects.filter(name="adoption_history").exists()
    history = state_of("adoption_history")
    assert (history.status, history.generation, history.events_applied) == ("running", 1, events)
    assert history.position == StoredEvent.objects.order_by("transaction_id", "position").last().position
    entries = AdoptionHistoryEntry.objects.filter(generation=1).order_by("position")
    assert [(e.pet_id, e.kind) for e in entries] == [
        (early[0].id, "adopted"),
        (late[0].id, "adopted"),
        (late[0].id, "returned"),
    ]
    # and the others went on from their checkpoints: no event applied twice, none missed
    for name in ("available_pets", "shelter_dashboard"):
        assert state_of(name).events_applied == events, name
    dashboard = ShelterDashboard.objects.get(generation=state_of("shelter_dashboard").generation)
    assert (dashboard.available, dashboard.adopted, dashboard.returned) == (3, 1, 1)
    listings = PetListing.objects.filter(generation=state_of("available_pets").generation)
    assert sorted(listings.values_list("name", "available")) == [
        ("Early 0", False),
        ("Early 1", True),
        ("Late 0", True),
        ("Late 1", True),
    ]

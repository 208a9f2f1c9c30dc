"""Rebuild every projection while commands keep arriving from another connection, live
catch-up keeps running in a third, and slow commands commit after later ones: each read
model ends, every column of every row, equal to the log applied from scratch batch by batch.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from django.db import connection

from adoptions import services
from adoptions.models import Customer, Shelter
from events.context import CommandContext
from events.models import StoredEvent
from readmodels.models import AdoptionHistoryEntry, PetListing
from readmodels.projector import PROJECTIONS, Projection, catch_up, lag, rebuild, reset, state_of
from readmodels.runner import catch_up_all
from tests.factories import CustomerFactory, register_pet
from tests.readmodels.conftest import project
from tests.readmodels.test_projector_kill_random import live_rows
from tests.support.threads import HeldTransaction, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CONTEXT = CommandContext.system(causation_id="test")
BATCH_SIZE = 5  # a rebuild of the seeded log takes dozens of batches
SEEDED_COMMANDS = 250
LATE_AFTER = 3  # commands the command thread commits while a late one waits
#: Between two commands of the command thread: a steady load a rebuild in batches of five
#: outruns (without a pause commands come as fast as it replays them, and it may never end).
COMMAND_PAUSE = 0.004


class RandomCommands:
    """Register, adopt, return and rename pets at random through the services, in two shelters.

    One writer per pet: only this object commands its pets, so no command ever conflicts.
    """

    def __init__(self, shelters: list[Shelter], customers: list[Customer], *, seed: int) -> None:
        self.shelters, self.customers, self.rng = shelters, customers, random.Random(seed)
        self.available: dict = {}  # pet id -> whether the pet is available
        self.done = 0

    def one(self) -> None:
        roll = self.rng.random()
        if len(self.available) < 5 or roll < 0.2:
            species = self.rng.choice(["dog", "cat", "bird"])
            pet = register_pet(shelter=self.rng.choice(self.shelters), name=f"N{self.done}", species=species)
            self.available[pet.id] = True
        else:
            pet_id = self.rng.choice(list(self.available))
            if roll < 0.4:
                services.pet_rename(pet_id=pet_id, new_name=f"R{self.done}", context=CONTEXT)
            elif self.available[pet_id]:
                services.pet_adopt(pet_id=pet_id, customer=self.rng.choice(self.customers), context=CONTEXT)
                self.available[pet_id] = False
            else:
                services.pet_return(pet_id=pet_id, reason=f"reason {self.done}", context=CONTEXT)
                self.available[pet_id] = True
        self.done += 1


@contextlib.contextmanager
def running(loop: Callable[[threading.Event], None], *, name: str) -> Iterator[None]:
    """Run `loop(stop)` in a thread with its own connection for the block; re-raise its error."""
    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            loop(stop)
        except BaseException as error:  # noqa: B036 - reported to the test's thread below
            errors.append(error)
        finally:
            connection.close()  # the thread's own: the test database must be flushable after

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), f"the {name} thread did not stop within 30 s"
    if errors:
        raise errors[0]


class LateCommits:
    """Slow commands: each takes its transaction id at once, writes only after the command
    thread has committed more (so a lower transaction id holds a higher position), and
    commits when released, after later commands."""

    def __init__(self, commands: RandomCommands, shelter: Shelter, customer: Customer) -> None:
        self.commands, self.shelter, self.customer = commands, shelter, customer
        self.held: list[tuple[HeldTransaction, list[int]]] = []
        self.names: list[str] = []

    def hold(self) -> None:
        name, wrote_at = f"Late {len(self.names)}", []

        def take_transaction_id_then_wait_for_later_commands() -> None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_current_xact_id()")
            self._wait_for_commands(after=self.commands.done)

        def register_and_adopt() -> None:
            pet = register_pet(shelter=self.shelter, name=name)
            services.pet_adopt(pet_id=pet.id, customer=self.customer, context=CONTEXT)
            wrote_at.append(self.commands.done)

        held = HeldTransaction(
            register_and_adopt, before_work=take_transaction_id_then_wait_for_later_commands
        )
        held.start()
        assert held.did_work.wait(20), f"{name} never wrote: {held.error}"
        self.held.append((held, wrote_at))
        self.names.append(name)

    def release_oldest(self) -> None:
        held, [wrote_at] = self.held.pop(0)
        self._wait_for_commands(after=wrote_at)  # later commands committed first
        held.finish()

    def release_all(self) -> None:
        while self.held:
            self.release_oldest()

    def __enter__(self) -> LateCommits:
        return self

    def __exit__(self, *exc_info) -> None:
        for held, _ in self.held:  # a failed test: let them commit, so teardown is not blocked
            held.release.set()
            held.join(20)

    def _wait_for_commands(self, *, after: int) -> None:
        wait_until(lambda: self.commands.done >= after + LATE_AFTER, timeout=20, what="more commands")


class RebuildDuringCommands:
    """A rebuild's progress hook: a late commit lands mid-rebuild and, if asked, another is
    held from a later batch across the swap (the caller releases it)."""

    def __init__(self, name: str, late: LateCommits, *, hold_across_swap: bool) -> None:
        self.name, self.late, self.hold_across_swap, self.batches = name, late, hold_across_swap, 0
        self.live_applied: list[int] = []  # events live catch-up applied to the old generation

    def __call__(self, replayed: int, position: int) -> None:
        self.batches += 1
        self.live_applied.append(state_of(self.name).events_applied)
        if self.batches == 3:
            self.late.hold()
        elif self.batches == 10:
            self.late.release_oldest()
        elif self.batches == 20 and self.hold_across_swap:
            self.late.hold()  # the rebuild reads up to it, swaps, and sees it only live


def differences(live: dict[str, list[tuple]], from_scratch: dict[str, list[tuple]]) -> str:
    """The rows only one side has, per table."""
    lines = []
    for table, rows in live.items():
        lines += [
            f"{table} live only:         {row}"
            for row in sorted(set(rows) - set(from_scratch[table]), key=str)
        ]
        lines += [
            f"{table} from scratch only: {row}"
            for row in sorted(set(from_scratch[table]) - set(rows), key=str)
        ]
    return "\n".join(lines)


def catch_up_from_scratch(projection: Projection) -> None:
    """Reset the projection and apply the whole log to it again, a few events at a time."""
    reset(projection.name)
    deadline = time.monotonic() + 30
    # The horizon is server-wide: another session's open transaction may hold events back.
    while catch_up(projection, batch_size=BATCH_SIZE) or lag(projection.name).events:
        assert time.monotonic() < deadline, f"{projection.name} still behind after 30 s"
        time.sleep(0.001)


def test_rebuilds_while_commands_arrive_end_equal_to_the_log_applied_from_scratch(
    require_postgres, shelter, other_shelter
):
    # Given a few hundred events in two shelters, projected live
    customers = [CustomerFactory() for _ in range(3)]
    commands = RandomCommands([shelter, other_shelter], customers, seed=20240611)
    for _ in range(SEEDED_COMMANDS):
        commands.one()
    project()
    generations = {name: state_of(name).generation for name in PROJECTIONS}
    during = {}

    def issue_commands(stop: threading.Event) -> None:
        while not stop.is_set():
            commands.one()
            stop.wait(COMMAND_PAUSE)

    def follow_the_log(stop: threading.Event) -> None:
        while not stop.is_set():
            catch_up_all(batch_size=BATCH_SIZE)
            stop.wait(0.01)

    # When, while a thread keeps issuing commands and another keeps the live tables caught
    # up, each projection is rebuilt in small batches, with a command committing late in the
    # middle of each rebuild and, for the first, another across its swap
    with (
        LateCommits(commands, other_shelter, customers[0]) as late,
        running(follow_the_log, name="catch-up"),
        running(issue_commands, name="commands"),
    ):
        for name, projection in PROJECTIONS.items():
            before = (StoredEvent.objects.count(), commands.done)
            hook = RebuildDuringCommands(name, late, hold_across_swap=name == "available_pets")
            rebuild(projection, batch_size=BATCH_SIZE, progress=hook)
            after = (StoredEvent.objects.count(), commands.done)
            late.release_all()
            live_moved = hook.live_applied[-1] - hook.live_applied[0]
            during[name] = (hook.batches, after[0] - before[0], after[1] - before[1], live_moved)
    project()
    live = {name: live_rows(projection) for name, projection in PROJECTIONS.items()}

    # Then each rebuild took many batches while commands, late commits and catch-up went on
    for name, (batches, recorded, commanded, live_moved) in during.items():
        assert batches > 20 and recorded > 0 and commanded > 0 and live_moved > 0, (name, during[name])
        assert state_of(name).generation == generations[name] + 1, name
        assert state_of(name).status == "running", state_of(name).error
    # and every projection equals the log applied from scratch, batch by batch
    for name, projection in PROJECTIONS.items():
        catch_up_from_scratch(projection)
        from_scratch = live_rows(projection)
        diff = differences(live[name], from_scratch)
        assert not diff, f"{name} differs from the log applied from scratch:\n{diff}"
        assert live[name] == from_scratch  # the same rows, and each once
    # and the late commands are in it, written after commands with newer transaction ids
    listed = PetListing.objects.filter(name__in=late.names).values_list("name", "available")
    assert sorted(listed) == [(name, False) for name in sorted(late.names)]
    assert len(late.names) == len(PROJECTIONS) + 1
    late_pets = PetListing.objects.filter(name__in=late.names).values("pet_id")
    adopted = AdoptionHistoryEntry.objects.filter(pet_id__in=late_pets, kind="adopted")
    assert adopted.values("pet_id").distinct().count() == len(late.names)
    for event in StoredEvent.objects.filter(stream_id__in=late_pets):  # an older id, a later write
        assert StoredEvent.objects.filter(
            transaction_id__gt=event.transaction_id, position__lt=event.position
        )
    assert sum(len(rows) for rows in live["available_pets"].values()) > SEEDED_COMMANDS // 5

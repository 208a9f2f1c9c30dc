"""SIGKILL the real projector again and again, in each projection in turn, after random
commands: every read model, row by row and column by column, equals a full rebuild."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import OperationalError, transaction

from events.models import StoredEvent
from readmodels.models import AdoptionHistoryEntry, PetListing, ProjectionState, ShelterDashboard
from readmodels.projector import PROJECTIONS, Projection, lag, rebuild, state_of
from tests.readmodels.test_projections import random_commands
from tests.support.processes import child_env, start, stop

pytestmark = pytest.mark.django_db(transaction=True)

BATCH_SIZE = 4  # dozens of checkpoints per projection: room to land a kill between two of them


def live_rows(projection: Projection) -> dict[str, list[tuple]]:
    """Every row of the projection's live generation, each column but the surrogate id and the
    generation number (a rebuild writes the same rows into a new generation)."""
    generation = state_of(projection.name).generation
    rows = {}
    for table in projection.tables:
        columns = [f.attname for f in table._meta.concrete_fields if not f.primary_key]
        columns.remove("generation")
        live = table.objects.filter(generation=generation).order_by(table.projection_key)
        rows[table._meta.db_table] = list(live.values_list(*columns))
    return rows


def differences(incremental: dict[str, list[tuple]], rebuilt: dict[str, list[tuple]]) -> str:
    """The rows only one side has, per table: what a kill got wrong, and what it should be."""
    lines = []
    for table, rows in incremental.items():
        for row in sorted(set(rows) - set(rebuilt[table]), key=str):
            lines.append(f"{table} live:    {row}")
        for row in sorted(set(rebuilt[table]) - set(rows), key=str):
            lines.append(f"{table} rebuilt: {row}")
    return "\n".join(lines)


def in_a_batch_of(name: str) -> bool:
    """Whether a transaction holds the projection's checkpoint row: catch_up locks it for a batch."""
    try:
        with transaction.atomic():
            ProjectionState.objects.select_for_update(nowait=True).get(name=name)
    except OperationalError:
        return True
    return False


def kill_once_past(
    name: str, projector: subprocess.Popen, log: Path, *, past: int, inside_a_batch: bool
) -> None:
    """SIGKILL the projector once `past` events of `name` are applied and more than one batch
    is left: inside one of its batches, or at any instant (between two statements, or
    between a batch's writes and its checkpoint if some change ever split them).

    To kill inside a batch the process is frozen (SIGSTOP) before looking, so what is seen is
    what it is killed in.
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert projector.poll() is None, f"projector exited early:\n{log.read_text()}"
        state = state_of(name)
        if state.events_applied >= past and lag(name, state=state).events > BATCH_SIZE:
            if not inside_a_batch:
                time.sleep(random.uniform(0, 0.02))  # not always just after a commit
                os.killpg(projector.pid, signal.SIGKILL)
                projector.wait(10)
                return
            os.killpg(projector.pid, signal.SIGSTOP)
            if in_a_batch_of(name) and lag(name).events > BATCH_SIZE:
                os.killpg(projector.pid, signal.SIGKILL)
                projector.wait(10)
                return
            os.killpg(projector.pid, signal.SIGCONT)
        time.sleep(0.002)
    raise AssertionError(f"never caught {name} half-way; use more commands\n{log.read_text()}")


def start_projector(log: Path) -> subprocess.Popen:
    return start(
        [sys.executable, "manage.py", "run_projections"],
        env=child_env(PROJECTION_BATCH_SIZE=str(BATCH_SIZE)),
        log=log,
    )


def wait_until_caught_up(projector: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(state_of(name).status != "running" or lag(name).events for name in PROJECTIONS):
        assert projector.poll() is None, f"projector exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"projector still behind after {timeout} s:\n{log.read_text()}"
        time.sleep(0.05)


def test_projector_killed_mid_batch_again_and_again_ends_equal_to_a_rebuild(
    require_postgres, shelter, other_shelter, tmp_path
):
    # Given a history of registrations, adoptions, returns and renames in two shelters
    random_commands([shelter, other_shelter], 250, seed=2024)
    events = StoredEvent.objects.count()

    # When the projector is killed in each projection in turn (catch_up_all takes them in
    # registry order), a third of the way at any instant and two thirds of the way inside a
    # batch, restarted after each kill, then left to catch up
    killed_at = []
    for name in PROJECTIONS:
        for past, inside_a_batch in ((events // 3, False), (2 * events // 3, True)):
            log = tmp_path / f"projector-{len(killed_at)}.log"
            projector = start_projector(log)
            try:
                kill_once_past(name, projector, log, past=past, inside_a_batch=inside_a_batch)
            finally:
                stop(projector)
            killed_at.append((name, state_of(name).events_applied, lag(name).events))
    log = tmp_path / "projector-last.log"
    projector = start_projector(log)
    try:
        wait_until_caught_up(projector, log)
    finally:
        stop(projector)

    # Then each kill left work undone, and every projection equals its rebuild
    assert len(killed_at) >= 2
    for name, applied, behind in killed_at:
        assert applied > 0 and behind > 0, f"{name} was not killed half-way: {killed_at}"
    for name, projection in PROJECTIONS.items():
        incremental, applied = live_rows(projection), state_of(name).events_applied
        replayed = rebuild(projection)
        rebuilt = live_rows(projection)
        diff = differences(incremental, rebuilt)
        assert incremental == rebuilt, f"{name} differs from its rebuild:\n{diff}"
        assert applied == replayed == events, f"{name} applied {applied} events, the log has {replayed}"
    # and the history held every kind of command, in both shelters
    assert PetListing.objects.filter(name__startswith="R").exists()  # random_commands' renames
    assert set(AdoptionHistoryEntry.objects.values_list("kind", flat=True)) == {"adopted", "returned"}
    dashboards = ShelterDashboard.objects.filter(generation=state_of("shelter_dashboard").generation)
    assert dashboards.count() == 2 and all(row.adopted and row.returned for row in dashboards)

"""The relay is woken by a commit's NOTIFY, and its sweep publishes rows no NOTIFY announced.

The relay is a real `manage.py relay_outbox` process on the test's database and vhost. Its
sweep comes from RELAY_SWEEP_SECONDS, which the test settings pin at 0.2 s (the environment
cannot change it there), so the child runs with the settings `manage.py` defaults to and the
variable set, as an operator would run it. A row "whose NOTIFY never came" is a real command
committed with `session_replication_role = replica` for its transaction: PostgreSQL then skips
ordinary triggers, event_outbox_wake among them, and nothing else about the write changes.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection, transaction

from adoptions.models import PetRecord
from events import outbox
from events.models import OutboxMessage, StoredEvent
from tests.factories import register_pet
from tests.support.processes import child_env, start, stop
from tests.support.rabbit import deliveries, fetch_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

LONG_SWEEP = 60.0  # longer than each test: only a NOTIFY explains a publish within seconds
SHORT_SWEEP = 1.0
WOKEN_WITHIN = 2.0  # commit to published when woken: ms when idle, room for 2 busy shared cores
SWEPT_WITHIN = 3.0  # three short sweeps; the long-sweep control waits as long and sees nothing
STARTUP = 30.0  # Django's start and the first batch of a niced child on loaded cores


@dataclass
class RunningRelay:
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def settle(self, first: PetRecord, *, sweep: float) -> None:
        """Wait for its first batch, which takes `first` (committed before it started, so no
        wake-up is needed): then it waits, and a later commit is only published by a NOTIFY or
        a sweep. Check the sweep it took, too."""
        deadline = time.monotonic() + STARTUP
        while not is_published(first) and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_published(first), f"no first batch (exit {self.process.poll()}):\n{self.output()}"
        assert f"sweep {sweep}s)" in self.output(), self.output()

    def stop(self) -> None:
        """SIGTERM, then NOTIFY until it exits: its stop flag is only read when its wait ends."""
        self.process.terminate()
        deadline = time.monotonic() + 10
        while self.process.poll() is None and time.monotonic() < deadline:
            wake_relays()
            time.sleep(0.1)
        stop(self.process)  # SIGKILLs its group if it lingers


def wake_relays() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [outbox.WAKE_CHANNEL])


@pytest.fixture
def start_relay(require_postgres, broker, events_queue, shelter, tmp_path) -> Iterator:
    """Start relay processes with a given sweep, each past its first batch when returned."""
    relays: list[RunningRelay] = []

    def start_relay(*, sweep: float) -> RunningRelay:
        first = register_pet(shelter=shelter, name="Before the relay")
        environment = child_env(RELAY_SWEEP_SECONDS=str(sweep))
        log = tmp_path / f"relay-{len(relays)}.log"
        process = start([sys.executable, "manage.py", "relay_outbox"], env=environment, log=log)
        relays.append(relay := RunningRelay(process, log))
        relay.settle(first, sweep=sweep)
        # Taken off the queue: each test starts from an empty one.
        assert len(fetch_all(broker, events_queue, at_least=2)) == 2
        return relay

    yield start_relay
    for relay in relays:
        relay.stop()


def rows_of(*pets) -> list[OutboxMessage]:
    events = StoredEvent.objects.filter(stream_id__in=[pet.id for pet in pets]).values("event_id")
    return list(OutboxMessage.objects.filter(event_id__in=events))


def is_published(*pets) -> bool:
    rows = rows_of(*pets)
    return bool(rows) and all(row.published_at is not None for row in rows)


def latency(pet) -> float:
    """Seconds from the command's write (its rows' created_at) to the relay's mark-sent."""
    return max((row.published_at - row.created_at).total_seconds() for row in rows_of(pet))


def sent_keys(*pets) -> set[tuple[str, str]]:
    return {(str(row.event_id), row.routing_key) for row in rows_of(*pets)}


def register_pet_unannounced(*, shelter, name: str):
    """Register a pet with ordinary triggers off for its transaction: rows, but no NOTIFY."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
        return register_pet(shelter=shelter, name=name)


@contextlib.contextmanager
def listening() -> Iterator:
    """A connection LISTENing on the relay's channel, to see which commits sent a wake-up."""
    listener = connection.get_new_connection(connection.get_connection_params())
    listener.autocommit = True
    listener.execute(f"LISTEN {outbox.WAKE_CHANNEL}")
    try:
        yield listener
    finally:
        listener.close()


def notifications(listener, *, timeout: float) -> int:
    return sum(1 for _ in listener.notifies(timeout=timeout, stop_after=1))


def publish_delay(pets, *, within: float, committed_at: float) -> float:
    """Seconds from `committed_at` until every row of `pets` is published (inf after `within`)."""
    while not is_published(*pets):
        if time.monotonic() - committed_at > within:
            return math.inf
        time.sleep(0.02)
    return time.monotonic() - committed_at


def test_each_commit_wakes_the_relay_long_before_its_sweep(start_relay, broker, events_queue, shelter):
    relay = start_relay(sweep=LONG_SWEEP)
    polled: list[float] = []
    marked: list[float] = []

    for n in range(3):
        time.sleep(1.0)
        pet = register_pet(shelter=shelter, name=f"Pet {n}")
        polled.append(publish_delay([pet], within=WOKEN_WITHIN, committed_at=time.monotonic()))

        observed = f"commit to published (polled) {polled} s, write to mark-sent {marked} s"
        assert polled[-1] < WOKEN_WITHIN, f"{observed}\n{relay.output()}"
        marked.append(latency(pet))
        consumed = deliveries(fetch_all(broker, events_queue, at_least=2, timeout=WOKEN_WITHIN))
        assert consumed == dict.fromkeys(sent_keys(pet), 1), (n, consumed)

    observed = f"commit to published (polled) {polled} s, write to mark-sent {marked} s"
    assert max(marked) < WOKEN_WITHIN, observed


def test_a_rolled_back_command_publishes_nothing_and_the_next_commit_still_wakes_the_relay(
    start_relay, broker, events_queue, shelter
):
    relay = start_relay(sweep=LONG_SWEEP)

    with pytest.raises(RuntimeError), transaction.atomic():
        doomed = register_pet(shelter=shelter, name="Rolled back")
        raise RuntimeError("the command failed after appending")
    time.sleep(0.5)

    assert rows_of(doomed) == [] and not outbox.has_due()
    assert fetch_all(broker, events_queue, timeout=0) == []
    pet = register_pet(shelter=shelter, name="Committed")
    delay = publish_delay([pet], within=WOKEN_WITHIN, committed_at=time.monotonic())
    assert delay < WOKEN_WITHIN, f"published {delay} s after the commit\n{relay.output()}"
    consumed = deliveries(fetch_all(broker, events_queue, at_least=2, timeout=WOKEN_WITHIN))
    assert consumed == dict.fromkeys(sent_keys(pet), 1), consumed


def test_the_sweep_publishes_a_row_whose_wake_up_never_came(start_relay, broker, events_queue, shelter):
    relay = start_relay(sweep=SHORT_SWEEP)

    with listening() as listener:
        pet = register_pet_unannounced(shelter=shelter, name="Unannounced")
        committed_at = time.monotonic()
        assert notifications(listener, timeout=0.3) == 0  # the wake-up really was missed

    delay = publish_delay([pet], within=SWEPT_WITHIN, committed_at=committed_at)
    assert delay < SWEPT_WITHIN, f"published {delay} s after the commit\n{relay.output()}"
    consumed = deliveries(fetch_all(broker, events_queue, at_least=2, timeout=WOKEN_WITHIN))
    assert consumed == dict.fromkeys(sent_keys(pet), 1), (delay, latency(pet), consumed)


def test_without_its_wake_up_a_row_waits_for_the_next_commit_that_wakes_the_relay(
    start_relay, broker, events_queue, shelter
):
    relay = start_relay(sweep=LONG_SWEEP)

    with listening() as listener:
        leftover = register_pet_unannounced(shelter=shelter, name="Unannounced")
        unannounced_at = time.monotonic()
        assert notifications(listener, timeout=0.3) == 0
        time.sleep(max(0.0, unannounced_at + SWEPT_WITHIN - time.monotonic()))

        # The write the short sweep published within SWEPT_WITHIN: without a wake-up, nothing.
        assert not any(row.published_at for row in rows_of(leftover)), relay.output()
        assert fetch_all(broker, events_queue, timeout=0) == []

        woken = register_pet(shelter=shelter, name="Announced")
        committed_at = time.monotonic()
        assert notifications(listener, timeout=WOKEN_WITHIN) == 1  # the listener does hear commits

    # One wake-up drains everything due, oldest first: the leftover goes out with it.
    delay = publish_delay([leftover, woken], within=WOKEN_WITHIN, committed_at=committed_at)
    assert delay < WOKEN_WITHIN, f"published {delay} s after the commit\n{relay.output()}"
    consumed = deliveries(fetch_all(broker, events_queue, at_least=4, timeout=WOKEN_WITHIN))
    assert consumed == dict.fromkeys(sent_keys(leftover, woken), 1), consumed
    assert len(consumed) == 4

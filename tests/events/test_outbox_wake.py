"""A committed outbox row wakes sleeping relays and projectors; a rolled-back one does not."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from events import outbox
from events.relay import STOP_CHECK_SECONDS, Wakeup
from tests.factories import register_pet

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listener(require_postgres):
    listening = connection.get_new_connection(connection.get_connection_params())
    listening.autocommit = True
    listening.execute(f"LISTEN {outbox.WAKE_CHANNEL}")
    yield listening
    listening.close()


def notifications(listening, *, timeout: float = 10.0) -> int:
    """Count notifications within `timeout` (returns at the first one: the wait is an upper bound)."""
    return sum(1 for _ in listening.notifies(timeout=timeout, stop_after=1))


def test_a_committed_command_wakes_the_relay_once(listener, shelter):
    register_pet(shelter=shelter)

    assert notifications(listener) == 1
    assert notifications(listener, timeout=0.3) == 0  # one command, one wake-up


def test_a_rolled_back_command_wakes_nobody(listener, shelter):
    with pytest.raises(RuntimeError), transaction.atomic():
        register_pet(shelter=shelter)
        raise RuntimeError("the command failed after appending")

    assert notifications(listener, timeout=0.5) == 0


def test_a_waiting_relay_or_projector_stops_soon_after_it_is_told_to(require_postgres):
    """The wait listens in slices, so a SIGTERM does not wait out a long sweep."""
    wakeup, stop = Wakeup(), threading.Event()
    threading.Timer(0.3, stop.set).start()
    try:
        started = time.monotonic()
        wakeup.wait(60, stop)
        waited = time.monotonic() - started
    finally:
        wakeup.close()

    assert 0.25 <= waited < 0.3 + STOP_CHECK_SECONDS + 2  # the slice, and room for a busy machine


def register_on_its_own_connection(shelter) -> None:
    try:
        register_pet(shelter=shelter)
    finally:
        connection.close()  # this thread's own


def test_a_notification_ends_the_wait_at_once(require_postgres, shelter):
    wakeup = Wakeup()
    try:
        threading.Timer(0.3, register_on_its_own_connection, [shelter]).start()
        started = time.monotonic()
        wakeup.wait(60)
        waited = time.monotonic() - started
    finally:
        wakeup.close()

    assert waited < 5

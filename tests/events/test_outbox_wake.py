"""A committed outbox row wakes sleeping relays and projectors; a rolled-back one does not."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from events import outbox
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

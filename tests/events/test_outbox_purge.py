"""Published outbox rows are deleted once past their keeping time; pending ones never are."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from events import outbox
from events.models import OutboxMessage
from events.relay import Relay
from tests.factories import register_pet

pytestmark = pytest.mark.django_db


class NoBroker:
    def publish(self, messages):
        raise AssertionError("the chores publish nothing")

    def keep_alive(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def rows_published(shelter):
    def publish(days_ago: float | None, pets: int) -> list[int]:
        """The outbox rows of `pets` new pets (two each), published `days_ago` (None: pending)."""
        before = remaining()
        for _ in range(pets):
            register_pet(shelter=shelter)
        ids = sorted(remaining() - before)
        published_at = None if days_ago is None else timezone.now() - timedelta(days=days_ago)
        OutboxMessage.objects.filter(id__in=ids).update(published_at=published_at)
        return ids

    return publish


def remaining() -> set[int]:
    return set(OutboxMessage.objects.values_list("id", flat=True))


def test_only_rows_published_before_the_keeping_time_are_deleted(rows_published):
    old = rows_published(10, 3)
    pending = rows_published(None, 1)
    recent = rows_published(1, 2)

    purged = outbox.purge_published(older_than=timedelta(days=7))

    assert purged == len(old)
    assert remaining() == set(pending) | set(recent)


def test_a_pending_row_among_the_oldest_does_not_stop_the_purge_in_small_batches(rows_published):
    pending = rows_published(None, 1)
    old = rows_published(10, 4)

    purged = outbox.purge_published(older_than=timedelta(days=7), batch_size=2, max_batches=10)

    assert purged == len(old) and remaining() == set(pending)


def test_each_call_deletes_at_most_its_batches(rows_published):
    rows_published(10, 3)  # six rows

    first = outbox.purge_published(older_than=timedelta(days=7), batch_size=2, max_batches=2)
    second = outbox.purge_published(older_than=timedelta(days=7), batch_size=2, max_batches=2)

    assert (first, second) == (4, 2) and remaining() == set()


def test_the_relay_chores_purge_with_the_setting_and_keep_everything_at_zero(settings, rows_published):
    old = rows_published(10, 1)
    settings.OUTBOX_KEEP_PUBLISHED_DAYS = 0
    Relay(publisher=NoBroker()).run_chores()
    kept = remaining() >= set(old)

    settings.OUTBOX_KEEP_PUBLISHED_DAYS = 7
    Relay(publisher=NoBroker()).run_chores()

    assert kept and not remaining() & set(old)


def test_autovacuum_visits_the_outbox_and_the_inbox_sooner(require_postgres):
    """Rows there are updated once or more each: 1 % dead, not PostgreSQL's 20 %, starts a vacuum."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN ('event_outbox', 'event_delivery')"
        )
        options = dict(cursor.fetchall())

    expected = ["autovacuum_vacuum_scale_factor=0.01", "autovacuum_analyze_scale_factor=0.02"]
    assert options == {"event_outbox": expected, "event_delivery": expected}

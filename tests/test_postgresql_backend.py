"""petstore.postgresql: Django's PostgreSQL backend with timestamps parsed in C and a health
check that looks at the socket before it sends SELECT 1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import connection, connections
from django.db.backends.postgresql import base as django_postgresql
from psycopg.postgres import types

from petstore.postgresql.base import UtcTimestamptzLoader
from tests.support.threads import wait_until

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]


def test_timestamps_come_back_as_djangos_own_did_in_utc():
    moment = datetime(2026, 3, 13, 10, 0, 0, 123456, tzinfo=UTC)
    elsewhere = datetime(2026, 3, 13, 15, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT %s::timestamptz, %s::timestamptz, %s::timestamptz, NULL::timestamptz",
            [moment, moment.replace(microsecond=0), elsewhere],
        )
        read = cursor.fetchone()
    assert read == (moment, moment.replace(microsecond=0), elsewhere, None)
    assert [value.tzinfo for value in read[:3]] == [UTC, UTC, UTC]  # the object Django's loader set
    loader = connection.connection.adapters.get_loader(types["timestamptz"].oid, 0)
    assert loader is UtcTimestamptzLoader
    # Django's cursors put their own loader back when the zones differ: they must not differ.
    with connection.cursor() as cursor:
        assert cursor.cursor.adapters.get_loader(types["timestamptz"].oid, 0) is UtcTimestamptzLoader


def test_an_idle_connection_passes_the_health_check_without_a_round_trip(monkeypatch):
    round_trips = []
    monkeypatch.setattr(django_postgresql.DatabaseWrapper, "is_usable", lambda self: round_trips.append(1))
    other = connections.create_connection("default")
    try:
        other.ensure_connection()
        assert other.is_usable() is True
        assert round_trips == []
    finally:
        other.close()


def test_a_connection_the_server_ended_fails_the_health_check_and_the_next_query_reconnects():
    """What a PostgreSQL restart does to a web worker's persistent connection."""
    other = connections.create_connection("default")
    try:
        other.ensure_connection()
        backend = other.connection.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        wait_until(lambda: not other.is_usable(), timeout=10, what="the server's goodbye to arrive")

        other.health_check_done = False  # as at the start of a request (close_old_connections)
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] != backend
    finally:
        other.close()

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


def test_a_server_that_never_answers_fails_the_connect_after_the_timeout(monkeypatch):
    """A host that drops packets would otherwise hang a connect until a task's time limit."""
    import socket
    import time

    import environ
    from django.db import OperationalError

    from petstore.settings.base import database

    silent = socket.socket()  # accepts (the kernel does) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("DATABASE_CONNECT_TIMEOUT", "1")
    port = silent.getsockname()[1]
    settings_dict = database(environ.Env.db_url_config(f"postgres://postgres@127.0.0.1:{port}/petstore"))
    assert settings_dict["OPTIONS"]["connect_timeout"] == 1
    wrapper = django_postgresql.DatabaseWrapper({**connection.settings_dict, **settings_dict}, alias="silent")
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"):
            wrapper.ensure_connection()
        assert 0.9 < time.monotonic() - started < 5  # the timeout ended it, not something else
    finally:
        wrapper.close()
        silent.close()

"""Django's PostgreSQL backend, two per-request costs lighter (ENGINE "petstore.postgresql").

1. Timestamps are parsed by psycopg's C loader, in every query (the log's reads included).
   Django's own (psycopg_any.BaseTzLoader) subclasses psycopg's pure-Python loader to set the
   zone, so psycopg cannot swap in its C version: reading a page of twenty listings, that
   parsing was a third of the read's CPU.
2. The health check (CONN_HEALTH_CHECKS, before the first query of every request and task)
   first looks at the socket instead of sending SELECT 1. An idle connection has nothing to
   read; when it has, the server is saying goodbye (a restart or pg_terminate_backend sends
   "terminating connection" and closes) or something else arrived, and only then does
   Django's SELECT 1 decide. Under load the round trip cost as much as the query it guarded.
"""

from __future__ import annotations

import select
from datetime import UTC

from django.db.backends.postgresql import base
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus

try:  # psycopg's C extension ([binary] or [c]); without it Django's loader stays
    from psycopg_binary._psycopg import TimestamptzLoader as _CTimestamptzLoader
except ImportError:
    try:
        from psycopg_c._psycopg import TimestamptzLoader as _CTimestamptzLoader
    except ImportError:
        _CTimestamptzLoader = None


class UtcTimestamptzLoader(Loader):
    """timestamptz as datetimes in datetime.UTC (as Django's loader gives them), parsed in C.

    C classes cannot be subclassed, so each instance takes the C loader's own `load`: psycopg
    then calls C directly, with no Python frame per value. The C loader answers in the
    session's zone, and Django's sessions are in UTC, which psycopg gives as datetime.UTC
    itself. `timezone` is what Django's cursors compare with their connection's zone before
    they put their own loader back.
    """

    timezone = UTC

    def __init__(self, oid, context=None) -> None:
        super().__init__(oid, context)
        self._parser = _CTimestamptzLoader(oid, context)
        self.load = self._parser.load

    def load(self, data):  # the abstract base's; each instance replaces it with the C one
        return self._parser.load(data)


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if _CTimestamptzLoader is not None and self.timezone is UTC:  # USE_TZ, sessions in UTC
            connection.adapters.register_loader("timestamptz", UtcTimestamptzLoader)
        return connection

    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            return False
        if connection.info.transaction_status == TransactionStatus.IDLE:
            try:
                waiting, _, _ = select.select([connection.fileno()], [], [], 0)
            except (OSError, ValueError):  # the socket is gone
                return False
            if not waiting:
                return True
        return super().is_usable()  # SELECT 1: reads what was there, and fails if it was goodbye

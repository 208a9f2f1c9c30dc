"""The event store: append with optimistic concurrency, load by replay, read the whole log.

Ordering for readers. PostgreSQL hands out positions at insert time, but transactions commit
in any order, so a reader that only remembers "the last position I saw" can skip an event
whose transaction commits late. Each row therefore records its writing transaction's id, and
readers take only rows written by transactions older than the oldest one still running
(pg_snapshot_xmin), in (transaction_id, position) order. Writers are never serialised.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast
from django.utils import timezone

from . import outbox
from .aggregate import Aggregate
from .catalogue import DomainEvent, event_from_stored, event_from_stored_json
from .models import Snapshot, StoredEvent
from .sql import Statement, fetch, insert, insert_statement, prepared, run, saved, select

A = TypeVar("A", bound=Aggregate)


class StreamNotFound(LookupError):
    def __init__(self, stream_id: UUID) -> None:
        super().__init__(f"no events for stream {stream_id}")
        self.stream_id = stream_id


class ConcurrencyConflict(Exception):
    """Another command appended to the stream first."""

    def __init__(self, stream_id: UUID, expected: int, actual: int, message: str = "") -> None:
        super().__init__(message or f"stream {stream_id} is at version {actual}, expected {expected}")
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


class WroteTooEarly(ConcurrencyConflict):
    """The appending transaction took its id before the stream's previous event committed.

    Readers follow the log in transaction-id order, so this event would reach them before the
    one it follows. It happens when a transaction writes (or locks a row) before it loads the
    stream: load first, then write. Nothing is recorded, and the command can be retried at once.
    """

    def __init__(self, stream_id: UUID, version: int) -> None:
        message = (
            f"stream {stream_id}: this transaction started writing before version {version - 1}"
            " was committed; nothing was recorded, retry"
        )
        super().__init__(stream_id, version - 1, version - 1, message)


@dataclass(frozen=True, order=True)
class LogPosition:
    """Where a reader of the whole log stands: compare as (transaction_id, position)."""

    transaction_id: int = 0
    position: int = 0

    @classmethod
    def of(cls, event: StoredEvent) -> LogPosition:
        return cls(event.transaction_id, event.position)


def stream_version(stream_id: UUID) -> int:
    """Return the stream's current version (0 when it has no events)."""
    result = StoredEvent.objects.filter(stream_id=stream_id).aggregate(v=Max("stream_version"))
    return result["v"] or 0


#: What a command writes with its events, in the same transaction: given the rows about to be
#: appended (their event ids and times set, positions not yet), the statements to write them.
AlsoWrite = Callable[[list[StoredEvent]], list[Statement]]


def append(
    *,
    stream_type: str,
    stream_id: UUID,
    events: list[DomainEvent],
    expected_version: int,
    metadata: dict[str, Any],
    announcements: list[list[Any]] | None = None,
    also_write: AlsoWrite | None = None,
) -> list[StoredEvent]:
    """Append events at expected_version + 1…, with their outbox rows and `also_write`'s
    statements, all or nothing.

    Raises ConcurrencyConflict when another writer took one of those versions. Inside the
    caller's transaction the statements join it (and it is marked for rollback on a conflict).
    Outside one, on PostgreSQL, they are a single statement, committed on its own: a command's
    writes cost one round trip, where BEGIN, a statement per table and COMMIT took one each.
    """
    now = timezone.now()
    rows = [
        StoredEvent(
            stream_type=stream_type,
            stream_id=stream_id,
            stream_version=expected_version + index,
            event_type=event.event_name,
            schema_version=event.version,
            payload=event.to_stored(),
            metadata=metadata,
            recorded_at=now,
        )
        for index, event in enumerate(events, start=1)
    ]
    announcements = announcements or [[] for _ in events]
    also = also_write(rows) if also_write else []
    if connection.vendor == "postgresql" and connection.get_autocommit():
        _append_in_one_statement(rows, events, announcements, also)
        return rows
    with transaction.atomic(savepoint=False):  # joins the caller's transaction, if any
        if not _insert(rows):
            raise ConcurrencyConflict(stream_id, expected_version, stream_version(stream_id))
        outbox.enqueue(rows, events, announcements)
        for statement in also:
            run(statement)
    return rows


_ONE_EVENT_PER_VERSION = "event_log_one_event_per_version"


def _append_in_one_statement(
    rows: list[StoredEvent], events: list[DomainEvent], announcements: list[list[Any]], also: list[Statement]
) -> None:
    """Insert the events, their outbox rows and `also` as one statement with data-modifying CTEs.

    On its own the statement is its own transaction, so it can never be too early for the
    stream (WroteTooEarly): it takes its transaction id during this statement, after the
    writer of every version it could see had committed. A taken version fails the whole
    statement (no ON CONFLICT: that would let the other parts go in).
    """
    appended = insert_statement(
        StoredEvent, _INSERTED_FIELDS, rows, returning="event_id, position, transaction_id"
    )
    outboxed = outbox.enqueue_statement(rows, events, announcements, appended="appended")
    parts = [("appended", appended), ("outboxed", outboxed)]
    parts += [(f"also_{index}", statement) for index, statement in enumerate(also, start=1)]
    sql = "WITH " + ", ".join(f"{name} AS ({statement.sql})" for name, statement in parts)
    sql += " SELECT event_id, position, transaction_id FROM appended"
    try:
        returned = fetch(Statement(sql, [param for _, statement in parts for param in statement.params]))
    except IntegrityError as error:
        if getattr(getattr(error.__cause__, "diag", None), "constraint_name", None) != _ONE_EVENT_PER_VERSION:
            raise
        first = rows[0]
        raise ConcurrencyConflict(
            first.stream_id, first.stream_version - 1, stream_version(first.stream_id)
        ) from None
    by_event = {event_id: (position, txid) for event_id, position, txid in returned}
    _mark_appended(rows, [by_event[row.event_id] for row in rows])


def _mark_appended(rows: list[StoredEvent], positions: list[tuple[int, int]]) -> None:
    """Give each appended row its (position, transaction id) and mark it saved."""
    for row, (position, transaction_id) in zip(rows, positions, strict=True):
        row.position, row.transaction_id = position, transaction_id
        saved(row)


_INSERTED_FIELDS = [
    f for f in StoredEvent._meta.concrete_fields if f.name not in ("position", "transaction_id")
]


def _insert(rows: list[StoredEvent]) -> bool:
    """Insert the rows unless a (stream, version) is taken; return whether they went in.

    Raises WroteTooEarly (the rows rolled back) when the transaction is older than the
    writer of the stream's previous version (see _PREVIOUS_WRITER).

    ON CONFLICT DO NOTHING spares the savepoint a caught IntegrityError would need (two round
    trips per command). Several rows go in under a savepoint, so a conflict on one of them
    never leaves the others behind.
    """
    ordered = connection.vendor == "postgresql"  # elsewhere writers are serial, ids all 0
    with transaction.atomic(savepoint=len(rows) > 1):
        returned = insert(
            StoredEvent,
            _INSERTED_FIELDS,
            rows,
            on_conflict="ON CONFLICT (stream_id, stream_version) DO NOTHING",
            returning="position, transaction_id" + (f", {_PREVIOUS_WRITER}" if ordered else ""),
        )
        if len(returned) < len(rows):
            if len(rows) > 1:
                transaction.set_rollback(True)
            return False
        for row, (_, transaction_id, *previous_writer) in zip(rows, returned, strict=True):
            if previous_writer and (previous_writer[0] or 0) > transaction_id:
                transaction.set_rollback(True)  # the row went in: it must never commit
                raise WroteTooEarly(row.stream_id, row.stream_version)
    _mark_appended(rows, [(position, transaction_id) for position, transaction_id, *_ in returned])
    return True


# The id of the transaction that wrote the stream's previous version. A transaction gets its
# id at its first write (or row lock: SELECT … FOR UPDATE takes one too); one that loads the
# stream before either always gets a newer id than the writer of what it loaded, so readers,
# who follow transaction ids, see the stream in order.
_PREVIOUS_WRITER = (
    "(SELECT previous.transaction_id FROM event_log previous"
    " WHERE previous.stream_id = event_log.stream_id"
    " AND previous.stream_version = event_log.stream_version - 1)"
)


_LOADED_FIELDS = ["stream_version", "event_type", "schema_version", "payload", "recorded_at"]


class AggregateRepository(Generic[A]):
    """Load and save one aggregate type; saving appends events, outbox rows and snapshots."""

    def __init__(self, aggregate_type: type[A]) -> None:
        self.aggregate_type = aggregate_type

    def load(self, stream_id: UUID, *, as_of: datetime | None = None, use_snapshots: bool = True) -> A:
        """Rebuild the aggregate from its latest snapshot and the events after it.

        One query for a stream without snapshots (the common, short case); a second one
        fetches the snapshot exactly where the returned events begin.
        """
        rows = self._events_after_latest_snapshot(stream_id, as_of, use_snapshots)
        aggregate = self._start_from(stream_id, as_of, rows) if use_snapshots else None
        aggregate = aggregate or self.aggregate_type(stream_id)
        for _, event_type, schema_version, payload, recorded_at in rows:
            aggregate.apply(event_from_stored(event_type, schema_version, payload), recorded_at)
        if aggregate.version == 0:
            raise StreamNotFound(stream_id)
        return aggregate

    def _events_after_latest_snapshot(
        self, stream_id: UUID, as_of: datetime | None, use_snapshots: bool
    ) -> list[list]:
        """Select (version, type, schema version, payload, recorded at) in version order.

        Plain SQL (events/sql.py): every command loads its pet, and compiling the ORM's
        Subquery/Coalesce version of this cost ten times running it.
        """
        params = prepared(StoredEvent, stream_id=stream_id, recorded_at=as_of)
        # Another kind of stream with this id (an adoption's, say) is not this aggregate's.
        params["stream_type"] = self.aggregate_type.stream_type
        where = "stream_id = %(stream_id)s AND stream_type = %(stream_type)s"
        if as_of is not None:
            where += " AND recorded_at <= %(recorded_at)s"
        if use_snapshots:
            params["snapshot_version"] = self.aggregate_type.snapshot_version
            taken_by = " AND last_recorded_at <= %(recorded_at)s" if as_of is not None else ""
            where += (
                " AND stream_version > COALESCE((SELECT MAX(stream_version)"
                f" FROM {Snapshot._meta.db_table} WHERE stream_id = %(stream_id)s"
                f" AND snapshot_version = %(snapshot_version)s{taken_by}), 0)"
            )
        return select(StoredEvent, _LOADED_FIELDS, where=where, params=params, order_by="stream_version")

    def _snapshots(self, stream_id: UUID, as_of: datetime | None):
        snapshots = Snapshot.objects.filter(
            stream_id=stream_id, snapshot_version=self.aggregate_type.snapshot_version
        )
        return snapshots.filter(last_recorded_at__lte=as_of) if as_of is not None else snapshots

    def _start_from(self, stream_id: UUID, as_of: datetime | None, rows: list) -> A | None:
        """Return the snapshot the events continue from (None when they start at version 1)."""
        if rows and rows[0][0] == 1:
            return None
        snapshots = self._snapshots(stream_id, as_of)
        if rows:  # exactly where the events begin, even if a newer snapshot appeared since
            snapshots = snapshots.filter(stream_version=rows[0][0] - 1)
        snapshot = snapshots.order_by("-stream_version").first()
        if snapshot is None:
            return None
        aggregate = self.aggregate_type.from_snapshot(stream_id, snapshot.stream_version, snapshot.state)
        aggregate.last_recorded_at = snapshot.last_recorded_at
        return aggregate

    def save(
        self,
        aggregate: A,
        *,
        metadata: dict[str, Any],
        expected_version: int | None = None,
        also_write: AlsoWrite | None = None,
    ) -> list[StoredEvent]:
        """Append the aggregate's new events (and `also_write`'s statements, see `append`);
        raise ConcurrencyConflict if the stream moved."""
        pending = aggregate.pending_events
        base_version = aggregate.version - len(pending)
        if expected_version is not None and expected_version != base_version:
            raise ConcurrencyConflict(aggregate.id, expected_version, base_version)
        now = timezone.now()
        announcements = [
            [aggregate.announce(message_type, event, now) for message_type in event.announces]
            for event in pending
        ]
        rows = append(
            stream_type=aggregate.stream_type,
            stream_id=aggregate.id,
            events=pending,
            expected_version=base_version,
            metadata=metadata,
            announcements=announcements,
            also_write=also_write,
        )
        aggregate.mark_saved()
        aggregate.last_recorded_at = rows[-1].recorded_at
        self._maybe_snapshot(aggregate, base_version)
        return rows

    def _maybe_snapshot(self, aggregate: A, base_version: int) -> None:
        every = settings.EVENTS_SNAPSHOT_EVERY
        if every and aggregate.version // every > base_version // every:
            Snapshot.objects.create(
                stream_id=aggregate.id,
                stream_version=aggregate.version,
                snapshot_version=aggregate.snapshot_version,
                state=aggregate.snapshot_state(),
                last_recorded_at=aggregate.last_recorded_at,
            )


def last_position(stream_id: UUID) -> int:
    """Return the global position of the stream's latest event (0 if none)."""
    latest = StoredEvent.objects.filter(stream_id=stream_id).order_by("-stream_version")
    return latest.values_list("position", flat=True).first() or 0


class RecordedEvent(NamedTuple):
    """An event as handlers see it: the stored facts plus the parsed, upcast payload.

    A named tuple: a rebuild makes a million of them, at a quarter of a frozen dataclass's cost.
    """

    event_id: UUID
    event_type: str
    stream_id: UUID
    stream_version: int
    position: int
    recorded_at: datetime
    #: The metadata, or its JSON text from read_all: few projections read it, so a replay
    #: decodes it only when asked (`metadata`).
    raw_metadata: dict[str, Any] | str
    event: DomainEvent

    @property
    def metadata(self) -> dict[str, Any]:
        raw = self.raw_metadata
        return json.loads(raw) if isinstance(raw, str) else raw

    @classmethod
    def from_row(cls, row: StoredEvent, *, parse: Callable = event_from_stored) -> RecordedEvent:
        """The stored facts and the payload, parsed by `parse(event_type, schema_version, payload)`."""
        return cls._of(row, row.metadata, parse(row.event_type, row.schema_version, row.payload))

    @classmethod
    def from_log_row(cls, row: LogRow) -> RecordedEvent:
        """The same, from a read_all row (payload and metadata still JSON text)."""
        event = event_from_stored_json(row.event_type, row.schema_version, row.payload_json)
        return cls._of(row, row.metadata_json, event)

    @classmethod
    def _of(
        cls, row: StoredEvent | LogRow, metadata: dict[str, Any] | str, event: DomainEvent
    ) -> RecordedEvent:
        return cls(
            row.event_id, row.event_type, row.stream_id, row.stream_version, row.position, row.recorded_at,
            metadata, event,
        )  # fmt: skip


def recorded_event(event_id: UUID) -> RecordedEvent:
    """Load one event by id, parsed and upcast (raises StoredEvent.DoesNotExist)."""
    return RecordedEvent.from_row(StoredEvent.objects.get(event_id=event_id))


def stream_events(stream_id: UUID, stream_type: str) -> list[StoredEvent]:
    """Return every event of one stream of this type, oldest first."""
    events = StoredEvent.objects.filter(stream_id=stream_id, stream_type=stream_type)
    return list(events.order_by("stream_version"))


#: read_all's rows: the StoredEvent columns, payload and metadata still JSON text
#: (RecordedEvent.from_log_row parses them; a projection that skips an event never pays).
_AS_TEXT = {"payload": "payload_json", "metadata": "metadata_json"}
LogRow = namedtuple("LogRow", [_AS_TEXT.get(f.attname, f.attname) for f in StoredEvent._meta.concrete_fields])


def events_after(after: LogPosition):
    """Every recorded event after `after` in reader order, committed or not yet visible."""
    # A row comparison, not (tx > X) OR (tx = X AND pos > P): PostgreSQL bounds the index scan
    # by a row comparison, but reads the OR form from the start of the index (100x at 1M rows).
    table = StoredEvent._meta.db_table
    return StoredEvent.objects.extra(
        where=[f'("{table}"."transaction_id", "{table}"."position") > (%s, %s)'],
        params=[after.transaction_id, after.position],
    )


def read_all(*, after: LogPosition = LogPosition(), limit: int = 1000) -> list[LogRow]:
    """Return committed events after `after`, in reader order, never skipping a late commit.

    Rows are light named tuples (LogRow), not model instances: a rebuild reads millions.
    """
    as_text = {alias: Cast(column, TextField()) for column, alias in _AS_TEXT.items()}
    events = events_after(after).annotate(**as_text).order_by("transaction_id", "position")
    if connection.vendor != "postgresql":
        return [LogRow._make(values) for values in events.values_list(*LogRow._fields)[:limit]]
    # Only rows of transactions that finished before the oldest still-running one: anything
    # newer may yet be joined by a lower position that commits later.
    events = events.filter(
        transaction_id__lt=RawSQL("pg_snapshot_xmin(pg_current_snapshot())::text::bigint", [])
    )
    sql, params = events.values_list(*LogRow._fields)[:limit].query.sql_with_params()
    with connection.cursor() as cursor:
        # Timestamps come through psycopg's C loader (petstore/postgresql); the other columns
        # need no conversion (the JSON ones stay text), so the rows skip Django's converters.
        cursor.execute(sql, params)
        return [LogRow._make(values) for values in cursor.fetchall()]


def log_position_of(position: int) -> LogPosition | None:
    """Return the reader position of the event at a global position, if it exists."""
    row = StoredEvent.objects.filter(position=position).values_list("transaction_id", "position")
    found = row.first()
    return LogPosition(*found) if found else None

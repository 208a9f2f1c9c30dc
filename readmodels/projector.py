"""The projection framework: follow the event log into query tables, exactly once.

A projection names the event types it handles (one small function each) and the tables it
keeps. Its checkpoint — the (transaction id, position) of the last event applied — is saved
in the same transaction as the batch's writes, so a projector killed mid-batch resumes where
the last commit left it and nothing is applied twice. Events come from events.store.read_all,
which never passes an event whose transaction commits late.

Writes are gathered per batch (``Batch``) and flushed with one bulk upsert per table, which
is what makes replaying a million events take seconds rather than minutes.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from functools import cache
from itertools import islice
from operator import attrgetter
from typing import Any
from uuid import UUID

from django import db
from django.db import connection, models, transaction
from django.db.models import Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from events.store import LogPosition, LogRow, RecordedEvent, events_after, read_all

from .models import ProjectionDeadLetter, ProjectionState

logger = logging.getLogger(__name__)

Handler = Callable[[RecordedEvent, "Batch"], None]


@dataclass
class Projection:
    name: str
    tables: tuple[type[models.Model], ...]
    #: "stop" halts at an event it cannot apply; "dead_letter" records it and goes on.
    on_error: str = "stop"
    #: Re-applying events from any point gives the same rows (upserts, no counters).
    replayable_from_any_point: bool = True
    #: Tables keyed by the event's stream id, loaded for a whole batch in one query.
    keyed_by_stream: tuple[type[models.Model], ...] = ()
    handlers: dict[str, Handler] = field(default_factory=dict)

    def on(self, *event_types: str) -> Callable[[Handler], Handler]:
        """Register the decorated function for these event types."""

        def register(fn: Handler) -> Handler:
            for event_type in event_types:
                self.handlers[event_type] = fn
            return fn

        return register


PROJECTIONS: dict[str, Projection] = {}


def projection(
    name: str,
    *,
    tables: tuple,
    on_error: str = "stop",
    replayable_from_any_point: bool = True,
    keyed_by_stream: tuple = (),
) -> Projection:
    """Declare a projection; its handlers are registered with ``.on(...)``."""
    declared = Projection(name, tables, on_error, replayable_from_any_point, keyed_by_stream)
    PROJECTIONS[name] = declared
    return declared


#: From this many rows a batch is written by COPY (four statements, but cheap per row); live
#: catch-up batches are small, and one INSERT … ON CONFLICT is quicker for them.
COPY_FROM_ROWS = 200


class Batch:
    """The rows one batch of events reads and writes, flushed at the end in bulk."""

    def __init__(self, generation: int, *, memory: RowMemory | None = None) -> None:
        self.generation = generation
        self._rows: dict[type[models.Model], dict[Any, Any]] = memory.rows if memory else {}
        self._memory_complete = bool(memory and memory.complete)
        self._dirty: dict[type[models.Model], set[Any]] = {}
        self.memo: dict[str, dict] = {}  # lookups made once per batch (see lookup)
        self.events: list[RecordedEvent] = []  # this batch's events, for lookups done in bulk

    def prefetch(self, table: type[models.Model], keys: Iterable[Any]) -> None:
        """Load the rows for these keys in one query (absent ones are remembered as None)."""
        cache = self._rows.setdefault(table, {})
        missing = {k for k in keys if k not in cache}
        if not missing:
            return
        if self._memory_complete:  # every row of this generation is in memory: these have none
            cache.update(dict.fromkeys(missing))
            return
        key = table.projection_key
        found = table.objects.filter(generation=self.generation)
        if connection.vendor == "postgresql":
            # One array parameter, not thousands of IN placeholders for psycopg to parse.
            column = connection.ops.quote_name(table._meta.get_field(key).column)
            found = found.extra(where=[f"{column} = ANY(%s)"], params=[list(missing)])
        else:
            found = found.filter(**{f"{key}__in": missing})
        make = row_type(table).from_values
        for values in found.values_list(*_row_fields(table)):
            row = make(values)
            cache[getattr(row, key)] = row
        for k in missing:
            cache.setdefault(k, None)

    def lookup(self, name: str, key: Any, fetch: Callable[[Any], dict]) -> Any:
        """A value from outside the read model (a shelter's name…), fetched once per batch.

        `fetch(key)` returns {key: value} for `key` and whatever else this batch will ask for;
        it runs again only for a key it did not cover, which is then remembered as None.
        """
        found = self.memo.get(name)
        if found is None or key not in found:
            found = self.memo[name] = fetch(key)
            found.setdefault(key, None)
        return found[key]

    def new(self, table: type[models.Model], **values: Any) -> Any:
        """A fresh row of `table` (written only once `put`)."""
        return row_type(table)(**values)

    def get(self, table: type[models.Model], key: Any) -> Any:
        """The row of `table` with this key in this batch's generation, or None."""
        rows = self._rows.get(table)
        if rows is None or key not in rows:  # usually prefetched for the whole batch
            self.prefetch(table, [key])
            rows = self._rows[table]
        return rows[key]

    def put(self, row: Any) -> None:
        """Write the row (a `new` or `get` one) when the batch is flushed."""
        table = row.table
        row.generation = self.generation
        key = getattr(row, table.projection_key)
        self._rows.setdefault(table, {})[key] = row
        self._dirty.setdefault(table, set()).add(key)

    def writes(self) -> dict[type[models.Model], list[tuple]]:
        """Take the rows put since the last call, as value tuples (safe to write elsewhere
        while later events change the rows themselves)."""
        taken = {}
        for table, keys in self._dirty.items():
            values_of, rows = _values_getter(table), self._rows[table]
            taken[table] = [values_of(rows[key]) for key in keys]
        self._dirty = {}
        return taken

    def flush(self) -> None:
        write_rows(self.writes())


class WriteRefused(Exception):
    """The database refused rows a batch wrote (a constraint, a value too long for its
    column): the fault of one of the batch's events, not of the database."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


def write_rows(writes: dict[type[models.Model], list[tuple]]) -> None:
    """Upsert each table's rows (value tuples in _written_fields order) in bulk; raise
    WriteRefused if the database refuses them."""
    try:
        for table, rows in writes.items():
            if connection.vendor == "postgresql" and len(rows) >= COPY_FROM_ROWS:
                _copy_upsert(table, rows)
            else:
                unique = ["generation", table.projection_key]
                names = _row_fields(table)
                table.objects.bulk_create(
                    [table(**dict(zip(names, values, strict=True))) for values in rows],
                    update_conflicts=True,
                    unique_fields=unique,
                    update_fields=[f.name for f in _written_fields(table) if f.name not in unique],
                    batch_size=500,
                )
    except Exception as error:
        if database_unavailable(error):
            raise
        raise WriteRefused(error) from error


def database_unavailable(error: Exception) -> bool:
    """Whether the error is the database's (gone, timed out, deadlocked), not an event's:
    then the batch is retried and the projection goes on."""
    driver = connection.Database  # COPY is psycopg's own API: its errors are not Django's
    unavailable = (db.OperationalError, db.InterfaceError, driver.OperationalError, driver.InterfaceError)
    return isinstance(error, unavailable)


@cache
def _values_getter(table: type[models.Model]) -> Callable[[Any], tuple]:
    """A function from a row to its written values, in _written_fields order."""
    fields = _written_fields(table)
    if not any(f.choices for f in fields):
        return attrgetter(*(f.attname for f in fields))  # one C call per row
    plain = [(f.attname, bool(f.choices)) for f in fields]
    # Choices are str enums: psycopg's COPY would write the member's name, not its value.
    return lambda row: tuple(_plain(getattr(row, a)) if enum else getattr(row, a) for a, enum in plain)


#: A rebuild remembers up to this many rows per table from one batch to the next.
REMEMBERED_ROWS = 1_000_000  # about 0.5 KB each for a pet listing: 0.5 GB at most


class RowMemory:
    """A rebuild's rows, kept from one batch to the next: it alone writes its generation,
    so it need not read back what it has just written.

    Bounded: past REMEMBERED_ROWS rows of a table, the oldest half is forgotten. While the
    generation started empty and nothing has been forgotten, a key it lacks has no row.
    """

    def __init__(self, *, starts_empty: bool) -> None:
        self.rows: dict[type[models.Model], dict[Any, Any]] = {}
        self.complete = starts_empty

    def forget_oldest(self) -> None:
        for rows in self.rows.values():
            if len(rows) > REMEMBERED_ROWS:
                for key in list(islice(rows, len(rows) - REMEMBERED_ROWS // 2)):
                    del rows[key]
                self.complete = False


def _written_fields(table: type[models.Model]) -> list[models.Field]:
    return [f for f in table._meta.concrete_fields if not f.primary_key]


@cache
def _row_fields(table: type[models.Model]) -> tuple[str, ...]:
    return tuple(f.attname for f in _written_fields(table))


@cache
def row_type(table: type[models.Model]) -> type:
    """A plain slotted class with the table's columns: a read-model row as projections see it.

    A rebuild handles hundreds of thousands of rows, and a Django model instance costs several
    microseconds to create (signals, field descriptors); projections only set attributes, and
    the batch writes the rows in bulk itself.
    """
    columns = []
    for f in _written_fields(table):
        if f.has_default():
            columns.append((f.attname, Any, field(default_factory=f.get_default)))
        elif f.attname == "generation" or f.null:  # the batch sets the generation on put
            columns.append((f.attname, Any, field(default=None)))
        else:
            columns.append((f.attname, Any))
    names = _row_fields(table)

    def from_values(cls, values: tuple) -> Any:
        return cls(**dict(zip(names, values, strict=True)))

    namespace = {"table": table, "from_values": classmethod(from_values)}
    return make_dataclass(f"{table.__name__}Row", columns, namespace=namespace, kw_only=True, slots=True)


def _copy_upsert(table: type[models.Model], rows: list[tuple]) -> None:
    """Upsert rows by COPY into a scratch table, then one INSERT … ON CONFLICT.

    A rebuild writes hundreds of thousands of rows: COPY takes plain Python values with
    psycopg's C adapters, where bulk_create prepares every value through its field (5x slower).
    """
    fields = _written_fields(table)
    quote = connection.ops.quote_name
    target, scratch = quote(table._meta.db_table), quote(f"scratch_{table._meta.db_table}")
    columns = ", ".join(quote(f.column) for f in fields)
    key_fields = ("generation", table.projection_key)
    key = ", ".join(quote(table._meta.get_field(name).column) for name in key_fields)
    updates = ", ".join(f"{quote(f.column)} = EXCLUDED.{quote(f.column)}" for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {scratch} AS SELECT {columns} FROM {target} WITH NO DATA"
        )
        with cursor.copy(f"COPY {scratch} ({columns}) FROM STDIN") as copy:
            for values in rows:
                copy.write_row(values)
        cursor.execute(
            f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {scratch} "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
        cursor.execute(f"TRUNCATE {scratch}")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


class ProjectionFailed(Exception):
    def __init__(self, row: LogRow, error: Exception) -> None:
        super().__init__(f"{row.event_type} at #{row.position}: {type(error).__name__}: {error}")
        self.row, self.error = row, error


def state_of(name: str, *, lock: bool = False) -> ProjectionState:
    """Return the projection's state row (creating it the first time), locked if asked."""
    states = ProjectionState.objects.select_for_update() if lock else ProjectionState.objects
    try:
        return states.get(name=name)
    except ProjectionState.DoesNotExist:
        ProjectionState.objects.get_or_create(name=name)
        return states.get(name=name)


def live_generation_of(name: str) -> RawSQL:
    """The live generation as a subquery, so a read needs no extra round trip.

    Written out rather than built from a queryset: every query answer embeds it, and building
    and compiling the inner queryset cost more than running it.
    """
    return RawSQL(live_generation_sql("%s"), [name], output_field=models.PositiveIntegerField())


def live_generation_sql(placeholder: str) -> str:
    """A subquery: the live generation of the projection the placeholder names (name is unique)."""
    return f"SELECT generation FROM {ProjectionState._meta.db_table} WHERE name = {placeholder}"


def live_generation(name: str) -> int:
    return state_of(name).generation


def apply_events(
    projection: Projection, rows: list[LogRow], batch: Batch, skip: Collection[UUID] = ()
) -> None:
    """Apply each event this projection handles (but those in `skip`) and write the rows;
    raise ProjectionFailed at the first event that fails, in its handler or in its rows."""
    _apply(projection, rows, batch, skip)
    try:
        with transaction.atomic():  # a savepoint: the transaction outlives a refused write
            batch.flush()
    except WriteRefused:
        _write_event_by_event(projection, rows, batch.generation, skip)


def _write_event_by_event(
    projection: Projection, rows: list[LogRow], generation: int, skip: Collection[UUID]
) -> None:
    """Apply and write the events one at a time: raise ProjectionFailed at the first whose
    rows the database refuses (then nothing is written), or write them all."""
    batch = Batch(generation)
    with transaction.atomic():  # all or nothing: the caller may try again without that event
        for row in rows:
            _apply(projection, [row], batch, skip)
            try:
                batch.flush()
            except WriteRefused as refused:
                raise ProjectionFailed(row, refused.error) from refused.error
    # Refused together, accepted one by one: the bulk write's fault (COPY…), not an event's.
    logger.warning("projection %s: a batch refused in bulk was written event by event", projection.name)


def skip_or_stop(projection: Projection, failure: ProjectionFailed, *, generation: int) -> None:
    """Re-raise the failure, unless the projection dead-letters: then record the event.

    The record names the generation it was skipped in: a rebuild tries the event again in
    its place, and at the swap only the events the new generation skipped stay listed.
    """
    if projection.on_error != "dead_letter":
        raise failure
    logger.error("projection %s skipped %s", projection.name, failure)
    listed = ProjectionDeadLetter.objects.filter(projection=projection.name, event_id=failure.row.event_id)
    # Never back to an older generation: the live tables still failing on an event a rebuild
    # also skipped must not make the swap forget it.
    newest = Greatest(Coalesce("generation", Value(0)), Value(generation))
    if not listed.update(error=str(failure), generation=newest):
        ProjectionDeadLetter.objects.get_or_create(
            projection=projection.name,
            event_id=failure.row.event_id,
            defaults={
                "position": failure.row.position,
                "event_type": failure.row.event_type,
                "error": str(failure),
                "generation": generation,
            },
        )


def _apply(projection: Projection, rows: list[LogRow], batch: Batch, skip: Collection[UUID] = ()) -> None:
    handled = [row for row in rows if row.event_type in projection.handlers and row.event_id not in skip]
    for table in projection.keyed_by_stream:
        batch.prefetch(table, {row.stream_id for row in handled})
    batch.events = [_parsed(row) for row in handled]  # all first: handlers look up in bulk
    for row, event in zip(handled, batch.events, strict=True):
        try:
            projection.handlers[row.event_type](event, batch)
        except Exception as error:
            if database_unavailable(error):
                raise
            raise ProjectionFailed(row, error) from error


def _parsed(row: LogRow) -> RecordedEvent:
    try:
        return RecordedEvent.from_log_row(row)
    except Exception as error:
        raise ProjectionFailed(row, error) from error


def _advance(state: ProjectionState, rows: list[LogRow], *, rebuilding: bool = False) -> None:
    last = rows[-1]
    if rebuilding:
        state.rebuild_transaction_id, state.rebuild_position = last.transaction_id, last.position
    else:
        state.transaction_id, state.position = last.transaction_id, last.position
        state.events_applied += len(rows)
        state.last_event_at = last.recorded_at
    state.save()


def catch_up(projection: Projection, *, batch_size: int = 1000) -> int:
    """Apply the next batch of events to the live tables; return how many events it read."""
    try:
        with transaction.atomic():
            state = state_of(projection.name, lock=True)
            if state.status == ProjectionState.Status.FAILED:
                return 0
            rows = read_all(after=LogPosition(state.transaction_id, state.position), limit=batch_size)
            if rows:
                apply_events(projection, rows, Batch(state.generation))
                _advance(state, rows)
            return len(rows)
    except ProjectionFailed as failure:
        return _settle_failure(projection, failure, batch_size)


def _settle_failure(projection: Projection, failure: ProjectionFailed, batch_size: int) -> int:
    """Commit the events before the failing one, then stop there or dead-letter it and go on."""
    logger.error("projection %s: %s", projection.name, failure)
    with transaction.atomic():
        state = state_of(projection.name, lock=True)
        rows = read_all(after=LogPosition(state.transaction_id, state.position), limit=batch_size)
        before = rows[: rows.index(failure.row)] if failure.row in rows else []
        if before:
            apply_events(projection, before, Batch(state.generation))
            _advance(state, before)
        if projection.on_error == "dead_letter":
            skip_or_stop(projection, failure, generation=state.generation)
            _advance(state, [failure.row])
            return len(before) + 1
        state.status, state.error = ProjectionState.Status.FAILED, str(failure)
        state.error_position = failure.row.position
        state.save()
        return len(before)


def resume(name: str) -> None:
    """Let a stopped projection try its failing event again (after a fix)."""
    ProjectionState.objects.filter(name=name).update(
        status=ProjectionState.Status.RUNNING, error="", error_position=None
    )


def reset(name: str) -> None:
    """Forget everything the projection built; it starts again from the first event."""
    projection = PROJECTIONS[name]
    with transaction.atomic():
        state = state_of(name, lock=True)
        for table in projection.tables:
            table.objects.all().delete()
        ProjectionDeadLetter.objects.filter(projection=name).delete()
        state.transaction_id = state.position = state.events_applied = 0
        state.status, state.error, state.error_position = ProjectionState.Status.RUNNING, "", None
        state.rebuild_generation, state.last_event_at = None, None
        state.save()


class RebuildInterrupted(Exception):
    """Another rebuild of the same projection wrote batches meanwhile: run it again to resume."""


def rebuild(projection: Projection, *, batch_size: int = 5000, progress=None) -> int:
    """Replay the whole log into a fresh generation, then swap it in atomically.

    Resumable: an interrupted rebuild continues from its own checkpoint. Live catch-up keeps
    the current generation answering queries until the swap. Each batch's rows and checkpoint
    are committed by a writer thread while the next batch is read and applied (WriteBehind).
    An event the projection cannot apply, in its handler or in the rows it writes, stops the
    rebuild there with nothing swapped in, or is dead-lettered.
    """
    if connection.in_atomic_block:  # its writer thread could not see the caller's uncommitted rows
        raise transaction.TransactionManagementError(
            "rebuild() commits batch by batch: call it outside a transaction"
        )
    generation, starts_empty = _start_rebuild(projection)
    state = state_of(projection.name)
    after = LogPosition(state.rebuild_transaction_id, state.rebuild_position)
    run = _RebuildRun(after, RowMemory(starts_empty=starts_empty))
    while True:
        try:
            _replay_full_batches(projection, generation, run, batch_size, progress)
            break
        except WriteRefused:  # nothing was written after the refused batch
            _write_refused_batch(projection, generation, run, batch_size)
    with transaction.atomic():  # the tail, read again under the lock, and the swap
        state = _rebuild_state(projection, generation, expected=run.after)
        rows = read_all(after=run.after, limit=batch_size)
        if rows:
            _apply_tail(projection, rows, generation, run.memory, run.skipped)
            _advance(state, rows, rebuilding=True)
            run.replayed += len(rows)
        _analyze(projection)
        # Only the events this generation skipped stay listed: the others now apply.
        dead_letters = ProjectionDeadLetter.objects.filter(projection=projection.name)
        dead_letters.exclude(generation=generation).delete()
        old = state.generation
        state.generation, state.rebuild_generation = generation, None
        state.transaction_id, state.position = state.rebuild_transaction_id, state.rebuild_position
        state.status, state.error, state.error_position = ProjectionState.Status.RUNNING, "", None
        state.events_applied = run.replayed
        state.save()
    if progress:
        progress(run.replayed, state.position)
    _drop_generation(projection, old)
    return run.replayed


@dataclass
class _RebuildRun:
    """How far this run of a rebuild has got, kept across a batch the database refuses."""

    after: LogPosition  # the last event read and applied
    memory: RowMemory
    replayed: int = 0  # events replayed by this run
    skipped: set[UUID] = field(default_factory=set)  # events the projection dead-lettered
    #: (after, replayed) before the batch last handed to the writer: where to go back to if
    #: the database refuses it.
    writing: tuple[LogPosition, int] | None = None


def _replay_full_batches(
    projection: Projection, generation: int, run: _RebuildRun, batch_size: int, progress
) -> None:
    """Apply the log's full batches, each written while the next is applied; raise
    WriteRefused if the database refuses a batch (the run is then past it)."""
    with WriteBehind() as writer, automatic_gc_paused():
        while len(rows := read_all(after=run.after, limit=batch_size)) == batch_size:
            gc.collect(1)  # the young generations only (see automatic_gc_paused)
            if not run.memory.complete:
                writer.wait()  # the batch may read rows back: the last one must be written
            batch = Batch(generation, memory=run.memory)
            try:
                _apply(projection, rows, batch, run.skipped)
            except ProjectionFailed as failure:  # stops the rebuild where it failed, or:
                skip_or_stop(projection, failure, generation=generation)
                run.skipped.add(failure.row.event_id)
                writer.wait()
                run.memory = RowMemory(starts_empty=False)  # the failed try may have changed its rows
                continue  # the same batch again, without that event
            reached = LogPosition.of(rows[-1])
            writer.write(_write_rebuild_batch, projection, generation, batch.writes(), run.after, reached)
            run.writing = (run.after, run.replayed)
            run.after, run.replayed = reached, run.replayed + len(rows)
            run.memory.forget_oldest()
            if progress:
                progress(run.replayed, run.after.position)


def _write_refused_batch(projection: Projection, generation: int, run: _RebuildRun, batch_size: int) -> None:
    """Write the batch the database refused again, event by event, with its checkpoint; the
    event whose rows it refuses stops the rebuild, or is skipped and the batch tried again."""
    (run.after, run.replayed), run.memory = run.writing, RowMemory(starts_empty=False)
    rows = read_all(after=run.after, limit=batch_size)
    try:
        with transaction.atomic():
            state = _rebuild_state(projection, generation, expected=run.after)
            _write_event_by_event(projection, rows, generation, run.skipped)
            _advance(state, rows, rebuilding=True)
    except ProjectionFailed as failure:
        skip_or_stop(projection, failure, generation=generation)
        run.skipped.add(failure.row.event_id)
        return
    run.after, run.replayed = LogPosition.of(rows[-1]), run.replayed + len(rows)


@contextmanager
def automatic_gc_paused():
    """Pause Python's automatic garbage collector; a rebuild collects the young generations
    itself, once per batch.

    A rebuild keeps up to millions of rows alive (RowMemory), and the automatic collector
    kept walking them all: 40 % of a rebuild's CPU. Reference counting still frees almost
    everything at once; the per-batch collection catches the rare cycle, and the remembered
    rows, once they have survived it, are not walked again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _apply_tail(projection: Projection, rows, generation: int, memory: RowMemory, skipped: set[UUID]) -> None:
    """Apply a rebuild's last rows, skipping (as the batches before) what it dead-letters."""
    while True:
        try:
            return apply_events(projection, rows, Batch(generation, memory=memory), skipped)
        except ProjectionFailed as failure:
            skip_or_stop(projection, failure, generation=generation)
            skipped.add(failure.row.event_id)
            memory = RowMemory(starts_empty=False)  # the failed try may have changed its rows


def _rebuild_state(projection: Projection, generation: int, *, expected: LogPosition) -> ProjectionState:
    """The state row, locked, once sure no other rebuild has moved the checkpoint meanwhile."""
    state = state_of(projection.name, lock=True)
    at = LogPosition(state.rebuild_transaction_id, state.rebuild_position)
    if state.rebuild_generation != generation or at != expected:
        raise RebuildInterrupted(
            f"another rebuild of {projection.name} moved its checkpoint to #{at.position} "
            f"(expected #{expected.position}); run it again to resume"
        )
    return state


def _write_rebuild_batch(projection, generation, writes, expected: LogPosition, reached: LogPosition) -> None:
    with transaction.atomic():
        state = _rebuild_state(projection, generation, expected=expected)
        write_rows(writes)
        state.rebuild_transaction_id, state.rebuild_position = reached.transaction_id, reached.position
        state.save()


class WriteBehind:
    """Commit a rebuild's batches on a second connection, one at a time, while the caller
    reads and applies the next batch: the database writes as Python works.

    A failed write is raised by the next write or wait. On SQLite, which allows one writer at
    a time, writes happen in turn on the caller's own connection (their errors raised as late,
    so that a rebuild always knows which batch failed: the one it handed over last).
    """

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rebuild-writer")
        self._pending: Future | None = None
        self._inline = connection.vendor != "postgresql"

    def write(self, fn, *args) -> None:
        self.wait()
        if self._inline:
            self._pending = Future()
            try:
                fn(*args)
            except Exception as error:
                self._pending.set_exception(error)
            else:
                self._pending.set_result(None)
        else:
            self._pending = self._thread.submit(fn, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.wait()  # an error while applying still lets the written batch finish
        finally:  # the writing thread's own connection must not outlive the rebuild
            self._thread.submit(lambda: connection.close()).result()  # the thread's connection
            self._thread.shutdown()


def _analyze(projection: Projection) -> None:
    """Refresh the planner's statistics: a fresh generation is invisible to them until then."""
    with connection.cursor() as cursor:
        for table in projection.tables:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table._meta.db_table)}")


def _start_rebuild(projection: Projection) -> tuple[int, bool]:
    """Return the generation to build and whether it starts empty (False: resumed)."""
    with transaction.atomic():
        state = state_of(projection.name, lock=True)
        if state.rebuild_generation is not None:  # resume the interrupted one
            return state.rebuild_generation, False
        state.rebuild_generation = state.generation + 1
        state.rebuild_transaction_id = state.rebuild_position = 0
        state.save()
    _drop_generation(projection, state.rebuild_generation)  # leftovers of an abandoned attempt
    return state.rebuild_generation, True


def _drop_generation(projection: Projection, generation: int) -> None:
    for table in projection.tables:
        table.objects.filter(generation=generation).delete()


def replay_from(projection: Projection, *, after: LogPosition, batch_size: int = 5000) -> int:
    """Re-apply events after `after` to the live tables (only for idempotent projections)."""
    if not projection.replayable_from_any_point:
        raise ValueError(f"{projection.name} keeps counters: rebuild it from the beginning instead")
    replayed, skipped = 0, set()
    while True:
        try:
            with transaction.atomic():
                state = state_of(projection.name, lock=True)
                ceiling = LogPosition(state.transaction_id, state.position)
                rows = [r for r in read_all(after=after, limit=batch_size) if LogPosition.of(r) <= ceiling]
                if not rows:
                    return replayed
                apply_events(projection, rows, Batch(state.generation), skipped)
        except ProjectionFailed as failure:  # the batch rolled back: stop, or again without it
            skip_or_stop(projection, failure, generation=state.generation)
            skipped.add(failure.row.event_id)
            continue
        after, replayed = LogPosition.of(rows[-1]), replayed + len(rows)


@dataclass(frozen=True)
class Lag:
    events: int
    seconds: float


def lag(name: str, *, state: ProjectionState | None = None) -> Lag:
    """How far the projection trails the log: events not yet applied, and their age.

    Pass the projection's `state` when you hold it already: it is not read again.
    """
    state = state or state_of(name)
    behind = events_after(LogPosition(state.transaction_id, state.position))
    oldest = behind.order_by("position").values_list("recorded_at", flat=True).first()
    seconds = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return Lag(behind.count(), max(0.0, seconds))

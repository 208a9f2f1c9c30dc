"""Run one handler on one event exactly once in effect, with retries and dead letters.

1. Take a PostgreSQL advisory lock for (handler, event), held by the session, not a
   transaction: a duplicate message arriving while the first copy runs waits its turn (it is
   rescheduled), and a worker that dies releases the lock with its connection.
2. The Delivery row is the inbox: already `succeeded` or `dead` means acknowledge and skip.
3. The handler runs inside a transaction that also marks the delivery `succeeded`, so its
   database writes and the inbox record commit together. Handlers do slow work (SMTP, PDF)
   before their first write, so the transaction holds no transaction id while they wait.
   The statement that marks it `succeeded` also lets go of the lock (the row lock it takes
   guards the rest of the transaction), which saves every task a round trip.
4. A failure is recorded; the retry is an outbox row due after an exponential, jittered
   delay (kept in the database, never as a broker ETA); after the last attempt it is `dead`.
   A PermanentFailure (and a message that fails validation) is `dead` at once.
5. Attempts are counted when claimed, so one that kills its worker counts too: a message
   that keeps doing so is `dead` (WorkerLost) once it has used its attempts, not run for ever.
"""

from __future__ import annotations

import json
import logging
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from django.utils import timezone

from . import incoming, outbox, sql
from .handlers import HANDLERS, Handler, PermanentFailure
from .models import Delivery, StoredEvent

logger = logging.getLogger(__name__)

Status = Delivery.Status

# Fault drill (tests/adoptions/test_fanout_faults.py): the handler whose runs end their worker.
# Read once: a worker's environment is fixed, and deliver() runs for every task.
_CRASH_IN = os.environ.get("PETSTORE_HANDLER_CRASH")


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff with equal jitter (half to all of it), capped by HANDLER_RETRY_MAX_SECONDS."""
    doublings = min(max(0, attempts - 1), 64)  # far past any cap; 2.0**1024 would overflow
    base = settings.HANDLER_RETRY_BASE_SECONDS * 2**doublings
    ceiling = min(settings.HANDLER_RETRY_MAX_SECONDS, base)
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def _lock_key(handler: str, event_id: UUID) -> int:
    return sql.advisory_key(f"{handler}:{event_id}")


@contextmanager
def exclusive(handler: str, event_id: UUID):
    """Yield whether this worker holds the (handler, event) lock; always True off PostgreSQL."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = _lock_key(handler, event_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            _unlock(key)


def _unlock(key: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def deliver(handler_name: str, event_id: UUID) -> str:
    """Run the handler for the event unless it already ran; return what happened."""
    handler = HANDLERS[handler_name]
    with claimed(handler, event_id) as claim:
        if not claim.acquired:  # the same delivery is running right now on another worker
            outbox.enqueue_handler(handler, event_id, at=timezone.now() + timedelta(seconds=2))
            return "busy"
        if claim.row is None:  # not in our log: nothing to run, but staff must hear of it
            logger.error("%s got unknown event %s; recorded dead", handler.name, event_id)
            _record_unknown(handler, event_id)
            return "unknown_event"
        delivery = claim.delivery
        if delivery is None:
            return "skipped"
        if delivery.attempts > handler.attempts_allowed:  # the last attempts died with their worker
            return _fail(handler, delivery, WorkerLost(handler.attempts_allowed), permanent=True)
        try:
            event = incoming.received_event(handler, claim.row)  # checked before any handler code runs
        except incoming.InvalidMessage as error:  # it can never be handled: dead at once
            return _fail(handler, delivery, error, permanent=True)
        try:
            with transaction.atomic():
                if handler.name == _CRASH_IN:
                    os._exit(17)  # fault drill: the step kills its worker (out of memory, a native crash)
                handler.run(event)
                _finish(delivery, Status.SUCCEEDED, releasing=claim)
                _settled(handler, delivery)
        except Exception as error:  # any failure: record it, retry later or give up
            logger.warning(
                "%s failed on %s (attempt %s): %r", handler.name, event_id, delivery.attempts, error
            )
            if not claim.reacquire():  # a copy of this message took over once we let go: it records
                return "busy"
            return _fail(handler, delivery, error, permanent=isinstance(error, PermanentFailure))
    return Status.SUCCEEDED


def hard_time_limit_reached(handler_name: str, event_id: UUID) -> None:
    """Schedule another attempt of a step whose hard time limit is ending it.

    Called by the worker's main process (HandlerTask.on_failure) before it ends the pool
    process, which still holds the step's lock and may hold its delivery row: nothing here
    waits for either. The attempt is not marked failed (the next attempt's claim counts it,
    and a step that keeps outliving its limit goes dead as WorkerLost once its attempts are
    used); its error is written only if the row is free this instant. Without this the
    delivery stays `running` until recover_stalled finds it, minutes later.
    """
    handler = HANDLERS.get(handler_name)
    if handler is None:
        return
    error = f"TimeLimitExceeded: ran past its hard time limit of {handler.time_limit}s; its process was ended"
    running = Delivery.objects.filter(handler=handler.name, event_id=event_id, status=Status.RUNNING)
    try:
        with transaction.atomic():
            attempts = running.values_list("attempts", flat=True).first()
            if attempts is None:  # it finished after all
                return
            try:
                with transaction.atomic():  # a savepoint: a locked row costs only the error text
                    if connection.vendor == "postgresql":
                        with connection.cursor() as cursor:
                            cursor.execute("SET LOCAL lock_timeout = '100ms'")
                    running.update(last_error=error)
            except OperationalError:
                logger.info("%s on %s: its row is locked, the error is not recorded", handler.name, event_id)
            outbox.enqueue_handler(handler, event_id, at=timezone.now() + retry_delay(attempts))
    except DatabaseError:  # recover_stalled will find the delivery left running
        logger.warning(
            "could not schedule %s on %s after its time limit", handler.name, event_id, exc_info=True
        )
    finally:
        if not connection.in_atomic_block:  # the worker's main process keeps no connection of its own
            connection.close()


class WorkerLost(Exception):
    """Attempts ended without an outcome: the worker died running them (killed, out of memory,
    a crash in native code), and RabbitMQ handed the message out again. Without a limit a
    message that kills every worker would do so for ever."""

    def __init__(self, allowed: int) -> None:
        super().__init__(
            f"gave up after {allowed} attempts; the last ended without an outcome (the worker died)"
        )


@dataclass
class Claim:
    acquired: bool  # this worker took the (handler, event) lock
    row: StoredEvent | None = None  # the event, if it is in our log
    delivery: Delivery | None = None  # this attempt, None if the inbox says done already
    lock_key: int | None = None  # the lock's key, on PostgreSQL
    held: bool = False  # the lock is still ours (the success statement lets go of it early)

    def reacquire(self) -> bool:
        """Take the lock back after letting go early; False if another worker has it now.

        The success statement releases the lock before its transaction commits (one round
        trip less per task). Should that transaction then fail, a copy of the message may
        have claimed the delivery in between: it runs and records the attempt, not us.
        """
        if self.lock_key is None or self.held:
            return True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [self.lock_key])
            self.held = cursor.fetchone()[0]
        return self.held


@contextmanager
def claimed(handler: Handler, event_id: UUID):
    """Lock (handler, event), load the event and record an attempt: steps 1 and 2 above.

    On PostgreSQL all three are one statement (_CLAIM), as they run for every task; the lock
    is released when the block ends.
    """
    if connection.vendor != "postgresql":
        row = StoredEvent.objects.filter(event_id=event_id).first()
        yield Claim(True, row, _start(handler, row) if row else None)
        return
    key, now = _lock_key(handler.name, event_id), timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, {"key": key, "event_id": event_id, "handler": handler.name, "now": now})
        acquired, delivery_id, attempts, last_error, *event = cursor.fetchone()
    claim = Claim(acquired, lock_key=key, held=acquired)
    try:
        if acquired and event[0] is not None:
            values = dict(zip(_EVENT_COLUMNS, event, strict=True))
            for column in ("payload", "metadata"):  # jsonb comes as text on Django's connections
                values[column] = json.loads(values[column])
            claim.row = StoredEvent(**values)
            if delivery_id is not None:
                claim.delivery = _attempt(handler, claim.row, delivery_id, attempts, last_error, now)
        yield claim
    finally:
        if claim.held:
            _unlock(key)


_EVENT_COLUMNS = [f.attname for f in StoredEvent._meta.concrete_fields]

# One upsert records each attempt, unless the inbox says the delivery is done already.
_INSERT_ATTEMPT = """
INSERT INTO event_delivery
    (handler, event_id, event_type, status, attempts, last_error, created_at, started_at)
"""
_UNLESS_DONE = """
ON CONFLICT (handler, event_id) DO UPDATE
    SET status = 'running', attempts = event_delivery.attempts + 1, started_at = excluded.started_at
    WHERE event_delivery.status NOT IN ('succeeded', 'dead')
RETURNING id, attempts, last_error
"""

# pg_try_advisory_lock runs first (the event CTE waits on its InitPlan); the delivery upsert
# only happens for an event that exists, under the lock; the outer joins always return a row.
_CLAIM = f"""
WITH claim AS MATERIALIZED (SELECT pg_try_advisory_lock(%(key)s) AS acquired),
event AS MATERIALIZED (
    SELECT * FROM event_log WHERE event_id = %(event_id)s AND (SELECT acquired FROM claim)
),
started AS (
    {_INSERT_ATTEMPT}
    SELECT %(handler)s, event_id, event_type, 'running', 1, '', %(now)s, %(now)s FROM event
    {_UNLESS_DONE}
)
SELECT claim.acquired, started.id, started.attempts, started.last_error,
       {", ".join(f"event.{column}" for column in _EVENT_COLUMNS)}
FROM claim LEFT JOIN event ON true LEFT JOIN started ON true
"""

_START = f"{_INSERT_ATTEMPT} VALUES (%s, %s, %s, 'running', 1, '', %s, %s) {_UNLESS_DONE}"


def _start(handler: Handler, row: StoredEvent) -> Delivery | None:
    """Record an attempt (committed at once, so a crash still counts it); None if already done.

    One upsert instead of lock-read-insert-update: this runs for every task.
    """
    now = timezone.now()
    event_id = Delivery._meta.get_field("event_id").get_db_prep_value(row.event_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(_START, [handler.name, event_id, row.event_type, now, now])
        started = cursor.fetchone()
    if started is None:  # succeeded or dead already: the inbox says skip
        return None
    return _attempt(handler, row, *started, now)


def _attempt(handler: Handler, row: StoredEvent, delivery_id, attempts, last_error, now) -> Delivery:
    return Delivery(
        id=delivery_id,
        handler=handler.name,
        event_id=row.event_id,
        event_type=row.event_type,
        status=Status.RUNNING,
        attempts=attempts,
        last_error=last_error,
        started_at=now,
    )


def _finish(delivery: Delivery, status: str, error: str = "", *, releasing: Claim | None = None) -> None:
    """Record the outcome; with `releasing`, let go of the claim's lock in the same statement.

    Letting go before the transaction commits is safe: the UPDATE holds the delivery's row
    lock until then, and a copy of the message claiming it meanwhile waits on that row, then
    finds it succeeded. It saves every task the round trip of a separate unlock.
    """
    delivery.status, delivery.finished_at = status, timezone.now()
    delivery.last_error, delivery.next_attempt_at = error or delivery.last_error, None
    statement = sql.update_statement(  # plain SQL: every task runs this (events/sql.py)
        Delivery,
        delivery.pk,
        status=delivery.status,
        finished_at=delivery.finished_at,
        last_error=delivery.last_error,
        next_attempt_at=None,
    )
    if releasing is None or not releasing.held:
        sql.run(statement)
        return
    unlocked = sql.fetch(
        sql.Statement(
            f"{statement.sql} RETURNING pg_advisory_unlock(%s)", [*statement.params, releasing.lock_key]
        )
    )
    releasing.held = not unlocked  # no row updated, nothing returned: the lock is still ours


def _fail(handler: Handler, delivery: Delivery, error: Exception, *, permanent: bool = False) -> str:
    message = f"{type(error).__name__}: {error}"[:2000]
    if isinstance(error, SoftTimeLimitExceeded):  # its own text says nothing: "SoftTimeLimitExceeded()"
        message = f"SoftTimeLimitExceeded: ran past its soft time limit of {handler.soft_time_limit}s"
    with transaction.atomic():
        if permanent or delivery.attempts >= handler.attempts_allowed:
            _finish(delivery, Status.DEAD, message)
            _settled(handler, delivery)
        else:
            delivery.status, delivery.last_error = Status.FAILED, message
            delivery.next_attempt_at = timezone.now() + retry_delay(delivery.attempts)
            delivery.save(update_fields=["status", "last_error", "next_attempt_at"])
            outbox.enqueue_handler(handler, delivery.event_id, at=delivery.next_attempt_at)
    return delivery.status


def _settled(handler: Handler, delivery: Delivery) -> None:
    """Tell the handler's owner, inside the transaction that recorded the outcome.

    In the same transaction, so a crash can never leave e.g. an adoption "processing" after
    its last step succeeded. The owner hears of the delivery row, not the parsed event: a
    message that failed validation settles too.
    """
    if handler.on_settled is not None:
        handler.on_settled(delivery)


UNKNOWN_EVENT_TYPE = "(not in the log)"


def _record_unknown(handler: Handler, event_id: UUID) -> None:
    """A dead letter for a message naming an event our log lacks (a foreign publisher, or an
    erased log): acknowledged, so it does not loop, and listed, so it is not lost silently."""
    error = f"event {event_id} is not in the event log; the message was acknowledged"
    dead = {"status": Status.DEAD, "last_error": error, "finished_at": timezone.now()}
    Delivery.objects.update_or_create(
        handler=handler.name,
        event_id=event_id,
        defaults=dead,
        create_defaults={**dead, "event_type": UNKNOWN_EVENT_TYPE, "attempts": 1},
    )


def redrive(*, handler: str | None = None, event_id: UUID | None = None) -> int:
    """Give dead deliveries a fresh set of attempts; return how many were scheduled.

    Each handler hears of it (on_settled, status "pending"), so e.g. an adoption leaves
    needs_attention as soon as its dead step is on its way again.
    """
    dead = Delivery.objects.filter(status=Status.DEAD)
    if handler:
        dead = dead.filter(handler=handler)
    if event_id:
        dead = dead.filter(event_id=event_id)
    with transaction.atomic():
        redriven = list(dead.select_for_update())
        for delivery in redriven:
            handler = HANDLERS[delivery.handler]
            delivery.status, delivery.attempts, delivery.finished_at = Status.PENDING, 0, None
            delivery.save(update_fields=["status", "attempts", "finished_at"])
            outbox.enqueue_handler(handler, delivery.event_id, at=timezone.now())
            _settled(handler, delivery)
    return len(redriven)


def recover_stalled() -> int:
    """Count deliveries left `running` past their time limit as failed attempts.

    Their worker died, or its message was acknowledged after a hard time limit: nobody will
    finish them. The lock tells a live worker apart from a dead one. Returns how many.
    """
    now = timezone.now()
    recovered = 0
    for delivery in Delivery.objects.filter(status=Status.RUNNING):
        handler = HANDLERS.get(delivery.handler)
        limit = timedelta(
            seconds=(handler.time_limit if handler else 0) + settings.DELIVERY_STALL_MARGIN_SECONDS
        )
        if handler is None or delivery.started_at > now - limit:
            continue
        with exclusive(handler.name, delivery.event_id) as acquired:
            if not acquired:  # a worker holds it: still alive
                continue
            with transaction.atomic():
                stalled = Delivery.objects.select_for_update().get(pk=delivery.pk)
                if stalled.status != Status.RUNNING or stalled.started_at != delivery.started_at:
                    continue
                error = TimeoutError(
                    f"no outcome {int(limit.total_seconds())}s after it started: its worker died,"
                    f" or its hard time limit ({handler.time_limit}s) ended it"
                )
                _fail(handler, stalled, error)
                recovered += 1
    return recovered

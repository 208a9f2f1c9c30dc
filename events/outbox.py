"""The transactional outbox: rows written with their events, claimed and marked by the relay.

Claims are leases (a token and an expiry), taken in one statement with SKIP LOCKED, so no
relay holds a row lock or a transaction open while it talks to the broker. A relay that
dies after publishing leaves its lease to expire; the row is then published again, which
consumers absorb because they deduplicate on (event type, event id).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Min, Q
from django.utils import timezone

from petstore.chores import purge_older_than

from .catalogue import DomainEvent, Message
from .models import OutboxMessage, StoredEvent
from .sql import Statement, attnames, converted, insert, insert_statement, instances, prepared

WAKE_CHANNEL = "petstore_outbox"  # NOTIFYed by a trigger on event_outbox (migration 0004)


def headers_for(row: StoredEvent, message_name: str) -> dict[str, Any]:
    """Return the AMQP headers every published message carries."""
    return {
        "event-type": message_name,
        "event-id": str(row.event_id),
        "timestamp": row.recorded_at.isoformat(),
        "stream-id": str(row.stream_id),
        "stream-version": row.stream_version,
        "position": row.position,
        "schema-version": row.schema_version,
        "correlation-id": row.metadata.get("correlation_id", ""),
        "causation-id": row.metadata.get("causation_id", ""),
    }


def enqueue(rows: list[StoredEvent], events: list[DomainEvent], announcements: list[list[Message]]) -> None:
    """Write one outbox row per published message of each stored event (the rows' trigger wakes
    the relay at COMMIT)."""
    insert(OutboxMessage, _ENQUEUED_FIELDS, _messages(rows, events, announcements))


def enqueue_statement(
    rows: list[StoredEvent], events: list[DomainEvent], announcements: list[list[Message]], *, appended: str
) -> Statement:
    """The INSERT of `enqueue`, as part of one statement with the events' own INSERT: the CTE
    named `appended`, which returns each event's event_id and position. The rows' positions are
    not known yet, so each message's position header is read from it."""
    headers = (
        "(SELECT message.headers || jsonb_build_object('position', event.position)"
        " FROM (SELECT %s::jsonb AS headers) message"
        f" JOIN {appended} event ON event.event_id = (message.headers ->> 'event-id')::uuid)"
    )
    messages = _messages(rows, events, announcements)
    return insert_statement(OutboxMessage, _ENQUEUED_FIELDS, messages, placeholders={"headers": headers})


def _messages(
    rows: list[StoredEvent], events: list[DomainEvent], announcements: list[list[Message]]
) -> list[dict]:
    """Each outbox row's fields (a dict per row: nothing reads them as instances)."""
    messages = []
    for row, event, announced in zip(rows, events, announcements, strict=True):
        wire = [
            (
                event.event_name,
                event.channel,
                event.to_wire(stream_id=row.stream_id, recorded_at=row.recorded_at),
            )
        ]
        wire += [(m.message_name, m.channel, m.to_wire()) for m in announced]
        for name, channel, payload in wire:
            messages.append(
                {
                    **_ENQUEUED_DEFAULTS,
                    "event_id": row.event_id,
                    "message_name": name,
                    "routing_key": channel,
                    "payload": payload,
                    "headers": headers_for(row, name),
                    "created_at": row.recorded_at,
                    "available_at": row.recorded_at,
                }
            )
    return messages


_ENQUEUED_FIELDS = [f for f in OutboxMessage._meta.concrete_fields if not f.primary_key]
_ENQUEUED_DEFAULTS = {f.attname: f.get_default() for f in _ENQUEUED_FIELDS}


def enqueue_handler(handler, event_id: uuid.UUID, *, at: datetime) -> OutboxMessage:
    """Schedule one handler's task for an event at `at` (a retry or a redrive)."""
    message = OutboxMessage.objects.create(
        event_id=event_id,
        message_name=handler.name,
        routing_key=handler.queue,
        handler=handler.name,
        payload={"eventId": str(event_id)},
        created_at=timezone.now(),
        available_at=at,
    )
    return message


@dataclass(frozen=True)
class Claim:
    token: uuid.UUID
    messages: list[OutboxMessage]


def _due(now: datetime) -> Q:
    return Q(published_at__isnull=True, available_at__lte=now) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )


def has_due() -> bool:
    """Return whether any message is waiting to be claimed now."""
    return OutboxMessage.objects.filter(_due(timezone.now())).exists()


def claim_batch(*, limit: int, lease: timedelta) -> Claim:
    """Lease up to `limit` due messages to this caller, oldest first."""
    now = timezone.now()
    token = uuid.uuid4()
    if connection.vendor == "postgresql":
        return Claim(token, _claimed_in_one_statement(now, limit, token, until=now + lease))
    due = _due(now)
    with transaction.atomic():
        candidates = (
            OutboxMessage.objects.filter(due)
            .order_by("id")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        ids = list(candidates)
        if not ids:
            return Claim(token, [])
        # The `due` filter again: without row locks (SQLite) another relay may have won.
        OutboxMessage.objects.filter(due, id__in=ids).update(claim_token=token, claimed_until=now + lease)
    claimed = OutboxMessage.objects.filter(id__in=ids, claim_token=token).order_by("id")
    return Claim(token, list(claimed))


def _claimed_in_one_statement(
    now: datetime, limit: int, token: uuid.UUID, *, until: datetime
) -> list[OutboxMessage]:
    """Lock, lease and return the rows in one UPDATE … RETURNING: the relay runs this for
    every batch, and the transaction it replaces took five round trips.

    Plain SQL (events/sql.py), with _due's conditions written out: compiling the candidates'
    query and building the rows through a RawQuerySet cost more than running the statement.
    """
    table = OutboxMessage._meta.db_table
    columns = ", ".join(connection.ops.quote_name(f.column) for f in OutboxMessage._meta.concrete_fields)
    # MATERIALIZED: the candidates are picked and locked once, never re-run by the planner.
    statement = (
        f"WITH candidates AS MATERIALIZED (SELECT id FROM {table}"
        " WHERE available_at <= %(now)s AND published_at IS NULL"
        " AND (claimed_until IS NULL OR claimed_until < %(now)s)"
        f" ORDER BY id LIMIT {int(limit)} FOR UPDATE SKIP LOCKED)"
        f" UPDATE {table} SET claim_token = %(claim_token)s, claimed_until = %(claimed_until)s"
        f" WHERE id IN (SELECT id FROM candidates) RETURNING {columns}"
    )
    params = prepared(OutboxMessage, claim_token=token, claimed_until=until, available_at=now)
    params["now"] = params.pop("available_at")
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    claimed = instances(OutboxMessage, converted(OutboxMessage, list(attnames(OutboxMessage)), rows))
    return sorted(claimed, key=lambda message: message.id)


def mark_sent(claim: Claim, ids: Iterable[int]) -> int:
    """Record confirmed messages as published (only while this claim still holds them).

    Plain SQL (events/sql.py): the relay runs this for every batch.
    """
    ids = list(ids)
    if not ids:
        return 0
    params = prepared(OutboxMessage, published_at=timezone.now(), claim_token=claim.token)
    params.update({f"id{index}": message_id for index, message_id in enumerate(ids)})
    listed = ", ".join(f"%(id{index})s" for index in range(len(ids)))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {OutboxMessage._meta.db_table}"
            " SET published_at = %(published_at)s, claim_token = NULL, claimed_until = NULL"
            f" WHERE claim_token = %(claim_token)s AND id IN ({listed})",
            params,
        )
        return cursor.rowcount


def release(claim: Claim, failures: dict[int, str], *, retry_in: timedelta) -> None:
    """Give failed messages back, to be tried again after `retry_in`."""
    now = timezone.now()
    for message_id, error in failures.items():
        message = next(m for m in claim.messages if m.id == message_id)
        OutboxMessage.objects.filter(id=message_id, claim_token=claim.token).update(
            claim_token=None,
            claimed_until=None,
            attempts=message.attempts + 1,
            last_error=error[:2000],
            available_at=now + retry_in,
        )


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_pending_at: datetime | None

    @property
    def oldest_age_seconds(self) -> float:
        if self.oldest_pending_at is None:
            return 0.0
        return (timezone.now() - self.oldest_pending_at).total_seconds()


def backlog() -> Backlog:
    """Return how many messages wait to be published and since when."""
    pending = OutboxMessage.objects.filter(published_at__isnull=True)
    stats = pending.aggregate(oldest=Min("created_at"))
    return Backlog(pending=pending.count(), oldest_pending_at=stats["oldest"])


def purge_published(*, older_than: timedelta, **batching: int) -> int:
    """Delete rows the broker confirmed more than `older_than` ago; return how many.

    An outbox row has done its job once published: the event log keeps the event. Pending
    rows (a retry due later) are stepped over. `batching`: purge_older_than's batch_size and
    max_batches.
    """
    return purge_older_than(OutboxMessage, "published_at", timezone.now() - older_than, **batching)

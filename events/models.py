"""The event log, aggregate snapshots and the transactional outbox."""

import uuid

from django.db import models
from django.db.models.expressions import Func


class CurrentTransactionId(Func):
    """The writing transaction's id (PostgreSQL xid8 as bigint); 0 where writers are serial."""

    template = "(pg_current_xact_id()::text::bigint)"
    output_field = models.BigIntegerField()

    def as_sqlite(self, compiler, connection, **extra):
        # SQLite has one writer at a time, so commit order already equals position order.
        return "0", []


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("the event log is append-only: events are never updated")

    def delete(self):
        raise TypeError("the event log is append-only: events are never deleted")


class StoredEvent(models.Model):
    """One recorded event. Readers follow (transaction_id, position): see events.store."""

    position = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    stream_type = models.CharField(max_length=40)
    stream_id = models.UUIDField()
    stream_version = models.PositiveIntegerField()
    event_type = models.CharField(max_length=100)
    schema_version = models.PositiveSmallIntegerField()
    payload = models.JSONField()
    metadata = models.JSONField(default=dict)
    recorded_at = models.DateTimeField(db_index=True)
    transaction_id = models.BigIntegerField(db_default=CurrentTransactionId(), editable=False)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        db_table = "event_log"
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["stream_id", "stream_version"], name="event_log_one_event_per_version"
            )
        ]
        indexes = [models.Index(fields=["transaction_id", "position"], name="event_log_reader_order")]

    def __str__(self) -> str:
        return f"#{self.position} {self.event_type} {self.stream_id} v{self.stream_version}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("the event log is append-only: events are never updated")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("the event log is append-only: events are never deleted")


class Snapshot(models.Model):
    """An aggregate's state at one version, so loading skips the events before it."""

    stream_id = models.UUIDField()
    stream_version = models.PositiveIntegerField()
    snapshot_version = models.PositiveSmallIntegerField()
    state = models.JSONField()
    last_recorded_at = models.DateTimeField()

    class Meta:
        db_table = "event_snapshot"
        constraints = [
            models.UniqueConstraint(fields=["stream_id", "stream_version"], name="one_snapshot_per_version")
        ]


class OutboxMessage(models.Model):
    """A message to publish, written in the same transaction as its event."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField()
    message_name = models.CharField(max_length=100)
    routing_key = models.CharField(max_length=200)
    payload = models.JSONField()
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    available_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "event_outbox"
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["event_id", "routing_key"], name="one_message_per_channel")
        ]
        indexes = [
            models.Index(
                fields=["available_at", "id"],
                name="outbox_pending",
                condition=models.Q(published_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.message_name} → {self.routing_key} ({self.event_id})"

    @property
    def is_sent(self) -> bool:
        return self.published_at is not None

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

    def __str__(self) -> str:
        return f"snapshot of {self.stream_id} at v{self.stream_version}"


class OutboxMessage(models.Model):
    """A message to publish, written in the same transaction as its event.

    A row without `handler` publishes the event on its channel and starts every subscribed
    handler; a row with `handler` starts only that handler (a retry or a redrive), and its
    `available_at` holds the retry delay in the database instead of in a broker ETA.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField()
    message_name = models.CharField(max_length=100)
    routing_key = models.CharField(max_length=200)
    handler = models.CharField(max_length=100, blank=True, default="")
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
            models.UniqueConstraint(
                fields=["event_id", "routing_key"],
                condition=models.Q(handler=""),
                name="one_message_per_channel",
            )
        ]
        indexes = [
            models.Index(
                fields=["available_at", "id"],
                name="outbox_pending",
                condition=models.Q(published_at__isnull=True),
            ),
            # A handler's own rows (retries, redrives, resends) of an event: few, looked up by
            # adoptions.chores.resend_unstarted_steps.
            models.Index(fields=["event_id"], name="outbox_handler_rows", condition=~models.Q(handler="")),
        ]

    def __str__(self) -> str:
        return f"{self.message_name} → {self.routing_key} ({self.event_id})"

    @property
    def is_sent(self) -> bool:
        return self.published_at is not None


class Delivery(models.Model):
    """One handler's processing of one event: its inbox record, progress and dead letter.

    Unique per (handler, event): the row marked `succeeded` is committed in the same
    transaction as the handler's own writes, so a redelivered event is recognised and skipped.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # will be retried
        DEAD = "dead"  # out of attempts: waits for a person to redrive it

    handler = models.CharField(max_length=100)
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "event_delivery"
        verbose_name_plural = "deliveries"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["handler", "event_id"], name="one_delivery_per_handler")
        ]
        indexes = [models.Index(fields=["status", "handler"]), models.Index(fields=["event_id"])]

    def __str__(self) -> str:
        return f"{self.handler} ← {self.event_type} {self.event_id}: {self.status}"

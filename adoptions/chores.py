"""Adoption-side housekeeping (run by the relay, see petstore/chores.py)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from events import outbox
from events.handlers import handlers_for
from events.models import Delivery, OutboxMessage
from petstore.chores import chore, purge_older_than

from . import services
from .models import Adoption, IdempotentRequest


@chore
def purge_expired_idempotency_keys() -> str | None:
    """Forget answers kept for Idempotency-Key retries once the keeping time is over."""
    if not settings.IDEMPOTENCY_KEEP_HOURS:  # 0: keep every answer
        return None
    keep = timedelta(hours=settings.IDEMPOTENCY_KEEP_HOURS)
    purged = purge_older_than(IdempotentRequest, "created_at", timezone.now() - keep)
    return f"forgot {purged} idempotency keys older than {keep}" if purged else None


def _deliveries_of_the_adoption(**filters) -> Subquery:
    """How many deliveries (matching `filters`) the outer adoption's PetAdopted event has."""
    counted = (
        Delivery.objects.filter(event_id=OuterRef("adopted_event_id"), **filters)
        .order_by()
        .values("event_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Subquery(counted)


@chore
def recount_adoption_steps(*, settled_for_seconds: int = 60, batch_size: int = 100) -> str | None:
    """Recount the steps of adoptions still processing with more steps succeeded than counted.

    Each step counts itself when it succeeds (services.adoption_step_succeeded). A step
    recorded by a worker still running the code from before the count (during a rolling
    upgrade) is not counted, and its adoption would never complete: this finds such
    adoptions, a minute on, and recounts them, which completes them.
    """
    succeeded = _deliveries_of_the_adoption(status=Delivery.Status.SUCCEEDED)
    miscounted = (
        Adoption.objects.filter(
            status=Adoption.Status.PROCESSING,
            created_at__lt=timezone.now() - timedelta(seconds=settled_for_seconds),
        )
        .annotate(succeeded=succeeded)
        .filter(succeeded__gt=F("steps_succeeded"))
        .values_list("adopted_event_id", flat=True)[:batch_size]
    )
    statuses = [services.adoption_progress(adopted_event_id=event_id) for event_id in miscounted]
    if not statuses:
        return None
    return f"recounted {len(statuses)} adoptions: {statuses.count(Adoption.Status.COMPLETED)} completed"


@chore
def resend_unstarted_steps(*, batch_size: int = 100) -> str | None:
    """Send again the steps that no worker has started, ADOPTION_STEP_RESEND_MINUTES on.

    A step's task can vanish without a trace: a worker still running the code from before a
    step was added discards the task it does not know ("unregistered task"), and a RabbitMQ
    node that dies without replicas loses what its queues held. Every step a worker starts
    leaves a delivery record; an adoption still processing that long after it began with
    fewer records than steps gets the missing ones sent again, at most once in that time.
    A copy that was only slow is harmless: the delivery's inbox runs a step once.
    """
    waited = timezone.now() - timedelta(minutes=settings.ADOPTION_STEP_RESEND_MINUTES)
    steps = handlers_for("PetAdopted")
    recorded = _deliveries_of_the_adoption()
    event_rows = OutboxMessage.objects.filter(event_id=OuterRef("adopted_event_id"))
    short = (
        Adoption.objects.filter(
            status=Adoption.Status.PROCESSING, created_at__lt=waited, adopted_event_id__isnull=False
        )
        .annotate(recorded=Coalesce(recorded, 0))
        .filter(recorded__lt=len(steps))
        # Not published yet: the relay's to send, not ours. Sent again lately: give it time.
        .exclude(Exists(event_rows.filter(handler="", published_at__isnull=True)))
        .exclude(Exists(event_rows.exclude(handler="").filter(created_at__gte=waited)))
        .order_by("created_at")  # oldest first: none waits behind newer ones
        .values_list("adopted_event_id", flat=True)[:batch_size]
    )
    resent = 0
    for event_id in short:
        started = set(Delivery.objects.filter(event_id=event_id).values_list("handler", flat=True))
        for step in steps:
            if step.name not in started:
                outbox.enqueue_handler(step, event_id, at=timezone.now())
                resent += 1
    return f"sent {resent} steps again that no worker had started" if resent else None

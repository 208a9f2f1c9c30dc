"""Adoption-side housekeeping (run by the relay, see petstore/chores.py)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, OuterRef, Subquery
from django.utils import timezone

from events.models import Delivery
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


@chore
def recount_adoption_steps(*, settled_for_seconds: int = 60, batch_size: int = 100) -> str | None:
    """Recount the steps of adoptions still processing with more steps succeeded than counted.

    Each step counts itself when it succeeds (services.adoption_step_succeeded). A step
    recorded by a worker still running the code from before the count (during a rolling
    upgrade) is not counted, and its adoption would never complete: this finds such
    adoptions, a minute on, and recounts them, which completes them.
    """
    succeeded = (
        Delivery.objects.filter(event_id=OuterRef("adopted_event_id"), status=Delivery.Status.SUCCEEDED)
        .order_by()
        .values("event_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    miscounted = (
        Adoption.objects.filter(
            status=Adoption.Status.PROCESSING,
            created_at__lt=timezone.now() - timedelta(seconds=settled_for_seconds),
        )
        .annotate(succeeded=Subquery(succeeded))
        .filter(succeeded__gt=F("steps_succeeded"))
        .values_list("adopted_event_id", flat=True)[:batch_size]
    )
    statuses = [services.adoption_progress(adopted_event_id=event_id) for event_id in miscounted]
    if not statuses:
        return None
    return f"recounted {len(statuses)} adoptions: {statuses.count(Adoption.Status.COMPLETED)} completed"

"""Adoption-side housekeeping (run by the relay, see petstore/chores.py)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from petstore.chores import chore, purge_older_than

from .models import IdempotentRequest


@chore
def purge_expired_idempotency_keys() -> str | None:
    """Forget answers kept for Idempotency-Key retries once the keeping time is over."""
    if not settings.IDEMPOTENCY_KEEP_HOURS:  # 0: keep every answer
        return None
    keep = timedelta(hours=settings.IDEMPOTENCY_KEEP_HOURS)
    purged = purge_older_than(IdempotentRequest, "created_at", timezone.now() - keep)
    return f"forgot {purged} idempotency keys older than {keep}" if purged else None

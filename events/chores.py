"""The event side's housekeeping (run by the relay, see petstore/chores.py)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from petstore.chores import chore

from . import delivery, outbox


@chore
def recover_stalled_deliveries() -> str | None:
    recovered = delivery.recover_stalled()
    return f"recovered {recovered} stalled deliveries" if recovered else None


@chore
def purge_published_outbox_rows() -> str | None:
    if not settings.OUTBOX_KEEP_PUBLISHED_DAYS:  # 0: keep every row
        return None
    keep = timedelta(days=settings.OUTBOX_KEEP_PUBLISHED_DAYS)
    purged = outbox.purge_published(older_than=keep)
    return f"deleted {purged} outbox rows published more than {keep} ago" if purged else None

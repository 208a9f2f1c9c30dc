"""Housekeeping the relay runs every RELAY_CHORES_SECONDS: the system's only scheduler.

An app declares a chore with ``@chore`` in its ``chores.py`` (found at start-up, as handlers
are). A chore returns a short report of what it did, or None when there was nothing to do; one
that fails is logged and the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.db import models

logger = logging.getLogger(__name__)

Chore = Callable[[], str | None]
CHORES: dict[str, Chore] = {}


def chore(fn: Chore) -> Chore:
    CHORES[f"{fn.__module__}.{fn.__name__}"] = fn
    return fn


def run_chores() -> dict[str, str]:
    """Run every chore once; return the reports of those that did something."""
    reports = {}
    for name, fn in CHORES.items():
        try:
            report = fn()
        except Exception:  # one broken chore must not stop the others, nor the relay
            logger.exception("chore %s failed", name)
            continue
        if report:
            logger.info("%s: %s", name, report)
            reports[name] = report
    return reports


def purge_older_than(
    model: type[models.Model], field: str, cutoff: datetime, *, batch_size: int = 5000, max_batches: int = 10
) -> int:
    """Delete the rows whose `field` is before `cutoff`; return how many.

    Rows are walked oldest first by id, a batch at a time, so the cost is bounded whatever the
    table's size: a row whose `field` is still empty (not done yet) is stepped over, and the
    walk stops at the first row too recent to go.
    """
    purged, after = 0, 0
    for _ in range(max_batches):
        window = list(model.objects.filter(pk__gt=after).order_by("pk").values_list("pk", field)[:batch_size])
        doomed = [pk for pk, moment in window if moment is not None and moment < cutoff]
        if doomed:
            purged += model.objects.filter(pk__in=doomed).delete()[0]
        reached_recent = any(moment is not None and moment >= cutoff for _, moment in window)
        if reached_recent or len(window) < batch_size:
            break
        after = window[-1][0]
    return purged

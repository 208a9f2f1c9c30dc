"""Keep every projection caught up: the `projector` process (`manage.py run_projections`)."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections

from events.relay import Wakeup

from .projector import PROJECTIONS, catch_up

logger = logging.getLogger(__name__)


def catch_up_all(*, batch_size: int | None = None) -> int:
    """Bring every projection up to the log's horizon; return how many events were read."""
    batch_size = batch_size or settings.PROJECTION_BATCH_SIZE
    total = 0
    for projection in PROJECTIONS.values():
        while (read := catch_up(projection, batch_size=batch_size)) > 0:
            total += read
            if read < batch_size:
                break
    return total


def run_forever(stop: threading.Event) -> None:
    """Catch up, then sleep until a commit notification or the sweep interval."""
    wakeup = Wakeup()
    logger.info("projector started: %s", ", ".join(PROJECTIONS))
    try:
        while not stop.is_set():
            close_old_connections()
            try:
                catch_up_all()
            except Exception:  # a database hiccup must not end the projector
                logger.exception("projection batch failed")
                stop.wait(1)
            wakeup.wait(settings.PROJECTION_SWEEP_SECONDS)
    finally:
        wakeup.close()

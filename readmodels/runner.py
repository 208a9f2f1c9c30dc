"""Keep every projection caught up: the `projector` process (`manage.py run_projections`)."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from events.relay import Wakeup

from .projector import PROJECTIONS, Projection, catch_up

logger = logging.getLogger(__name__)


def catch_up_all(*, batch_size: int | None = None) -> int:
    """Bring every projection up to the log's horizon; return how many events were read.

    A projection that raises is logged and tried again on the next pass; the others go on.
    """
    batch_size = batch_size or settings.PROJECTION_BATCH_SIZE
    total = 0
    for projection in PROJECTIONS.values():
        try:
            total += _catch_up_fully(projection, batch_size)
        except Exception:
            # A lost connection would fail every projection after this one alike: end the
            # pass, and run_forever waits before the next. A lock or statement timeout leaves
            # the connection usable, and must not hold the other projections back.
            if not connection.is_usable():
                raise
            logger.exception("projection %s failed; the others go on", projection.name)
    return total


def _catch_up_fully(projection: Projection, batch_size: int) -> int:
    """Catch the projection up batch by batch; return how many events it read."""
    total = 0
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
            wakeup.wait(settings.PROJECTION_SWEEP_SECONDS, stop)
    finally:
        wakeup.close()

"""Background processes (the Celery worker, the outbox relay) run behind requests on shared cores."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

AUTOGROUP = Path("/proc/self/autogroup")


def run_behind_requests(nice: int) -> None:
    """Lower this process's CPU priority by `nice` (inherited by processes it forks later).

    Linux's scheduler first shares the CPU between sessions ("autogroups", on by default for
    processes outside CPU cgroups), then between the processes of each: a worker alone in its
    session (started with setsid, as the bench and most service managers do) that only nices
    itself keeps its session's full share against the web's. Where CPU cgroups divide the
    machine instead (containers), their weights decide, and this is harmless.
    So a session leader also nices its autogroup. A process that does not lead its
    session (started from a shell, or by a Procfile runner that also runs the web) leaves the
    autogroup alone: it would slow the web too, and there its own nice already counts.
    """
    if not nice:
        return
    os.nice(nice)
    if os.getsid(0) != os.getpid() or not AUTOGROUP.exists():
        return
    try:
        AUTOGROUP.write_text(str(nice))
    except OSError as error:  # a kernel without autogroups, or no permission: the nice above stays
        logger.info("could not lower this session's autogroup priority: %s", error)

"""Helpers for read-side tests."""

import time

from readmodels.projector import PROJECTIONS, lag, state_of
from readmodels.runner import catch_up_all


def project(timeout: float = 10.0) -> None:
    """Catch every running projection up with every committed event.

    The log's horizon is shared by the whole PostgreSQL server: a transaction left open by
    another session holds events back for a moment, so poll until nothing is behind.
    """
    deadline = time.monotonic() + timeout
    while True:
        catch_up_all()
        behind = [n for n in PROJECTIONS if state_of(n).status == "running" and lag(n).events]
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{', '.join(behind)} still behind the log after {timeout} s")
        time.sleep(0.05)

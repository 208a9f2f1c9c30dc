"""The outbox relay: claim pending messages, publish them with confirms, mark them sent.

Run it as `python manage.py relay_outbox` (the Procfile's `relay`). It sleeps until a commit
wakes it (PostgreSQL LISTEN/NOTIFY) or the sweep interval passes, so nothing waits long even
if a wake-up is lost. Several relays may run at once: leases keep them off each other's rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from datetime import timedelta

import psycopg
from django.conf import settings
from django.db import close_old_connections, connection

from petstore.chores import run_chores

from . import outbox
from .broker import Publisher, make_publisher

logger = logging.getLogger(__name__)


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff with jitter for messages the broker refused, capped at a minute."""
    base = min(60.0, 0.5 * 2**attempts)
    return timedelta(seconds=random.uniform(base / 2, base))


STOP_CHECK_SECONDS = 0.5  # how soon a waiting relay or projector notices it was told to stop


class Wakeup:
    """Wait for a commit notification, or at most `timeout` seconds.

    The listening connection is the process's own. If it breaks (PostgreSQL restarted), the
    wait falls back to sleeping for the timeout, and the next wait listens again: the loop
    around it keeps going, and its sweep covers any notification missed meanwhile.
    """

    def __init__(self) -> None:
        self._listening = connection.vendor == "postgresql"
        self._listener = self._listen() if self._listening else None

    def wait(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Return on a notification, after `timeout`, or soon after `stop` is set: the wait
        goes in slices, so a SIGTERM never waits out a long sweep."""
        if not self._listening:
            time.sleep(min(timeout, 0.1))
            return
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0 and not (stop and stop.is_set()):
                if self._listener is None:
                    self._listener = self._listen()
                for _ in self._listener.notifies(timeout=min(left, STOP_CHECK_SECONDS), stop_after=1):
                    return
        except psycopg.Error as error:
            logger.warning("lost the LISTEN connection (%s); listening again in %.0f s", error, timeout)
            self.close()
            (stop or threading.Event()).wait(max(0.0, deadline - time.monotonic()))

    def _listen(self):
        listener = connection.get_new_connection(connection.get_connection_params())
        listener.autocommit = True
        listener.execute(f"LISTEN {outbox.WAKE_CHANNEL}")
        return listener

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg.Error):
                self._listener.close()
            self._listener = None


class Relay:
    def __init__(
        self,
        publisher: Publisher | None = None,
        *,
        batch_size: int | None = None,
        lease_seconds: int | None = None,
    ) -> None:
        self.publisher = publisher or make_publisher()
        self.batch_size = batch_size or settings.RELAY_BATCH_SIZE
        self.lease = timedelta(seconds=lease_seconds or settings.RELAY_LEASE_SECONDS)
        self.broker_down_since: float | None = None

    def run_once(self) -> int:
        """Publish one batch; return how many messages the broker confirmed."""
        claim = outbox.claim_batch(limit=self.batch_size, lease=self.lease)
        if not claim.messages:
            return 0
        result = self.publisher.publish(claim.messages)
        if os.environ.get("PETSTORE_RELAY_CRASH_AFTER_CONFIRM") == "1":
            os._exit(17)  # fault drill: die between the broker's confirm and mark-sent
        outbox.mark_sent(claim, result.confirmed)
        if result.failed:
            attempts = max(m.attempts for m in claim.messages)
            delay = timedelta(0) if result.connection_lost else retry_delay(attempts)
            outbox.release(claim, result.failed, retry_in=delay)
        self.broker_down_since = (
            (self.broker_down_since or time.monotonic()) if result.connection_lost else None
        )
        return len(result.confirmed)

    def run_forever(self, stop: threading.Event, *, sweep_seconds: float | None = None) -> None:
        sweep = sweep_seconds or settings.RELAY_SWEEP_SECONDS
        wakeup = Wakeup()
        logger.info("relay started (batch %s, sweep %ss)", self.batch_size, sweep)
        next_chores = time.monotonic()
        try:
            while not stop.is_set():
                close_old_connections()
                if time.monotonic() >= next_chores:
                    self.run_chores()
                    next_chores = time.monotonic() + settings.RELAY_CHORES_SECONDS
                sent = self._run_guarded()
                self.publisher.keep_alive()  # at least once a sweep: well within a heartbeat
                if self.broker_down_since is not None:
                    stop.wait(min(5.0, 0.5 + (time.monotonic() - self.broker_down_since) / 4))
                elif sent < self.batch_size:
                    wakeup.wait(sweep, stop)
        finally:
            wakeup.close()
            self.publisher.close()
            logger.info("relay stopped")

    def run_chores(self) -> dict[str, str]:
        """The system's housekeeping, run by the relay every RELAY_CHORES_SECONDS."""
        return run_chores()

    def _run_guarded(self) -> int:
        try:
            return self.run_once()
        except Exception:  # a database hiccup must not end the relay; the sweep retries
            logger.exception("relay batch failed")
            time.sleep(1)
            return 0

    def drain(self, *, timeout: float = 30.0) -> int:
        """Publish until nothing is due (or timeout); return how many were confirmed."""
        total, deadline = 0, time.monotonic() + timeout
        while time.monotonic() < deadline:
            sent = self.run_once()
            total += sent
            if self.broker_down_since is not None:
                time.sleep(0.5)
            elif sent == 0 and not outbox.has_due():
                break
        return total

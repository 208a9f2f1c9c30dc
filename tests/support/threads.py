"""Run relays in threads the way a deployment runs them in processes, and always stop them."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connection, connections, transaction

from events.relay import Relay


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _with_own_connection(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    finally:
        connections.close_all()  # the thread's connection, or the test database cannot be flushed


def run_concurrently(functions: list[Callable[[], Any]], *, timeout: float) -> list[Any]:
    """Run each function in its own thread (own DB connection); return results or re-raise."""
    results: list[Any] = [None] * len(functions)
    errors: list[BaseException] = []

    def run(index: int, fn: Callable[[], Any]) -> None:
        try:
            results[index] = _with_own_connection(fn)
        except BaseException as error:  # noqa: B036 - reported to the test's thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"threads still running after {timeout}s")
    if errors:
        raise errors[0]
    return results


@contextlib.contextmanager
def relay_running(relay: Relay, *, stop_within: float = 20) -> Iterator[Relay]:
    """Run `relay.run_forever` in a thread for the duration of the block."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _with_own_connection(lambda: relay.run_forever(stop))
        except BaseException as error:  # noqa: B036
            errors.append(error)

    thread = threading.Thread(target=run, name="relay", daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        thread.join(timeout=stop_within)
    if thread.is_alive():
        raise AssertionError(f"the relay did not stop within {stop_within}s")
    if errors:
        raise errors[0]


class HeldTransaction(threading.Thread):
    """Run `work` inside a transaction on its own connection and hold it until released."""

    def __init__(self, work, *, before_work=None, rollback=False):
        super().__init__(daemon=True)
        self.work, self.before_work, self.rollback = work, before_work, rollback
        self.started_work, self.did_work, self.release = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self.error = None

    def run(self):
        try:
            with transaction.atomic():
                if self.before_work:
                    self.before_work()
                self.started_work.set()
                self.work()
                self.did_work.set()
                assert self.release.wait(20), "test never released the transaction"
                if self.rollback:
                    transaction.set_rollback(True)
        except Exception as error:  # reported by the test
            self.error = error
        finally:
            connection.close()

    def finish(self):
        self.release.set()
        self.join(20)
        assert self.error is None, self.error

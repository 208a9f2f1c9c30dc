"""Event handlers: who reacts to which message, on which queue, with which limits.

Declaring a handler with ``@event_handler`` registers it for the relay's fan-out and creates
its Celery task (same stable name, its own queue, late acks, requeue when the worker dies, a
hard time limit). The task is thin: it carries the event id and calls ``events.delivery``,
which records the delivery, runs the handler once, and schedules retries in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from django import db
from django.conf import settings

from .store import RecordedEvent

if TYPE_CHECKING:
    from .models import Delivery


class PermanentFailure(Exception):
    """Raised by a handler when retrying cannot help (e.g. the mail server said 550): the
    delivery goes dead at once, with this error, for staff to look at and redrive."""


@dataclass(frozen=True)
class Handler:
    name: str  # stable: also the Celery task name and the delivery record's key
    messages: tuple[str, ...]  # message names it subscribes to (PetAdopted, PetAvailable, …)
    queue: str
    run: Callable[[RecordedEvent], None]
    time_limit: int = 60  # seconds; must stay well under RabbitMQ's consumer timeout
    max_attempts: int = 0  # 0: settings.HANDLER_MAX_ATTEMPTS (HANDLER_ATTEMPT_LIMITS overrides both)
    #: Called with the Delivery, in the transaction that records it succeeded, went dead or was
    #: redriven (e.g. to complete an adoption).
    on_settled: Callable[[Delivery], None] | None = field(default=None, compare=False)

    @property
    def soft_time_limit(self) -> int:
        """Seconds after which the step is interrupted (SoftTimeLimitExceeded), before the hard
        limit ends its pool process."""
        return max(1, self.time_limit - 5)

    @property
    def attempts_allowed(self) -> int:
        """Attempts before the delivery goes dead: the operator's per-handler limit, else the
        declared one, else the default. Read when counted, so a changed setting applies at once."""
        return (
            settings.HANDLER_ATTEMPT_LIMITS.get(self.name)
            or self.max_attempts
            or settings.HANDLER_MAX_ATTEMPTS
        )


HANDLERS: dict[str, Handler] = {}


def handlers_for(message_name: str) -> list[Handler]:
    return [h for h in HANDLERS.values() if message_name in h.messages]


def event_handler(
    *,
    name: str,
    on: tuple[str, ...],
    queue: str,
    time_limit: int = 60,
    max_attempts: int = 0,
    on_settled: Callable[[Delivery], None] | None = None,
) -> Callable:
    """Register a function as the handler `name` for the given message names."""

    def register(run: Callable[[RecordedEvent], None]) -> Callable[[RecordedEvent], None]:
        if name in HANDLERS:
            raise ValueError(f"handler {name} declared twice")
        limit = settings.HANDLER_TIME_LIMITS.get(name, time_limit)  # a drill's override, from the env
        handler = Handler(name, tuple(on), queue, run, limit, max_attempts, on_settled)
        HANDLERS[name] = handler
        _celery_task(handler)
        return run

    return register


class HandlerTask(Task):
    """A handler's Celery task: schedules another attempt when a hard time limit ends it."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Celery (5.7 on) calls this in the worker's main process when the hard time limit ends
        # a step, just before it ends the pool process. Older Celery does not: recover_stalled
        # finds the delivery left `running` minutes later instead.
        if isinstance(exc, TimeLimitExceeded) and args:
            from .delivery import hard_time_limit_reached

            hard_time_limit_reached(self.name, UUID(args[0]))


def _celery_task(handler: Handler):
    # The handler's own failures are recorded and retried by events.delivery, in the database.
    # When the database itself cannot be reached (PostgreSQL restarting, a cut connection),
    # nothing can be recorded: the message is published again after a short, jittered, capped
    # backoff, for as long as it takes, so that no step is acknowledged and lost.
    @shared_task(
        base=HandlerTask,
        name=handler.name,
        acks_late=True,
        reject_on_worker_lost=True,
        time_limit=handler.time_limit,
        soft_time_limit=handler.soft_time_limit,
        ignore_result=True,
        autoretry_for=(db.InterfaceError, db.OperationalError),
        retry_backoff=True,
        retry_backoff_max=30,
        retry_jitter=True,
        max_retries=None,
    )
    def run_handler(event_id: str) -> str:
        from .delivery import deliver

        return deliver(handler.name, UUID(event_id))

    return run_handler


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery task router: a handler's task goes to the handler's queue."""
    handler = HANDLERS.get(name)
    return {"queue": handler.queue} if handler else None

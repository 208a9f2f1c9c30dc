"""System checks for the reliability settings we rely on (`manage.py check` fails without them).

A misspelt or forgotten CELERY_* setting is silently ignored by Celery; these checks make the
omission loud.
"""

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.compatibility)
def celery_reliability(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors = []

    def require(condition: bool, id_: str, message: str, hint: str) -> None:
        if not condition:
            errors.append(checks.Error(message, hint=hint, id=id_))

    require(
        getattr(settings, "CELERY_TASK_ACKS_LATE", False) is True,
        "petstore.E001",
        "Celery tasks must acknowledge late.",
        "Set CELERY_TASK_ACKS_LATE = True so a crashed task is redelivered.",
    )
    require(
        getattr(settings, "CELERY_TASK_REJECT_ON_WORKER_LOST", False) is True,
        "petstore.E002",
        "Tasks of a killed worker must be requeued.",
        "Set CELERY_TASK_REJECT_ON_WORKER_LOST = True (acks_late alone acks on SIGKILL).",
    )
    require(
        (getattr(settings, "CELERY_BROKER_HEARTBEAT", 0) or 0) > 0,
        "petstore.E003",
        "Broker heartbeats are off.",
        "Set CELERY_BROKER_HEARTBEAT (seconds) so dead connections are noticed.",
    )
    from events.broker import is_rabbitmq  # not at import: checks load before the apps

    if is_rabbitmq(settings.CELERY_BROKER_URL):
        options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
        require(
            options.get("confirm_publish") is True,
            "petstore.E004",
            "Publisher confirms are off for the AMQP broker.",
            "Set CELERY_BROKER_TRANSPORT_OPTIONS['confirm_publish'] = True.",
        )
    return errors


@checks.register(checks.Tags.compatibility)
def handler_queues_and_limits(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every handler's queue is declared, and its time limit ends before RabbitMQ gives up on it."""
    from events.handlers import HANDLERS

    declared = {queue.name for queue in settings.CELERY_TASK_QUEUES}
    errors = []
    for handler in HANDLERS.values():
        if handler.queue not in declared:
            errors.append(
                checks.Error(
                    f"Handler {handler.name} uses queue {handler.queue!r}, which is not declared.",
                    hint="Add it to PETSTORE_HANDLER_QUEUES.",
                    id="petstore.E005",
                )
            )
        if handler.time_limit >= settings.RABBITMQ_CONSUMER_TIMEOUT_SECONDS:
            errors.append(
                checks.Error(
                    f"Handler {handler.name} may run {handler.time_limit}s, "
                    "past RabbitMQ's consumer timeout.",
                    hint="Lower its time_limit: a late-acked task past the timeout closes the channel.",
                    id="petstore.E006",
                )
            )
    # Per-handler overrides from the environment: a misspelt name would be ignored silently.
    for setting, unit, id_ in [
        ("HANDLER_TIME_LIMITS", "seconds", "E008"),
        ("HANDLER_ATTEMPT_LIMITS", "attempts", "E009"),
    ]:
        for name, value in getattr(settings, setting).items():
            if name not in HANDLERS or type(value) is not int or value <= 0:
                errors.append(
                    checks.Error(
                        f"{setting} gives {name!r} {value!r}.",
                        hint=f"Name a declared handler and a positive whole number of {unit}.",
                        id=f"petstore.{id_}",
                    )
                )
    if settings.HANDLER_RETRY_MAX_SECONDS <= 0:
        errors.append(checks.Error("HANDLER_RETRY_MAX_SECONDS must be positive.", id="petstore.E007"))
    return errors


@checks.register(checks.Tags.database, deploy=True)
def production_services(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """`check --deploy`: the embedded defaults are for a laptop, not for shelters' data."""
    from django.db import connections

    from events.broker import is_rabbitmq

    messages = []
    if connections["default"].vendor != "postgresql":  # asks the backend class, connects to nothing
        messages.append(
            checks.Error(
                "The database is not PostgreSQL.",
                hint="Set DATABASE_URL=postgres://…: the SQLite file serialises every writer "
                "and has no advisory locks, LISTEN/NOTIFY or SKIP LOCKED.",
                id="petstore.E010",
            )
        )
    if not is_rabbitmq(settings.CELERY_BROKER_URL):
        messages.append(
            checks.Error(
                "The Celery broker is not RabbitMQ.",
                hint="Set CELERY_BROKER_URL=amqp://…: the filesystem transport has no publisher "
                "confirms, no redelivery of a dead worker's tasks and no stream.",
                id="petstore.E011",
            )
        )
    if settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        messages.append(
            checks.Warning(
                "The cache is each process's own memory.",
                hint="Set REDIS_URL=redis://…: otherwise every web process counts the rate limits "
                "and the admin's login throttle on its own.",
                id="petstore.W001",
            )
        )
    return messages

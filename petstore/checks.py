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
        getattr(settings, "CELERY_TASK_ACKS_LATE", False) is True, "petstore.E001",
        "Celery tasks must acknowledge late.",
        "Set CELERY_TASK_ACKS_LATE = True so a crashed task is redelivered.",
    )
    require(
        getattr(settings, "CELERY_TASK_REJECT_ON_WORKER_LOST", False) is True, "petstore.E002",
        "Tasks of a killed worker must be requeued.",
        "Set CELERY_TASK_REJECT_ON_WORKER_LOST = True (acks_late alone acks on SIGKILL).",
    )
    require(
        (getattr(settings, "CELERY_BROKER_HEARTBEAT", 0) or 0) > 0, "petstore.E003",
        "Broker heartbeats are off.",
        "Set CELERY_BROKER_HEARTBEAT (seconds) so dead connections are noticed.",
    )
    if settings.CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
        options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
        require(
            options.get("confirm_publish") is True, "petstore.E004",
            "Publisher confirms are off for the AMQP broker.",
            "Set CELERY_BROKER_TRANSPORT_OPTIONS['confirm_publish'] = True.",
        )
    return errors

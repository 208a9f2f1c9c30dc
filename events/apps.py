from django.apps import AppConfig
from django.conf import settings
from django.db.backends.signals import connection_created
from django.utils.module_loading import autodiscover_modules


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Event log and outbox"

    def ready(self) -> None:
        from petstore import checks  # noqa: F401  (registers the reliability checks)

        # Every process (web, relay, worker) knows every handler: the relay fans out to
        # them, the worker runs them, the API lists them as an adoption's steps. The relay
        # also runs every app's chores (petstore/chores.py).
        autodiscover_modules("handlers", "chores")
        connection_created.connect(_tell_sqlite_whether_the_log_may_be_erased)


def _tell_sqlite_whether_the_log_may_be_erased(sender, connection, **kwargs) -> None:
    """The function the SQLite log's DELETE trigger asks (events/migrations/0008)."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            "petstore_event_log_erasable", 0, lambda: bool(settings.EVENT_LOG_ERASABLE)
        )

from django.apps import AppConfig
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

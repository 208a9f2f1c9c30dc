from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Event log and outbox"

    def ready(self) -> None:
        from petstore import checks  # noqa: F401  (registers the reliability checks)

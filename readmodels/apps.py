from django.apps import AppConfig


class ReadmodelsConfig(AppConfig):
    name = "readmodels"
    verbose_name = "Read models"

    def ready(self) -> None:
        from . import projections  # noqa: F401  (declares the projections)

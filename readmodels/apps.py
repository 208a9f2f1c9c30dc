from django.apps import AppConfig


class ReadmodelsConfig(AppConfig):
    name = "readmodels"
    verbose_name = "Read models"

from django.apps import AppConfig


class AdoptionsConfig(AppConfig):
    name = "adoptions"
    verbose_name = "Shelters, pets and adoptions"

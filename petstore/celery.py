"""The Celery application: `celery -A petstore worker` finds it here."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "petstore.settings.local")

app = Celery("petstore")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def lower_the_worker_priority(**_) -> None:
    """Side effects run behind requests: on a shared host the web answers first (WORKER_NICE)."""
    from django.conf import settings

    if settings.WORKER_NICE:
        os.nice(settings.WORKER_NICE)  # the pool's processes are forked after this and inherit it

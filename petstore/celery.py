"""The Celery application: `celery -A petstore worker` finds it here."""

import os

from celery import Celery
from celery.signals import task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "petstore.settings.local")

app = Celery("petstore")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def lower_the_worker_priority(**_) -> None:
    """Side effects run behind requests: on a shared host the web answers first (WORKER_NICE)."""
    from django.conf import settings

    from petstore.priority import run_behind_requests

    run_behind_requests(settings.WORKER_NICE)  # the pool's processes are forked after this and inherit it


@task_prerun.connect
def drop_broken_database_connections(**_) -> None:
    """Close a connection that failed in an earlier task, so this task opens a fresh one.

    Workers keep their connections across tasks (CELERY_DB_REUSE_MAX), so Django's check
    between requests never runs there: after a PostgreSQL restart every task would otherwise
    fail on the same dead connection. A healthy connection costs nothing here (no ping).
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.errors_occurred:
            connection.close_if_unusable_or_obsolete()

"""The Celery application: `celery -A petstore worker` finds it here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "petstore.settings.local")

app = Celery("petstore")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

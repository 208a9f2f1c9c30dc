"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "petstore.settings.local")
application = get_wsgi_application()

from petstore.heap import freeze_after_first_request  # noqa: E402  (after Django is set up)

freeze_after_first_request()

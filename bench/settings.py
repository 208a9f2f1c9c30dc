"""Benchmark settings: the product's base settings, on a database and RabbitMQ vhost of its own.

`python -m bench` creates both and exports BENCH_DATABASE_URL / BENCH_BROKER_URL before Django
starts, so nothing here can reach the development or test database, or the default vhost.
"""

from petstore.settings.base import *  # noqa: F403
from petstore.settings.base import INSTALLED_APPS, LOGGING, REST_FRAMEWORK, VAR_DIR, database, env

DEBUG = False  # DEBUG keeps every SQL query in memory: it would bill the product for the bench
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

DATABASES = {
    "default": database(
        env.db_url("BENCH_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/petstore_bench")
    )
}
# The same persistent connections as the product (base.py), whatever the environment says.
DATABASES["default"]["CONN_MAX_AGE"] = 600

CELERY_BROKER_URL = env.str("BENCH_BROKER_URL", default="amqp://guest:guest@127.0.0.1:5672/petstore-bench")
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Hundreds of requests a second from a handful of users: rates no run reaches, so the figures
# still pay for the throttles' counting (one cache increment per request) but never see a 429.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"anon": "1000000/second", "user": "1000000/second"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Emails are rendered and built by the handlers, then dropped: nothing leaves the machine, and
# a long-running worker does not pile them up in memory as the locmem backend would.
EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
# Certificates are real PDFs, stored in this run's own folder (deleted afterwards); never the
# slow-service stand-in, whatever the environment says.
MEDIA_ROOT = env.path("BENCH_MEDIA_ROOT", default=str(VAR_DIR / "bench-media"))
CERTIFICATE_EXTRA_SECONDS = 0.0

INSTALLED_APPS = [*INSTALLED_APPS, "bench.reference_app"]
ROOT_URLCONF = "bench.urls"

LOGGING = {**LOGGING, "root": {**LOGGING["root"], "level": "WARNING"}}

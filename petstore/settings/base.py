"""Settings shared by every environment; every knob is read from the environment."""

from pathlib import Path

import environ
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(environ.Env().str("PETSTORE_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-local-development-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://localhost:8000").rstrip("/")
# `seed_demo` may run: its admin's password is in the README. Production settings say no.
DEMO_DATA_ALLOWED = True

INSTALLED_APPS = [
    "petstore.apps.StaffConsoleConfig",  # django.contrib.admin with the staff console's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from our own static files
    "django_celery_results",
    "events",
    "adoptions",
    "notifications",
    "readmodels",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "petstore.api_errors.ApiErrorsAsJson",  # an error under /api/ is JSON, whoever answered it
    "petstore.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# --- Security headers (tests/test_settings.py checks each one; production.py adds HTTPS) ---
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "petstore.api_errors.api_csrf_failure"  # JSON under /api/, Django's page elsewhere
# petstore/csp.py. Scripts only from our own origin (the admin, /api/asyncapi/ and /api/docs/
# load theirs from static files); inline styles stay allowed: the admin's templates use <style>.
CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
CONTENT_SECURITY_POLICY_REPORT_ONLY = env.bool("CSP_REPORT_ONLY", default=False)

ROOT_URLCONF = "petstore.urls"
WSGI_APPLICATION = "petstore.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


POSTGRESQL_ENGINE = "petstore.postgresql"


def database(config: dict) -> dict:
    """A DATABASES entry from a parsed URL, with the connection settings every process wants."""
    # Persistent connections matter for throughput (a new connection per request was 4x slower).
    config.setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=600))
    config["CONN_HEALTH_CHECKS"] = True
    if config["ENGINE"] in ("django.db.backends.postgresql", POSTGRESQL_ENGINE):
        config["ENGINE"] = POSTGRESQL_ENGINE  # Django's, lighter per request (petstore/postgresql)
        # Server-side binding lets psycopg prepare a statement after it has run a few times on
        # a connection: PostgreSQL then skips parsing and planning it (a third of its CPU per
        # handler task). A transaction-mode pooler without prepared-statement support needs
        # DATABASE_PREPARE_THRESHOLD=off.
        threshold = env.str("DATABASE_PREPARE_THRESHOLD", default="5")
        config.setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=None if threshold == "off" else int(threshold)
        )
        # A server that drops packets instead of refusing would hang a connect until a task's
        # time limit; failing after a few seconds lets the caller's retry (Celery's autoretry,
        # the relay's loop, a 503 to the API) take over.
        config["OPTIONS"].setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the web, relay and worker processes read while one writes.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    return config


# Embedded default: an SQLite file, so `make run` needs no server.
DATABASES = {
    "default": database(env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'petstore.sqlite3'}")),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The event log is never updated or deleted, enforced by the database. On SQLite only a
# connection whose settings say this may DELETE its rows: test settings, to empty the test
# database between tests (PostgreSQL's tests say so in the session: petstore/settings/test.py).
EVENT_LOG_ERASABLE = False

if env.str("REDIS_URL", default=""):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env.str("REDIS_URL"),
            # Bounded, so a Redis that stops answering slows no request by more than this:
            # the rate limits and login counts it keeps then pause (petstore/throttling.py).
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Staff console logins: failures per username and client address before a lockout, and how
# long the window lasts (counted in the cache: see petstore/login_throttle.py).
ADMIN_LOGIN_MAX_FAILURES = env.int("ADMIN_LOGIN_MAX_FAILURES", default=5)
ADMIN_LOGIN_LOCKOUT_SECONDS = env.int("ADMIN_LOGIN_LOCKOUT_SECONDS", default=15 * 60)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_ROOT = VAR_DIR / "media"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Request bodies: commands are small JSON documents.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=64 * 1024)

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
if EMAIL_CONFIG["EMAIL_BACKEND"].endswith("filebased.EmailBackend"):
    # django-environ reads filemail:///var/mail as the relative "var/mail"; the URL means /var/mail.
    # With no path at all, the mails go under var/.
    folder = EMAIL_CONFIG.get("EMAIL_FILE_PATH") or str(VAR_DIR / "mail")
    EMAIL_CONFIG["EMAIL_FILE_PATH"] = folder if Path(folder).is_absolute() else f"/{folder}"
vars().update(EMAIL_CONFIG)
# Seconds an SMTP connect or reply may take: a mail server that hangs fails the attempt, which
# is retried, instead of holding a worker until the step's time limit.
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="PetStore <adoptions@petstore.local>")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header turns missing credentials into 401.
        "petstore.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["petstore.renderers.CamelCaseJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["petstore.parsers.LimitedCamelCaseJSONParser"],
    "EXCEPTION_HANDLER": "petstore.api_errors.json_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # petstore/throttling.py: a counter per client and window in the cache (Redis when set).
    "DEFAULT_THROTTLE_CLASSES": [
        "petstore.throttling.AnonRateThrottle",
        "petstore.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_ANON_RATE", default="120/minute"),  # "off" switches one off
        "user": env.str("THROTTLE_USER_RATE", default="1200/minute"),
    },
    "DEFAULT_SCHEMA_CLASS": "petstore.openapi.AutoSchema",
    # Proxies in front of the web process (production.py: 1). With none, the client is the
    # socket's address: X-Forwarded-For, which anyone can write, never names it.
    "NUM_PROXIES": env.int("DJANGO_NUM_PROXIES", default=0),
}

# OpenAPI at /api/schema/ and /api/docs/ (petstore/openapi.py): camelCase as on the wire, no CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "PetStore Events API",
    "DESCRIPTION": "Commands append events; queries read projections. Every error is "
    '`{"error": {"code", "message", "details"}}`.',
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],  # the contract is public, like the AsyncAPI document
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    # Ids in paths are UUIDs in either case (petstore/url_converters.py).
    "PATH_CONVERTER_OVERRIDES": {"any_case_uuid": {"type": "string", "format": "uuid"}},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "PetStatusEnum": "adoptions.serializers.PET_STATUSES",
        "AdoptionStatusEnum": "adoptions.models.Adoption.Status",
        "StepStatusEnum": "events.models.Delivery.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.contrib.djangorestframework_camel_case.camelize_serializer_fields",
        "drf_spectacular.hooks.postprocess_schema_enums",
        "petstore.openapi.camelize_query_parameters",
        "petstore.openapi.add_plain_django_views",
    ],
}

# --- Celery (every name here is checked by tests/test_settings.py: a typo is silently ignored) ---
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    for _folder in ("queue", "control"):  # kombu does not create them
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# AMQP heartbeats: a broker that stops answering (paused, a cut network) is noticed within
# about two of these, and the worker reconnects.
CELERY_BROKER_HEARTBEAT = env.int("CELERY_BROKER_HEARTBEAT", default=30)
CELERY_BROKER_CONNECTION_TIMEOUT = 5
# Celery's Django fixup closes the database connection before and after every task unless
# this is set: a new PostgreSQL connection per task cost ~20 ms of server CPU (bench/handlers).
# Connections are still recycled after this many tasks, and CONN_HEALTH_CHECKS drops dead ones.
CELERY_DB_REUSE_MAX = 1000
# The worker's CPU priority (nice): where web and worker share cores, adoptions answer first
# and the side effects take what is left. 0 keeps the worker at the web's priority. A worker
# that leads its session nices its session's autogroup too (petstore/priority.py says why).
WORKER_NICE = env.int("WORKER_NICE", default=10)
# The same for the outbox relay (`manage.py relay_outbox`): it wakes on every commit, and at
# nice 0 it took the core a request was waiting for (bench e2e, POST p99 with side effects
# running, two rounds each: 19.0 and 14.5 ms at 0, 10.1 and 11.0 ms at 10, without them 6.6-8.3).
RELAY_NICE = env.int("RELAY_NICE", default=10)
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A worker that loses the broker cannot acknowledge the tasks it is running, and RabbitMQ
# redelivers them: stop them rather than let them finish beside their redelivered copies
# (Celery 6's default). The delivery's lock and inbox make the rerun do the step once.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# One durable queue per kind of side effect, so a slow certificate never delays an email.
# `celery -A petstore worker` consumes them all; `-Q certificates` runs one service alone.
PETSTORE_HANDLER_QUEUES = [
    "emails",
    "shelter-notices",
    "inventory",
    "certificates",
    "vet-appointments",
    "welcome-packages",
    "analytics",
]
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)
    for name in ["celery", *PETSTORE_HANDLER_QUEUES]
]
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = ("events.handlers.route_task",)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE

# --- Event log, outbox and relay ---
EVENTS_EXCHANGE = env.str("EVENTS_EXCHANGE", default="petstore.events")
EVENTS_UNROUTED_EXCHANGE = env.str("EVENTS_UNROUTED_EXCHANGE", default="petstore.unrouted")
# How long, and how many, unrouted events petstore.unrouted keeps (0: no limit). RabbitMQ refuses
# to redeclare a queue with other limits: after changing them, delete the queue once.
EVENTS_UNROUTED_KEEP_HOURS = env.float("EVENTS_UNROUTED_KEEP_HOURS", default=24.0)
EVENTS_UNROUTED_MAX_LENGTH = env.int("EVENTS_UNROUTED_MAX_LENGTH", default=100_000)
# A replayable copy of every event: a RabbitMQ stream behind a fanout exchange (AMQP brokers only).
EVENTS_STREAM_ENABLED = env.bool("EVENTS_STREAM_ENABLED", default=True)
EVENTS_STREAM_NAME = env.str("EVENTS_STREAM_NAME", default="petstore.events.stream")
EVENTS_STREAM_EXCHANGE = env.str("EVENTS_STREAM_EXCHANGE", default="petstore.events.log")
EVENTS_STREAM_MAX_AGE = env.str("EVENTS_STREAM_MAX_AGE", default="30D")  # x-max-age: Y M D h m s
EVENTS_SNAPSHOT_EVERY = env.int("EVENTS_SNAPSHOT_EVERY", default=100)
RELAY_BATCH_SIZE = env.int("RELAY_BATCH_SIZE", default=500)
RELAY_LEASE_SECONDS = env.int("RELAY_LEASE_SECONDS", default=30)
RELAY_CONFIRM_TIMEOUT_SECONDS = env.float("RELAY_CONFIRM_TIMEOUT_SECONDS", default=10.0)
RELAY_SWEEP_SECONDS = env.float("RELAY_SWEEP_SECONDS", default=1.0)

# RabbitMQ's consumer_timeout (default 30 min): every handler's time limit must stay below it.
RABBITMQ_CONSUMER_TIMEOUT_SECONDS = env.int("RABBITMQ_CONSUMER_TIMEOUT_SECONDS", default=1800)

# Projections: events per batch, and how often the projector looks without a wake-up.
PROJECTION_BATCH_SIZE = env.int("PROJECTION_BATCH_SIZE", default=1000)
PROJECTION_SWEEP_SECONDS = env.float("PROJECTION_SWEEP_SECONDS", default=1.0)
#: How long a query with minPosition waits for its projection (read-your-writes).
PROJECTION_WAIT_SECONDS = env.float("PROJECTION_WAIT_SECONDS", default=3.0)

# Handler retries: exponential backoff with jitter, kept in the outbox (not as broker ETAs).
# Ten attempts wait 5, 10, 20 … 600 s: about half an hour, so a mail server down for minutes
# delays the emails instead of sending every one of them to the dead letters.
HANDLER_MAX_ATTEMPTS = env.int("HANDLER_MAX_ATTEMPTS", default=10)
# JSON {handler name: attempts} for handlers that deserve more (or fewer) than that.
HANDLER_ATTEMPT_LIMITS = env.json("HANDLER_ATTEMPT_LIMITS", default={})
HANDLER_RETRY_BASE_SECONDS = env.float("HANDLER_RETRY_BASE_SECONDS", default=5.0)
HANDLER_RETRY_MAX_SECONDS = env.float("HANDLER_RETRY_MAX_SECONDS", default=600.0)

# JSON {handler name: seconds} replacing declared hard time limits, for drills; same in every process.
HANDLER_TIME_LIMITS = env.json("HANDLER_TIME_LIMITS", default={})
# A delivery still `running` this long after its handler's time limit is counted as failed.
DELIVERY_STALL_MARGIN_SECONDS = env.int("DELIVERY_STALL_MARGIN_SECONDS", default=60)
RELAY_CHORES_SECONDS = env.float("RELAY_CHORES_SECONDS", default=30.0)
# Published outbox rows are deleted this long after the broker confirmed them (the event log
# keeps every event forever); 0 keeps them all.
OUTBOX_KEEP_PUBLISHED_DAYS = env.float("OUTBOX_KEEP_PUBLISHED_DAYS", default=7.0)
# An adoption step no worker has started this many minutes after its adoption began is sent
# again (its task was lost: adoptions.chores.resend_unstarted_steps).
ADOPTION_STEP_RESEND_MINUTES = env.float("ADOPTION_STEP_RESEND_MINUTES", default=15.0)
# Answers kept for Idempotency-Key retries are forgotten after this many hours; 0 keeps them.
IDEMPOTENCY_KEEP_HOURS = env.float("IDEMPOTENCY_KEEP_HOURS", default=24.0)

# Extra seconds the certificate step sleeps: stands in for the guide's 30-second PDF service.
CERTIFICATE_EXTRA_SECONDS = env.float("CERTIFICATE_EXTRA_SECONDS", default=0.0)
# A folder with DejaVuSans.ttf and DejaVuSans-Bold.ttf (Debian: fonts-dejavu-core), for
# certificates whose names PDF's built-in fonts cannot write (Ł, ő, Cyrillic, Greek…).
CERTIFICATE_FONT_DIR = env.str("CERTIFICATE_FONT_DIR", default="/usr/share/fonts/truetype/dejavu")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

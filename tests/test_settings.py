"""The settings we rely on are really set: a misspelt CELERY_* name is silently ignored."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core import checks

from petstore.celery import app

ROOT = Path(__file__).resolve().parent.parent


def test_celery_sees_our_reliability_settings():
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_heartbeat and conf.broker_heartbeat > 0
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    # Without it Celery's Django fixup opens a new database connection for every task.
    assert conf.get("CELERY_DB_REUSE_MAX", 0) >= 100


def test_amqp_broker_gets_publisher_confirms():
    if settings.CELERY_BROKER_URL.startswith("amqp"):
        assert app.conf.broker_transport_options["confirm_publish"] is True


def test_reliability_checks_pass_with_our_settings():
    errors = [m for m in checks.run_checks() if m.id and m.id.startswith("petstore.")]
    assert errors == []


def test_reliability_checks_fail_when_acks_late_is_off(settings):
    settings.CELERY_TASK_ACKS_LATE = False
    settings.CELERY_TASK_REJECT_ON_WORKER_LOST = False

    ids = {m.id for m in checks.run_checks() if m.id}

    assert {"petstore.E001", "petstore.E002"} <= ids


def test_amqp_without_confirms_fails_the_check(settings):
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}

    assert "petstore.E004" in {m.id for m in checks.run_checks()}


def petstore_errors() -> dict[str, list[str]]:
    """The messages of our own failed system checks, by check id."""
    found: dict[str, list[str]] = {}
    for message in checks.run_checks():
        if message.id and message.id.startswith("petstore."):
            found.setdefault(message.id, []).append(message.msg)
    return found


def test_manage_py_check_fails_when_broker_heartbeats_are_off():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "petstore.settings.test", "CELERY_BROKER_HEARTBEAT": "0"}

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "petstore.E003" in result.stderr and "Broker heartbeats are off" in result.stderr


def test_missing_broker_heartbeat_setting_fails_the_check(settings):
    del settings.CELERY_BROKER_HEARTBEAT

    assert "petstore.E003" in petstore_errors()


def test_a_handler_on_an_undeclared_queue_fails_the_check(settings):
    settings.CELERY_TASK_QUEUES = [q for q in settings.CELERY_TASK_QUEUES if q.name != "certificates"]

    errors = petstore_errors()

    assert errors["petstore.E005"] == [
        "Handler notifications.certificate uses queue 'certificates', which is not declared."
    ]


def test_a_handler_time_limit_reaching_the_rabbitmq_consumer_timeout_fails_the_check(settings):
    # The certificate may run 120 s, every other handler 60 s: only it reaches a 120 s timeout.
    settings.RABBITMQ_CONSUMER_TIMEOUT_SECONDS = 120

    errors = petstore_errors()

    assert errors["petstore.E006"] == [
        "Handler notifications.certificate may run 120s, past RabbitMQ's consumer timeout."
    ]


@pytest.mark.parametrize(
    "limits",
    [{"notifications.certficate": 8}, {"notifications.certificate": 0}, {"notifications.certificate": "8"}],
)
def test_an_attempt_limit_for_no_handler_or_not_a_positive_count_fails_the_check(settings, limits):
    settings.HANDLER_ATTEMPT_LIMITS = limits

    [(name, attempts)] = limits.items()
    assert petstore_errors()["petstore.E009"] == [f"HANDLER_ATTEMPT_LIMITS gives {name!r} {attempts!r}."]


def test_emails_get_about_half_an_hour_of_retries_by_default():
    # 5 s doubling to the 600 s ceiling: a mail server down for minutes must not kill every email.
    waits = [
        min(settings.HANDLER_RETRY_BASE_SECONDS * 2**n, 600) for n in range(settings.HANDLER_MAX_ATTEMPTS - 1)
    ]
    assert 25 * 60 <= sum(waits) <= 60 * 60
    assert settings.EMAIL_TIMEOUT and settings.EMAIL_TIMEOUT <= 30


@pytest.mark.parametrize("seconds", [0, -1])
def test_a_retry_ceiling_that_is_not_positive_fails_the_check(settings, seconds):
    settings.HANDLER_RETRY_MAX_SECONDS = seconds

    assert "petstore.E007" in petstore_errors()


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "petstore.settings.production",
    "DJANGO_SECRET_KEY": "k3v!Qz8#pL2@wX9$" * 4,
    "DJANGO_ALLOWED_HOSTS": "petstore.example.org",
    # Named, not reached: check --deploy opens no connection.
    "DATABASE_URL": "postgres://petstore@db.example.org:5432/petstore",
    "CELERY_BROKER_URL": "amqp://petstore:secret@mq.example.org:5672//",
    "REDIS_URL": "redis://cache.example.org:6379/0",
}


def check_deploy(**environment: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result


def test_production_settings_pass_check_deploy():
    result = check_deploy(**PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr


def test_production_on_the_embedded_defaults_fails_check_deploy():
    embedded = {
        **PRODUCTION,
        "DATABASE_URL": "sqlite:////tmp/petstore.sqlite3",
        "CELERY_BROKER_URL": "filesystem://",
    }
    result = check_deploy(**{**embedded, "REDIS_URL": ""})

    assert result.returncode != 0
    for message in (
        "(petstore.E010) The database is not PostgreSQL.",
        "(petstore.E011) The Celery broker is not RabbitMQ.",
        "(petstore.W001) The cache is each process's own memory.",
    ):
        assert message in result.stderr


def dotted_paths_in_settings() -> list[str]:
    """Every view, parser or handler our settings and urls name by a dotted string."""
    from petstore import urls

    named = [settings.CSRF_FAILURE_VIEW, settings.REST_FRAMEWORK["EXCEPTION_HANDLER"]]
    named += settings.REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]
    named += [getattr(urls, f"handler{code}") for code in (400, 403, 404, 500)]
    return sorted({path for path in named if path.startswith("petstore.")})


def test_each_dotted_path_in_settings_imports_first_in_a_fresh_process():
    # Django runs its system checks in no fixed order; when the CSRF check imported
    # api_errors before anything had imported DRF's views, a circular import failed it.
    script = (
        "import sys, django; django.setup()\n"
        "from django.utils.module_loading import import_string\n"
        "import_string(sys.argv[1])\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "petstore.settings.test"}
    paths = dotted_paths_in_settings()
    assert paths, "no petstore.* dotted path found in the settings"
    for path in paths:
        result = subprocess.run(
            [sys.executable, "-c", script, path],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    env.update(DJANGO_SETTINGS_MODULE="petstore.settings.production", DJANGO_ALLOWED_HOSTS="x.org")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr


def test_security_headers_we_rely_on_are_set():
    # A misspelt SECURE_* name is ignored as silently as a CELERY_* one.
    assert settings.SECURE_CONTENT_TYPE_NOSNIFF is True
    assert settings.SECURE_REFERRER_POLICY == "same-origin"
    assert settings.SECURE_CROSS_ORIGIN_OPENER_POLICY == "same-origin"
    assert settings.X_FRAME_OPTIONS == "DENY"
    assert settings.CONTENT_SECURITY_POLICY["script-src"] == ["'self'"]
    assert "petstore.csp.ContentSecurityPolicyMiddleware" in settings.MIDDLEWARE
    assert "django.middleware.csrf.CsrfViewMiddleware" in settings.MIDDLEWARE


def test_api_is_throttled_per_user_and_per_anonymous_client():
    from rest_framework.settings import api_settings

    classes = [c.__name__ for c in api_settings.DEFAULT_THROTTLE_CLASSES]
    assert classes == ["AnonRateThrottle", "UserRateThrottle"]
    assert set(api_settings.DEFAULT_THROTTLE_RATES) == {"anon", "user"}


def test_production_settings_turn_on_https_secure_cookies_and_proxy_aware_throttling():
    names = [
        "DEBUG",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "X_FRAME_OPTIONS",
    ]
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}} | "
        "{'NUM_PROXIES': settings.REST_FRAMEWORK['NUM_PROXIES']}))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "petstore.settings.production",
        "DJANGO_SECRET_KEY": "k3v!Qz8#pL2@wX9$" * 4,
        "DJANGO_ALLOWED_HOSTS": "petstore.example.org",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    values = json.loads(result.stdout)
    assert values.pop("DEBUG") is False and values.pop("SECURE_HSTS_SECONDS") >= 31536000
    assert values.pop("X_FRAME_OPTIONS") == "DENY" and values.pop("NUM_PROXIES") == 1
    assert all(values.values()), values


def settings_json(expression: str, **environ: str):
    """`expression` over the local settings `s`, evaluated in a fresh process with `environ`."""
    code = f"from django.conf import settings as s; print(json.dumps({expression}, default=str))"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "petstore.settings.local", **environ}
    result = subprocess.run(
        [sys.executable, "-c", f"import django, json; django.setup(); {code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def database_options(**environ: str) -> dict:
    return settings_json("s.DATABASES['default']['OPTIONS']", **environ)


def test_postgresql_connections_prepare_repeated_statements():
    options = database_options(DATABASE_URL="postgres://postgres@127.0.0.1:5432/petstore")

    assert options == {"server_side_binding": True, "prepare_threshold": 5, "connect_timeout": 5}


def test_prepared_statements_can_be_turned_off_for_a_pooler():
    options = database_options(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/petstore", DATABASE_PREPARE_THRESHOLD="off"
    )

    assert options == {"server_side_binding": True, "prepare_threshold": None, "connect_timeout": 5}


@pytest.mark.django_db
def test_a_statement_run_often_is_prepared_on_postgresql(require_postgres):
    from django.db import connection

    from adoptions.models import Shelter

    for _ in range(6):  # the threshold is 5 runs on a connection
        list(Shelter.objects.filter(name="Nobody's shelter"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]

    assert any("adoptions_shelter" in statement for statement in prepared)


def email_settings(email_url: str) -> dict:
    return settings_json(
        "{'backend': s.EMAIL_BACKEND, 'path': getattr(s, 'EMAIL_FILE_PATH', None),"
        " 'host': s.EMAIL_HOST, 'port': s.EMAIL_PORT, 'tls': s.EMAIL_USE_TLS}",
        EMAIL_URL=email_url,
    )


@pytest.mark.parametrize(
    ("email_url", "expected"),
    [
        ("consolemail://", {"backend": "django.core.mail.backends.console.EmailBackend"}),
        (
            "filemail:///var/tmp/petstore-mail",
            {"backend": "django.core.mail.backends.filebased.EmailBackend", "path": "/var/tmp/petstore-mail"},
        ),
        (
            "smtp+tls://mailer:secret@smtp.example.org:587",
            {
                "backend": "django.core.mail.backends.smtp.EmailBackend",
                "host": "smtp.example.org",
                "port": 587,
            },
        ),
    ],
)
def test_email_url_chooses_the_email_backend(email_url, expected):
    configured = email_settings(email_url)

    assert {key: configured[key] for key in expected} == expected
    assert configured["tls"] is email_url.startswith("smtp+tls")


def test_filemail_without_a_path_writes_under_var():
    configured = email_settings("filemail://")

    assert configured["backend"] == "django.core.mail.backends.filebased.EmailBackend"
    assert configured["path"].endswith("/var/mail") and configured["path"].startswith("/")

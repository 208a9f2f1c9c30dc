"""The settings we rely on are really set: a misspelt CELERY_* name is silently ignored."""

import os
import subprocess
import sys
from pathlib import Path

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


def test_production_settings_pass_check_deploy():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "petstore.settings.production",
        "DJANGO_SECRET_KEY": "k3v!Qz8#pL2@wX9$" * 4,
        "DJANGO_ALLOWED_HOSTS": "petstore.example.org",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    env.update(DJANGO_SETTINGS_MODULE="petstore.settings.production", DJANGO_ALLOWED_HOSTS="x.org")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr

"""Shared fixtures: real services when the environment names them, embedded ones otherwise.

A test that needs PostgreSQL or RabbitMQ skips on a laptop without them, and fails under CI
(CI=true), where a missing service is a broken build, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from rest_framework.test import APIClient

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, what: str) -> None:
    """Skip without the service; under CI, fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI requires {what}, which is not available", pytrace=False)
    pytest.skip(f"needs {what}")


@pytest.fixture
def require_postgres():
    from django.db import connection

    need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL=postgres://…)")


def _broker_reachable(url: str) -> bool:
    import kombu

    try:
        # Generous: under CI one slow handshake here would fail every broker test of the session.
        with kombu.Connection(url, connect_timeout=10) as conn:
            conn.ensure_connection(max_retries=3)
        return True
    except Exception:
        return False


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def rabbitmq_url():
    """A RabbitMQ vhost of this test session's own, so tests never disturb anything else."""
    base = os.environ.get("CELERY_BROKER_URL", "")
    need(base.startswith("amqp") and _broker_reachable(base), "RabbitMQ (set CELERY_BROKER_URL=amqp://…)")
    if shutil.which("rabbitmqctl") is None:
        yield base
        return
    vhost = f"petstore-test-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        # Replace the whole path: with amqp://…:5672// a split on "/" would name vhost "/<vhost>".
        yield urlunsplit(urlsplit(base)._replace(path=f"/{vhost}"))
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def broker(settings, rabbitmq_url):
    """Point the relay (and Celery settings) at the session's RabbitMQ vhost."""
    settings.CELERY_BROKER_URL = rabbitmq_url
    return rabbitmq_url


@pytest.fixture
def embedded_broker(settings, tmp_path):
    """Use the filesystem transport in <tmp_path>/broker (as PETSTORE_VAR_DIR=tmp_path would)."""
    folders = {name: tmp_path / "broker" / name for name in ("queue", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    _forget_embedded_bindings()
    return settings.CELERY_BROKER_URL


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def error_code(response) -> str:
    """The machine-readable code of a JSON error answer (and that it is JSON)."""
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    return response.json()["error"]["code"]


def client_for(user) -> APIClient:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def shelter(db):
    from tests.factories import ShelterFactory

    return ShelterFactory()


@pytest.fixture
def other_shelter(db):
    from tests.factories import ShelterFactory

    return ShelterFactory()


@pytest.fixture
def staff(shelter):
    from tests.factories import StaffFactory

    return StaffFactory(shelters=[shelter])


@pytest.fixture
def other_staff(other_shelter):
    from tests.factories import StaffFactory

    return StaffFactory(shelters=[other_shelter])


@pytest.fixture
def customer(db):
    from tests.factories import CustomerFactory

    return CustomerFactory()


@pytest.fixture
def other_customer(db):
    from tests.factories import CustomerFactory

    return CustomerFactory()


@pytest.fixture
def pet(shelter):
    """An available pet registered through the service, as staff would."""
    from tests.factories import register_pet

    return register_pet(shelter=shelter)


@pytest.fixture
def staff_client(staff):
    return client_for(staff)


@pytest.fixture
def customer_client(customer):
    return client_for(customer.user)


@pytest.fixture(autouse=True)
def _isolated_broker_folder(settings, tmp_path):
    """Give each test its own embedded broker folder, so queues never leak between tests."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
        for key, sub in (
            ("data_folder_in", "queue"),
            ("data_folder_out", "queue"),
            ("control_folder", "control"),
        ):
            (tmp_path / "broker" / sub).mkdir(parents=True, exist_ok=True)
            options[key] = str(tmp_path / "broker" / sub)
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = options
        _forget_embedded_bindings()


@pytest.fixture(autouse=True)
def _own_cache_namespace(settings):
    """Give each test its own cache key prefix, so counters kept in Redis never carry over."""
    settings.CACHES = {
        alias: {**config, "KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}"}
        for alias, config in settings.CACHES.items()
    }


def _forget_embedded_bindings() -> None:
    """Reset kombu's process-wide filesystem broker state when a test gets a fresh folder.

    kombu remembers declared bindings per process and skips writing them again, so without
    this a queue bound in an earlier test has no binding file in this test's folder and its
    messages are dropped ("UndeliverableWarning: No queues bound …").
    """
    from kombu.transport.filesystem import Transport

    Transport.global_state.clear()

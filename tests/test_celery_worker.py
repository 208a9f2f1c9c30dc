"""A real Celery worker process consumes from the broker and runs our tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings

from tests.support.processes import PROJECT_DIR, celery_worker, child_env, start, stop, wait_for_ready

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client_app(monkeypatch):
    """Build a Celery client app; Celery would prefer CELERY_BROKER_URL from the environment."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)

    def build(*, broker: str, backend: str, **conf) -> Celery:
        app = Celery("test-client", broker=broker, backend=backend)
        app.conf.update(task_serializer="json", accept_content=["json"], **conf)
        return app

    return build


def ping_through_a_worker(client: Celery, env: dict[str, str], log: Path):
    """Start a worker, send petstore.ping from `client`, stop it.

    Returns the result, the exit code and how much lower the worker's CPU priority was than ours.
    """
    worker = start(celery_worker(queues=["celery"]), env=env, log=log)
    try:
        wait_for_ready(worker, log)
        result = client.send_task("petstore.ping", queue="celery")
        try:
            assert result.get(timeout=30) == "pong"
        except Exception as error:
            raise AssertionError(f"{error!r}; worker log:\n{log.read_text()[-3000:]}") from error
        niceness = os.getpriority(os.PRIO_PROCESS, worker.pid) - os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        stop(worker, grace=60)  # SIGTERM: a warm shutdown (about 6 s with the prefork pool, more on CI)
        client.close()
    return result, worker.returncode, niceness


def test_worker_consuming_from_rabbitmq_answers_ping(broker, require_postgres, client_app, tmp_path):
    from django_celery_results.models import TaskResult

    client = client_app(broker=broker, backend="django-db", result_extended=True)

    result, exit_code, _ = ping_through_a_worker(client, child_env(), tmp_path / "worker.log")

    assert exit_code == 0  # it shut down cleanly on SIGTERM
    stored = TaskResult.objects.get(task_id=result.id)  # the worker wrote it to our database
    assert stored.status == "SUCCESS" and stored.task_name == "petstore.ping"


def test_worker_on_the_embedded_broker_answers_ping(embedded_broker, client_app, tmp_path):
    # The embedded setup: the filesystem broker in this test's folder, and a file result
    # backend, since an SQLite test database lives in this process's memory.
    results = tmp_path / "results"
    results.mkdir()
    client = client_app(
        broker=embedded_broker,
        backend=f"file://{results}",
        broker_transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    )
    env = child_env(
        CELERY_BROKER_URL="filesystem://",
        PETSTORE_VAR_DIR=str(tmp_path),
        CELERY_RESULT_BACKEND=f"file://{results}",  # read by Celery itself, over the settings
    )

    result, exit_code, niceness = ping_through_a_worker(client, env, tmp_path / "worker.log")

    assert result.status == "SUCCESS" and exit_code == 0
    assert niceness == min(10, 19 - os.getpriority(os.PRIO_PROCESS, 0))  # WORKER_NICE: requests first


# Builds the worker that `celery -A petstore worker …` runs and prints the queues it would
# consume, in place of starting it: nothing connects to the broker.
PRINT_CONSUMED_QUEUES = """
import json, sys
from celery.apps.worker import Worker
from celery.bin.celery import main

Worker.start = lambda worker: print("consumes", json.dumps(sorted(worker.app.amqp.queues.consume_from)))
sys.argv = ["celery", "-A", "petstore", "worker", "--pool", "solo", *sys.argv[1:]]
main()
"""


def queues_consumed(*options: str) -> list[str]:
    """Return the queues a worker started with these command-line options consumes."""
    result = subprocess.run(
        [sys.executable, "-c", PRINT_CONSUMED_QUEUES, *options],
        cwd=PROJECT_DIR,
        env=child_env(WORKER_NICE="0"),  # worker_init would renice the child
        capture_output=True,
        text=True,
        timeout=120,
    )
    printed = [line for line in result.stdout.splitlines() if line.startswith("consumes ")]
    assert len(printed) == 1, result.stdout + result.stderr
    return json.loads(printed[0].removeprefix("consumes "))


def test_a_worker_started_without_q_consumes_every_handler_queue_and_the_default():
    from events.handlers import HANDLERS

    handler_queues = {h.queue for name, h in HANDLERS.items() if not name.startswith("test.")}

    consumed = queues_consumed()

    assert len(handler_queues) == 7
    assert sorted(consumed) == sorted(handler_queues | {settings.CELERY_TASK_DEFAULT_QUEUE})


def test_a_worker_started_with_q_certificates_consumes_only_that_queue():
    assert queues_consumed("-Q", "certificates") == ["certificates"]

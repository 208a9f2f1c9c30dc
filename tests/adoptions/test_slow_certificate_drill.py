"""Slow certificates never delay an email: the Procfile's two workers, run as it says.

The general `worker` (every queue but certificates) and the `certificates` worker (that queue
alone, one message per pool process) are started from their Procfile lines, in the world of
tests/adoptions/test_fanout_faults.py (its `drill` fixture: a relay thread, RabbitMQ,
PostgreSQL and an SMTP server the test owns). CERTIFICATE_EXTRA_SECONDS makes the certificate
service slow, as a 30 s PDF would be.

With one worker for every queue, channel-wide prefetch (concurrency x 1 on RabbitMQ) let two
slow certificates take both pool processes while the emails waited behind them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import kombu
import pytest

from adoptions.models import Adoption
from events.broker import broker_connection
from events.models import Delivery
from notifications.models import Certificate
from tests.adoptions import test_fanout_faults
from tests.adoptions.test_fanout_faults import (
    CERTIFICATE,
    CONFIRMATION_EMAIL,
    EMAIL_STEPS,
    STEPS,
    Drill,
    Ledger,
    adopt_through_api,
    adoption_json,
    completions,
    ledger,
    message_key,
    steps_of,
)
from tests.factories import register_pet
from tests.support.processes import child_env, start, wait_for_ready
from tests.test_compose import argv, procfile

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

drill = test_fanout_faults.drill  # the fixture: relay thread, SMTP server, clean handler queues

CERTIFICATE_SECONDS = 8  # each; POOL at a time
FAST_WITHIN = 6  # seconds for the other six steps of every adoption, well inside the first PDF


def certificate_pool() -> int:
    """The certificate worker's pool processes: its --concurrency, else Celery's one per core."""
    options = argv(procfile()["certificates"])
    return int(options[options.index("--concurrency") + 1]) if "--concurrency" in options else os.cpu_count()


POOL = certificate_pool()
ADOPTIONS = POOL + 2  # two more than the pool: they must wait in RabbitMQ, not in a process
FAST_STEPS = [step for step in STEPS if step != CERTIFICATE]


def start_procfile_worker(drill: Drill, process: str) -> subprocess.Popen:
    """Start the Procfile's line for `process`, its `celery` run by this interpreter."""
    command = argv(procfile()[process])
    assert command[0] == "celery", command
    env = child_env(
        EMAIL_URL=f"smtp://127.0.0.1:{drill.smtp_port}",
        PETSTORE_VAR_DIR=str(drill.var_dir),
        CERTIFICATE_EXTRA_SECONDS=str(CERTIFICATE_SECONDS),  # slow for whoever asks it
    )
    worker = start([sys.executable, "-m", *command], env=env, log=drill.var_dir / f"{process}.log")
    drill.workers[process] = worker  # stopped with the drill, and its log shown when a wait fails
    return worker


def ready_all(drill: Drill) -> None:
    """Wait until every worker the drill started consumes (started together, they start faster)."""
    for name, worker in drill.workers.items():
        wait_for_ready(worker, drill.var_dir / f"{name}.log", timeout=60)


@contextmanager
def certificates_queue(broker: str) -> Iterator[Callable[[], tuple[int, int]]]:
    """Yield a function reading the certificates queue as RabbitMQ has it: (ready, consumers)."""
    with broker_connection(broker) as conn:
        queue = kombu.Queue("certificates", no_declare=True)(conn.channel())

        def state() -> tuple[int, int]:
            declared = queue.queue_declare(passive=True)
            return declared.message_count, declared.consumer_count

        yield state


def certificates_held(queue: Callable[[], tuple[int, int]]) -> int:
    """Certificate messages the worker holds: all three published, less those ready and those made.

    The queue is read before the certificates are counted: one finished between the two reads
    makes that sample one low, never one high.
    """
    ready, _ = queue()
    return ADOPTIONS - ready - Certificate.objects.count()


def event_ids(adoption_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    return list(Adoption.objects.filter(id__in=adoption_ids).values_list("adopted_event_id", flat=True))


def test_slow_certificates_on_their_own_worker_delay_no_email(drill, shelter, customer, customer_client):
    # Given the Procfile's general and certificate workers, and certificates that take 8 s each
    for process in ("worker", "certificates"):
        start_procfile_worker(drill, process)
    ready_all(drill)
    pets = [register_pet(shelter=shelter, name=f"Pet {n}") for n in range(ADOPTIONS)]

    # When three pets are adopted at once
    adoption_ids = [adopt_through_api(customer_client, pet) for pet in pets]
    events = event_ids(adoption_ids)

    # Then every other step of all three succeeds within seconds, before any certificate is made
    fast = Delivery.objects.filter(event_id__in=events, handler__in=FAST_STEPS, status="succeeded")
    every_fast_step = ADOPTIONS * len(FAST_STEPS)
    drill.wait(lambda: fast.count() == every_fast_step, what="the fast steps", timeout=FAST_WITHIN)
    assert not Certificate.objects.exists()
    assert {message_key(m) for m in drill.mailbox.received} == {(e, s) for e in events for s in EMAIL_STEPS}
    assert [m["To"] for m in drill.mailbox.received].count(customer.email) == ADOPTIONS
    for adoption_id in adoption_ids:
        body = adoption_json(customer_client, adoption_id)
        steps = steps_of(body)
        assert body["status"] != "completed"
        assert steps.pop(CERTIFICATE)[0] in ("pending", "running"), body
        assert {status for status, _ in steps.values()} == {"succeeded"}, body
    running = Delivery.objects.filter(handler=CERTIFICATE, status="running")
    assert running.count() <= POOL

    # And the certificate worker holds one certificate per pool process, the rest wait in RabbitMQ
    drill.wait(lambda: running.count() == POOL, what="a certificate in each pool process")
    completed = Adoption.objects.filter(id__in=adoption_ids, status="completed")
    held = []
    with certificates_queue(drill.broker) as queue:
        assert queue() == (ADOPTIONS - POOL, 1)  # and its one consumer is the certificate worker
        assert not Certificate.objects.exists()  # still the first certificates' runs

        def all_completed() -> bool:
            held.append(certificates_held(queue))  # sampled through every certificate's run
            return completed.count() == ADOPTIONS

        timeout = -(-ADOPTIONS // POOL) * CERTIFICATE_SECONDS + 20
        drill.wait(all_completed, what="every adoption to complete", timeout=timeout)

    # And each adoption completed once with one certificate, never more than POOL made at once
    assert max(held) == POOL, held
    assert ledger(drill.mailbox, drill.media) == Ledger()  # every step of all three, once
    assert [completions(a) for a in adoption_ids] == [1] * ADOPTIONS
    assert sorted(Certificate.objects.values_list("adoption_id", flat=True)) == sorted(adoption_ids)
    runs = list(Delivery.objects.filter(handler=CERTIFICATE, event_id__in=events).order_by("started_at"))
    assert [(d.status, d.attempts) for d in runs] == [("succeeded", 1)] * ADOPTIONS
    finishes = sorted(run.finished_at for run in runs)
    assert all(run.started_at >= finishes[n - POOL] for n, run in enumerate(runs) if n >= POOL)
    fast_finished = Delivery.objects.filter(event_id__in=events, handler__in=FAST_STEPS)
    assert max(fast_finished.values_list("finished_at", flat=True)) < runs[0].finished_at
    assert f"{CERTIFICATE}[" not in drill.log("worker")  # the general worker never took one
    assert f"{CONFIRMATION_EMAIL}[" not in drill.log("certificates")

"""Time-limit drills: a real worker runs the certificate step past its time limit.

They run as tests/adoptions/test_fanout_faults.py does (its `drill` fixture: a relay thread,
real Celery workers, RabbitMQ, PostgreSQL and an SMTP server the test owns). HANDLER_TIME_LIMITS
lowers the certificate's hard limit from 120 s to TIME_LIMIT (its soft limit is 5 s before
that: events/handlers.py), and CERTIFICATE_EXTRA_SECONDS makes the step far slower than both.

That slowness is a worker's setting, fixed when it starts. The slow service "recovers" the way
a deployment would recover it: the slow worker is shut down (cleanly, after surviving its time
limit) and a worker without the delay takes the certificates queue before the retry is due.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import kombu
import pytest
from django.conf import settings

from adoptions.models import Adoption
from events.broker import broker_connection
from events.models import Delivery, OutboxMessage
from notifications.models import Certificate
from tests.adoptions import test_fanout_faults
from tests.adoptions.test_fanout_faults import (
    CERTIFICATE,
    STEPS,
    Drill,
    Ledger,
    completions,
    deliveries_of,
    ledger,
    task_results,
)
from tests.factories import adopt_pet, register_pet
from tests.support.processes import children_of, stop

drill = test_fanout_faults.drill  # the fixture: relay thread, SMTP server, clean handler queues

TIME_LIMIT = 8  # seconds: the soft limit comes at 3, long enough to freeze the process before it
LIMITS = json.dumps({CERTIFICATE: TIME_LIMIT})
SLOW = "60"  # CERTIFICATE_EXTRA_SECONDS of the slow worker: far past either limit
OTHER_QUEUES = [q for q in settings.PETSTORE_HANDLER_QUEUES if q != "certificates"]
ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(autouse=True)
def _chores_every_half_second(settings) -> None:
    """Run the relay's housekeeping (recover_stalled among it) every 0.5 s, not 30.

    Autouse, so it is set before `drill` starts the relay, which reads it after each round.
    """
    settings.RELAY_CHORES_SECONDS = 0.5


def start_slow_worker(drill: Drill, **env: str):
    """The other six steps on one worker; the certificate, slowed past its limit, on another."""
    drill.start_worker("steps", queues=OTHER_QUEUES)
    return drill.start_worker(
        "slow",
        queues=["certificates"],
        concurrency=1,
        HANDLER_TIME_LIMITS=LIMITS,
        CERTIFICATE_EXTRA_SECONDS=SLOW,
        **env,
    )


def retire_slow_worker(drill: Drill) -> int:
    """Shut the slow worker down (a warm shutdown); return its exit code."""
    slow = drill.workers["slow"]
    stop(slow)
    return slow.returncode


def start_fast_worker(drill: Drill) -> None:
    """The certificate service is fast again: a worker without the delay takes its queue."""
    drill.start_worker("fast", queues=["certificates"], concurrency=1, HANDLER_TIME_LIMITS=LIMITS)


def messages_in(broker: str, queue: str) -> int:
    """Messages `queue` holds ready (with no consumer, unacknowledged ones are back there)."""
    with broker_connection(broker) as conn:
        return kombu.Queue(queue, no_declare=True)(conn.channel()).queue_declare(passive=True).message_count


def assert_done_once(drill: Drill, adoption: Adoption) -> None:
    """One certificate row and file; every other step succeeded at its first attempt; completed once."""
    deliveries = deliveries_of(adoption.adopted_event_id)
    deliveries.pop(CERTIFICATE)
    assert {h: (d.status, d.attempts) for h, d in deliveries.items()} == {
        step: ("succeeded", 1) for step in STEPS if step != CERTIFICATE
    }
    assert Certificate.objects.filter(adoption=adoption).count() == 1
    (pdf,) = drill.media.glob("certificates/*")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert ledger(drill.mailbox, drill.media) == Ledger()
    assert completions(adoption.id) == 1


# --------------------------------------------------------------------------- soft limit


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_a_certificate_past_its_soft_time_limit_fails_is_retried_and_is_made_once(drill, shelter, customer):
    # The slow worker schedules its retry 4 to 8 s after the failure: time to take its place.
    slow = start_slow_worker(drill, HANDLER_RETRY_BASE_SECONDS="8", HANDLER_RETRY_MAX_SECONDS="8")
    (pool_process,) = children_of(slow.pid)

    adoption = adopt_pet(pet=register_pet(shelter=shelter), customer=customer).adoption
    failed = Delivery.objects.filter(handler=CERTIFICATE, event_id=adoption.adopted_event_id, status="failed")
    first = drill.wait(failed.first, what="the certificate's first attempt to fail")

    # The soft limit raised inside the sleeping step; the failure was recorded and a retry scheduled.
    assert first.attempts == 1 and first.next_attempt_at is not None
    assert first.last_error == f"SoftTimeLimitExceeded: ran past its soft time limit of {TIME_LIMIT - 5}s"
    assert f"Soft time limit ({TIME_LIMIT - 5}s) exceeded for {CERTIFICATE}[" in drill.log("slow")
    assert slow.poll() is None and children_of(slow.pid) == [pool_process]  # same pool process
    assert not Certificate.objects.exists() and not list(drill.media.glob("certificates/*"))
    assert retire_slow_worker(drill) == 0
    start_fast_worker(drill)

    completed = Adoption.objects.filter(id=adoption.id, status="completed")
    drill.wait(completed.exists, what="the adoption to complete on the retry")

    certificate = deliveries_of(adoption.adopted_event_id)[CERTIFICATE]
    assert (certificate.status, certificate.attempts) == ("succeeded", 2)
    assert "SoftTimeLimitExceeded" in certificate.last_error  # the last failure stays on record
    assert drill.log("slow").count(" received") == 1  # the retry went to the fast worker alone
    assert task_results(drill.log("slow"), "failed") == {CERTIFICATE: 1}
    assert task_results(drill.log("fast"), "succeeded") == {CERTIFICATE: 1}
    assert_done_once(drill, adoption)


# --------------------------------------------------------------------------- hard limit


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_a_certificate_past_its_hard_time_limit_is_killed_retried_at_once_and_made_once(
    drill, shelter, customer, settings
):
    settings.DELIVERY_STALL_MARGIN_SECONDS = 600  # recover_stalled stays out of it: the worker acts
    # The slow worker schedules the next attempt 12 to 24 s after the limit: time to take its place.
    slow = start_slow_worker(drill, HANDLER_RETRY_BASE_SECONDS="24", HANDLER_RETRY_MAX_SECONDS="24")
    (pool_process,) = children_of(slow.pid)

    adoption = adopt_pet(pet=register_pet(shelter=shelter), customer=customer).adoption
    event_id = adoption.adopted_event_id
    running = Delivery.objects.filter(handler=CERTIFICATE, event_id=event_id, status="running")
    drill.wait(running.exists, what="the certificate to start")
    # Stopped, the process cannot run the soft limit's signal handler, as one stuck in native
    # code could not: only the hard limit ends it.
    os.kill(pool_process, signal.SIGSTOP)
    hard = f"Hard time limit ({TIME_LIMIT}s) exceeded for {CERTIFICATE}["
    drill.wait(lambda: hard in drill.log("slow"), what="the hard time limit", timeout=TIME_LIMIT + 10)
    drill.wait(lambda: children_of(slow.pid) not in ([], [pool_process]), what="a new pool process")

    # The worker's main process scheduled the next attempt itself and wrote why; the attempt
    # stays `running`, to be counted by the next one's claim.
    assert slow.poll() is None  # the worker lives on, with a fresh pool process
    stalled = running.get()
    assert stalled.attempts == 1
    assert stalled.last_error == (
        f"TimeLimitExceeded: ran past its hard time limit of {TIME_LIMIT}s; its process was ended"
    )
    scheduled = OutboxMessage.objects.filter(handler=CERTIFICATE, event_id=event_id, published_at=None)
    assert scheduled.count() == 1
    assert retire_slow_worker(drill) == 0
    # Celery acknowledged the timed-out message: the broker holds no copy; the outbox row is the retry.
    assert messages_in(drill.broker, "certificates") == 0
    assert not Certificate.objects.exists()
    start_fast_worker(drill)

    completed = Adoption.objects.filter(id=adoption.id, status="completed")
    drill.wait(completed.exists, what="the adoption to complete on the scheduled attempt", timeout=60)

    certificate = deliveries_of(event_id)[CERTIFICATE]
    assert (certificate.status, certificate.attempts) == ("succeeded", 2)
    assert certificate.last_error.startswith("TimeLimitExceeded")  # the last failure stays on record
    assert task_results(drill.log("fast"), "succeeded") == {CERTIFICATE: 1}
    assert_done_once(drill, adoption)


# --------------------------------------------------------------------------- the setting


def run_with_limits(limits: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "petstore.settings.test"}
    env["HANDLER_TIME_LIMITS"] = json.dumps(limits)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_handler_time_limits_replace_the_declared_limit_of_the_task_and_handler():
    script = (
        "import django; django.setup()\n"
        "from events.handlers import HANDLERS; from petstore.celery import app\n"
        "print([(app.tasks[n].time_limit, app.tasks[n].soft_time_limit, HANDLERS[n].time_limit)"
        f" for n in ({CERTIFICATE!r}, 'adoptions.analytics')])"
    )

    result = run_with_limits({CERTIFICATE: 8}, "-c", script)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[(8, 3, 8), (60, 55, 60)]"  # the others keep their own


def test_manage_py_check_refuses_a_limit_past_the_consumer_timeout_and_a_misspelt_handler():
    result = run_with_limits({CERTIFICATE: 1800, "notifications.certficate": 8}, "manage.py", "check")

    assert result.returncode != 0
    assert f"petstore.E006) Handler {CERTIFICATE} may run 1800s" in result.stderr
    assert "petstore.E008) HANDLER_TIME_LIMITS gives 'notifications.certficate' 8." in result.stderr

"""Poison-handler drill: one adoption's step raises in its own code, on every attempt.

It runs as tests/adoptions/test_fanout_faults.py does (its `drill` fixture: a relay thread, a
real Celery worker, RabbitMQ, PostgreSQL and an SMTP server the test owns), and mocks nothing
of ours: the poison is a state of the world the real certificate step trips over. A directory,
with a file in it, stands where one adoption's certificate goes (certificates/<adoption id>.pdf
in the media folder the worker shares with the test). The step renders the PDF, tries to clear
the path and gets OSError "Directory not empty": an ordinary exception, not a PermanentFailure,
so it is retried with backoff until its attempts run out, then dead. Every other adoption's
certificate has a path of its own and goes through. Removing the directory is the fix staff
would make before redriving the dead letter.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import Client
from django.urls import reverse

from adoptions.models import Adoption
from events.models import Delivery, OutboxMessage
from notifications.models import Certificate
from tests.adoptions import test_fanout_faults
from tests.adoptions.test_fanout_faults import (
    CERTIFICATE,
    STEPS,
    Drill,
    Ledger,
    adopt_through_api,
    adoption_in,
    completions,
    ledger,
    steps_of,
)
from tests.factories import adopt_pet, register_pet

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

drill = test_fanout_faults.drill  # the fixture: relay thread, SMTP server, clean handler queues

MAX_ATTEMPTS = 3  # HANDLER_MAX_ATTEMPTS of the worker
RETRY_BASE, RETRY_MAX = 0.5, 2.0  # seconds: the retries are due within a second or two
NOT_EMPTY = f"OSError: [Errno {errno.ENOTEMPTY}] {os.strerror(errno.ENOTEMPTY)}"
TIMEOUT = 45  # seconds for any one wait: two cores, shared with other test runs


@pytest.fixture
def console(staff, staff_group) -> Client:
    """The staff console, logged in as the shelter's staff (seed_demo's group)."""
    staff.groups.add(staff_group)
    client = Client()
    client.force_login(staff)
    return client


def block_certificate_path(media: Path, adoption_id: uuid.UUID) -> Path:
    """Put a non-empty directory where the adoption's certificate file will be written."""
    squatter = media / "certificates" / f"{adoption_id}.pdf"
    squatter.mkdir(parents=True)
    (squatter / "left-behind.txt").write_text("not a certificate\n")
    return squatter


def adopt_with_blocked_certificate(drill: Drill, pet, customer) -> tuple[Adoption, Path]:
    """Adopt `pet`, its certificate path blocked before the event commits: no attempt misses it."""
    with transaction.atomic():
        adoption = adopt_pet(pet=pet, customer=customer).adoption
        squatter = block_certificate_path(drill.media, adoption.id)
    return adoption, squatter


def retry_delays(event_id: uuid.UUID) -> list[float]:
    """Seconds from each scheduled retry of the certificate step to the moment it was due."""
    retries = OutboxMessage.objects.filter(event_id=event_id, handler=CERTIFICATE).order_by("id")
    assert all(row.published_at is not None for row in retries)  # the relay sent every one
    return [(row.available_at - row.created_at).total_seconds() for row in retries]


def backoff_window(attempt: int) -> tuple[float, float]:
    """The delay events.delivery.retry_delay may pick after `attempt` fails: half to all of it."""
    ceiling = min(RETRY_MAX, RETRY_BASE * 2 ** (attempt - 1))
    # Less a margin at the low end: the row's created_at is read a database round trip later.
    return ceiling / 2 - 0.1, ceiling


def step_error(body: dict, name: str) -> str:
    return next(step["lastError"] for step in body["steps"] if step["name"] == name)


def test_a_step_raising_on_one_adoption_goes_dead_after_its_retries_and_a_redrive_completes_it(
    drill, shelter, customer, customer_client, console
):
    # given a worker allowing three attempts a step, and an adoption completed before the poison
    drill.start_worker(
        "worker",
        HANDLER_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        HANDLER_RETRY_BASE_SECONDS=str(RETRY_BASE),
        HANDLER_RETRY_MAX_SECONDS=str(RETRY_MAX),
    )
    names = ("Before", "Poison", "After 1", "After 2")
    pets = {name: register_pet(shelter=shelter, name=name) for name in names}
    before = adopt_through_api(customer_client, pets["Before"])
    first = adoption_in(customer_client, before, "completed")
    others = {before: drill.wait(first, what="the adoption before the poison", timeout=TIMEOUT)}

    # when one adoption's certificate step raises, and more adoptions follow its first failure
    poisoned, squatter = adopt_with_blocked_certificate(drill, pets["Poison"], customer)
    event_id = poisoned.adopted_event_id
    failed = Delivery.objects.filter(event_id=event_id, handler=CERTIFICATE, status__in=["failed", "dead"])
    drill.wait(failed.exists, what="the poisoned certificate's first failure", timeout=TIMEOUT)
    after = [adopt_through_api(customer_client, pets[name]) for name in ("After 1", "After 2")]
    for adoption_id in after:
        completed = adoption_in(customer_client, adoption_id, "completed")
        others[adoption_id] = drill.wait(completed, what="the adoptions after the poison", timeout=TIMEOUT)
    needs_attention = adoption_in(customer_client, poisoned.id, "needs_attention")
    body = drill.wait(needs_attention, what="the poisoned adoption to need attention", timeout=TIMEOUT)

    # then that one step is dead with its error after every attempt; the rest all succeeded
    steps = steps_of(body)
    assert steps.pop(CERTIFICATE) == ("dead", MAX_ATTEMPTS)
    assert steps == {step: ("succeeded", 1) for step in STEPS if step != CERTIFICATE}
    assert step_error(body, CERTIFICATE).startswith(f"{NOT_EMPTY}: '{squatter}'")
    assert body["certificateUrl"] is None and not Certificate.objects.filter(adoption=poisoned).exists()
    assert customer_client.get(f"/api/pets/{pets['Poison'].id}").json()["status"] == "adopted"
    assert completions(poisoned.id) == 0
    # each failed attempt but the last was retried by an outbox row, due after a growing backoff
    delays = retry_delays(event_id)
    assert len(delays) == MAX_ATTEMPTS - 1, delays
    for attempt, delay in enumerate(delays, start=1):
        low, high = backoff_window(attempt)
        assert low <= delay <= high, (attempt, delays)
    worker_log = drill.log("worker")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert f"{CERTIFICATE} failed on {event_id} (attempt {attempt}): OSError(" in worker_log
    # the same step of the other adoptions, before and after, was untouched by it
    for adoption_id, other in others.items():
        assert steps_of(other) == {step: ("succeeded", 1) for step in STEPS}
        assert completions(adoption_id) == 1
    # the staff console lists it as the one dead letter, with its error
    listed = console.get(reverse("admin:events_delivery_changelist"), {"status": "dead"})
    assert listed.status_code == 200
    assert [(d.handler, d.event_id) for d in listed.context["cl"].result_list] == [(CERTIFICATE, event_id)]
    assert NOT_EMPTY in listed.content.decode()
    assert drill.workers["worker"].poll() is None  # the worker lived through every failure

    # when the cause is gone and that event's dead letter is redriven
    shutil.rmtree(squatter)
    output = io.StringIO()
    call_command("redrive_dead_letters", "--event-id", str(event_id), stdout=output)
    assert output.getvalue().strip() == "redriven 1 dead deliveries"
    completed = adoption_in(customer_client, poisoned.id, "completed")
    body = drill.wait(completed, what="the redriven adoption to complete", timeout=TIMEOUT)

    # then the step succeeds at its first fresh attempt and the adoption completes, once
    assert steps_of(body) == {step: ("succeeded", 1) for step in STEPS}  # a redrive starts afresh
    assert body["certificateUrl"].endswith(f"/api/adoptions/{poisoned.id}/certificate")
    assert (drill.media / "certificates" / f"{poisoned.id}.pdf").read_bytes().startswith(b"%PDF")
    assert completions(poisoned.id) == 1
    assert ledger(drill.mailbox, drill.media) == Ledger()  # all four adoptions, every step once
    assert not Delivery.objects.filter(status="dead").exists()

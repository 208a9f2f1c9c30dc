"""Fault drills for an adoption's seven steps: a real worker, RabbitMQ, PostgreSQL and SMTP server.

The relay runs in a thread of the test; Celery workers are child processes; emails go to an
SMTP server the test owns (aiosmtpd), which accepts or refuses on demand.

Oracle after each drill (the "ledger"): for every committed PetAdopted event, each of the seven
handlers has exactly one succeeded delivery and exactly one effect (one email the server
accepted and recorded per email step, one certificate row and file, one vet appointment, one
welcome package, the counters moved once). It reports what is **lost** (committed, not done),
**duplicated** (done more than once) and **unexpected** (an effect no committed event asked for).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from django_celery_results.models import TaskResult

from adoptions.models import (
    Adoption,
    AdoptionStats,
    ShelterInventory,
    VetAppointment,
    WelcomePackage,
)
from events import outbox
from events.handlers import HANDLERS, handlers_for
from events.models import Delivery, OutboxMessage, StoredEvent
from events.relay import Relay
from notifications.handlers import CONFIRMATION_EMAIL, SHELTER_NOTICE
from notifications.models import Certificate, SentEmail
from tests.factories import CustomerFactory, adopt_pet, register_pet
from tests.support.processes import (
    celery_worker,
    child_env,
    children_of,
    start,
    stop,
    wait_for_ready,
)
from tests.support.rabbit import bind_queue, delete_queue, fetch_all, purge_queues, queue_report
from tests.support.tcp_proxy import TcpProxy, free_port
from tests.support.threads import relay_running, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

CERTIFICATE = "notifications.certificate"
VET = "adoptions.vet_appointment"
WELCOME = "adoptions.welcome_package"
ANALYTICS = "adoptions.analytics"
INVENTORY = "adoptions.inventory"
STEPS = (CONFIRMATION_EMAIL, SHELTER_NOTICE, CERTIFICATE, VET, WELCOME, ANALYTICS, INVENTORY)
EMAIL_STEPS = (CONFIRMATION_EMAIL, SHELTER_NOTICE)

SETTLE_TIMEOUT = 30  # seconds for an adoption's steps to settle; they take about one


# --------------------------------------------------------------------------- SMTP server


class Mailbox:
    """aiosmtpd handler: keeps every accepted message, refuses chosen recipients on demand."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.refused: list[tuple[str, str]] = []  # (recipient, reply), one per refusal
        self.refuse_rcpt: dict[str, str] = {}  # recipient → reply to RCPT TO (e.g. "550 …")
        self.refuse_data: dict[str, str] = {}  # recipient → reply to DATA (e.g. "421 …")
        self.delay = 0.0  # seconds each accepted message takes, as a slow server would

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if reply := self.refuse_rcpt.get(address):
            self.refused.append((address, reply))
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        for recipient in envelope.rcpt_tos:
            if reply := self.refuse_data.get(recipient):
                self.refused.append((recipient, reply))
                return reply
        await asyncio.sleep(self.delay)
        self.received.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def accept_everything(self) -> None:
        self.refuse_rcpt, self.refuse_data = {}, {}

    def refusals_for(self, recipient: str) -> int:
        return sum(1 for address, _ in self.refused if address == recipient)


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ready_timeout=30)  # 5 s by default
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


# --------------------------------------------------------------------------- the drill


@dataclass
class Drill:
    """One drill's world: broker vhost, SMTP server, media folder and the workers it started."""

    broker: str
    mailbox: Mailbox
    smtp_port: int
    var_dir: Path
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def media(self) -> Path:
        return self.var_dir / "media"

    def start_worker(self, name: str, *, queues: list[str] | None = None, concurrency: int = 2, **env: str):
        """Start a worker on the handler queues (all by default); return once it consumes."""
        log = self.var_dir / f"{name}.log"
        environment = child_env(
            **{
                "EMAIL_URL": f"smtp://127.0.0.1:{self.smtp_port}",
                "PETSTORE_VAR_DIR": str(self.var_dir),
                "HANDLER_RETRY_BASE_SECONDS": "0.2",
                "HANDLER_RETRY_MAX_SECONDS": "1",
                "HANDLER_MAX_ATTEMPTS": "3",
                "CERTIFICATE_EXTRA_SECONDS": "0",
                **env,
            }
        )
        command = celery_worker(
            queues=queues or settings.PETSTORE_HANDLER_QUEUES, concurrency=concurrency, name=name
        )
        worker = self.workers[name] = start(command, env=environment, log=log)
        wait_for_ready(worker, log)
        return worker

    def log(self, name: str) -> str:
        path = self.var_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_workers(self) -> None:
        for worker in self.workers.values():  # all at once: a warm shutdown takes seconds
            if worker.poll() is None:
                worker.terminate()
        for worker in self.workers.values():
            stop(worker)

    def wait(self, condition: Callable[[], Any], *, what: str, timeout: float = SETTLE_TIMEOUT):
        """Poll `condition`; on timeout fail with the deliveries and the workers' last words."""
        try:
            return wait_until(condition, timeout=timeout, what=what)
        except AssertionError as error:
            deliveries = "\n".join(
                f"  {d.handler} {d.event_id} {d.status} x{d.attempts} {d.last_error[:120]}"
                for d in Delivery.objects.order_by("event_id", "handler")
            )
            logs = "\n".join(f"--- {name}:\n{self.log(name)[-2500:]}" for name in self.workers)
            broker = f"--- broker:\n{queue_report(self.broker)}"
            raise AssertionError(f"{error}\ndeliveries:\n{deliveries}\n{logs}\n{broker}") from None


@contextlib.contextmanager
def drill_world(broker: str, settings, tmp_path: Path) -> Iterator[Drill]:
    """An SMTP server and clean handler queues; the processes the test starts are stopped after."""
    assert {h.name for h in handlers_for("PetAdopted")} == set(STEPS)  # a new step needs a ledger
    settings.MEDIA_ROOT = tmp_path / "media"  # the worker's too: PETSTORE_VAR_DIR=tmp_path
    purge_queues(broker, settings.PETSTORE_HANDLER_QUEUES)  # no task of an earlier test
    with smtp_server() as (mailbox, port):
        world = Drill(broker, mailbox, port, tmp_path)
        try:
            yield world
        finally:
            world.stop_workers()


@pytest.fixture
def drill(require_postgres, broker, settings, tmp_path) -> Iterator[Drill]:
    """A relay thread, an SMTP server and clean handler queues; workers are started by the test."""
    with drill_world(broker, settings, tmp_path) as world, relay_running(Relay()):
        yield world


# --------------------------------------------------------------------------- the ledger


@dataclass
class Ledger:
    lost: set = field(default_factory=set)
    duplicated: set = field(default_factory=set)
    unexpected: set = field(default_factory=set)


def message_key(message: EmailMessage) -> tuple[uuid.UUID, str] | None:
    """Return (event id, handler) from a Message-ID <event.handler@petstore-events>."""
    message_id = (message["Message-ID"] or "").strip()  # a folded header keeps a leading space
    found = re.fullmatch(r"<([0-9a-f-]{36})\.(.+)@petstore-events>", message_id)
    return (uuid.UUID(found[1]), found[2]) if found else None


def ledger(mailbox: Mailbox, media: Path) -> Ledger:
    """Compare every committed adoption's seven steps with the effects they left."""
    adoptions = Adoption.objects.exclude(adopted_event_id=None)
    events = dict(adoptions.values_list("id", "adopted_event_id"))
    committed = set(events.values())
    statuses = {
        (d.event_id, d.handler): d.status
        for d in Delivery.objects.filter(event_id__in=committed, handler__in=STEPS)
    }
    result = Ledger()
    effects = _email_effects(mailbox, committed, result) + _row_effects(events, media, result)
    effects += _counter_effects(committed, statuses, result)
    for key in ((event_id, handler) for event_id in committed for handler in STEPS):
        if statuses.get(key) != "succeeded" or effects[key] < 1:
            result.lost.add(key)
        elif effects[key] > 1:
            result.duplicated.add(key)
    return result


def _email_effects(mailbox: Mailbox, committed: set, result: Ledger) -> Counter:
    """Count the emails the server accepted that the handler also recorded as sent."""
    received = Counter(message_key(m) for m in mailbox.received)
    recorded = set(SentEmail.objects.values_list("event_id", "handler"))
    result.unexpected |= {("email", k) for k in received if k is None or k[0] not in committed}
    result.unexpected |= {("email record", key) for key in recorded if key[0] not in committed}
    return Counter({key: count for key, count in received.items() if key in recorded})


def _row_effects(events: dict, media: Path, result: Ledger) -> Counter:
    """Count certificates (with their file intact), vet appointments and welcome packages."""
    effects: Counter = Counter()
    files = {p.relative_to(media).as_posix() for p in media.glob("certificates/*")}
    intact = {
        c.adoption_id
        for c in Certificate.objects.all()
        if c.file.name in files and _sha256(media / c.file.name) == c.sha256
    }
    stored = set(Certificate.objects.values_list("file", flat=True))
    result.unexpected |= {("file", name) for name in files - stored}
    models = ((Certificate, CERTIFICATE), (VetAppointment, VET), (WelcomePackage, WELCOME))
    for model, handler in models:
        for adoption_id in model.objects.values_list("adoption_id", flat=True):
            if adoption_id not in events:
                result.unexpected.add((handler, adoption_id))
            elif model is not Certificate or adoption_id in intact:
                effects[(events[adoption_id], handler)] += 1
    return effects


def _counter_effects(committed: set, statuses: dict, result: Ledger) -> Counter:
    """Counters are totals, not per event: each step done must have moved them by exactly one."""
    totals = {
        ANALYTICS: AdoptionStats.objects.aggregate(n=Sum("adoptions"))["n"] or 0,
        INVENTORY: ShelterInventory.objects.aggregate(n=Sum("adopted"))["n"] or 0,
    }
    effects: Counter = Counter()
    for handler, total in totals.items():
        done = [e for e in committed if statuses.get((e, handler)) == "succeeded"]
        effects.update({(e, handler): 1 for e in done})
        if total > len(done):
            result.duplicated.add((handler, f"{total - len(done)} more than done"))
        elif total < len(done):
            result.lost.add((handler, f"{len(done) - total} fewer than done"))
    return effects


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- helpers


def adopt_through_api(client, pet) -> uuid.UUID:
    response = client.post("/api/adoptions", {"petId": str(pet.id)}, format="json")
    assert response.status_code == 202, response.content
    return uuid.UUID(response.json()["adoptionId"])


def adoption_json(client, adoption_id: uuid.UUID) -> dict:
    response = client.get(f"/api/adoptions/{adoption_id}")
    assert response.status_code == 200, response.content
    return response.json()


def adoption_in(client, adoption_id: uuid.UUID, status: str) -> Callable[[], dict | None]:
    """Return a check answering the adoption once it has `status` and every step has settled."""

    def check() -> dict | None:
        body = adoption_json(client, adoption_id)
        settled = all(step["status"] in ("succeeded", "dead") for step in body["steps"])
        return body if settled and body["status"] == status else None

    return check


def steps_of(body: dict) -> dict[str, tuple[str, int]]:
    return {step["name"]: (step["status"], step["attempts"]) for step in body["steps"]}


def deliveries_of(event_id: uuid.UUID) -> dict[str, Delivery]:
    return {d.handler: d for d in Delivery.objects.filter(event_id=event_id)}


def completions(adoption_id: uuid.UUID) -> int:
    return StoredEvent.objects.filter(event_type="AdoptionCompleted", stream_id=adoption_id).count()


def task_results(log: str, result: str) -> Counter[str]:
    """Count, per task name, the worker's "Task …[id] succeeded in …s: '<result>'" lines."""
    pattern = rf"Task ([\w.]+)\[[0-9a-f-]+\] succeeded in [\d.e-]+s: '{re.escape(result)}'"
    return Counter(re.findall(pattern, log))


def html_part(message: EmailMessage) -> str | None:
    part = message.get_body(preferencelist=("html",))
    return part.get_content() if part is not None else None


# --------------------------------------------------------------------------- 1. happy path


def test_adoption_completes_with_every_step_done_once(drill, shelter, customer, customer_client):
    pet = register_pet(shelter=shelter, name="Biscuit")
    completed_queue = f"test.completed.{uuid.uuid4().hex[:8]}"
    bind_queue(drill.broker, completed_queue, "adoption.completed")
    try:
        drill.start_worker("worker")

        adoption_id = adopt_through_api(customer_client, pet)
        body = drill.wait(adoption_in(customer_client, adoption_id, "completed"), what="completed")

        assert steps_of(body) == {step: ("succeeded", 1) for step in STEPS}
        assert body["certificateUrl"].endswith(f"/api/adoptions/{adoption_id}/certificate")
        assert body["vetAppointmentDate"] is not None
        assert ledger(drill.mailbox, drill.media) == Ledger()
        assert completions(adoption_id) == 1
        assert not TaskResult.objects.exists()  # the Delivery rows are the outcome: no result rows
        published = fetch_all(drill.broker, completed_queue, at_least=1, timeout=10)
        assert [m.properties["type"] for m in published] == ["AdoptionCompleted"]
    finally:
        delete_queue(drill.broker, completed_queue)

    mails = {m["To"]: m for m in drill.mailbox.received}
    assert set(mails) == {customer.email, shelter.contact_email}
    for mail in mails.values():
        assert mail.get_content_type() == "multipart/alternative"
        assert "Biscuit" in html_part(mail)
    pdf = customer_client.get(f"/api/adoptions/{adoption_id}/certificate")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert b"".join(pdf.streaming_content).startswith(b"%PDF")


# --------------------------------------------------------------------------- 2. SMTP refuses


def test_refused_emails_go_dead_and_a_redrive_completes_the_adoption(
    drill, shelter, customer, customer_client
):
    pet = register_pet(shelter=shelter)
    drill.mailbox.refuse_data = {
        customer.email: "421 4.3.2 Service not available, try again later",
        shelter.contact_email: "550 5.7.1 Message refused",
    }
    drill.start_worker("worker")

    adoption_id = adopt_through_api(customer_client, pet)
    body = drill.wait(adoption_in(customer_client, adoption_id, "needs_attention"), what="needs attention")

    steps = steps_of(body)  # the 421 was retried until its attempts ran out, the 550 dead at once
    assert {name: steps.pop(name) for name in EMAIL_STEPS} == {
        CONFIRMATION_EMAIL: ("dead", 3),
        SHELTER_NOTICE: ("dead", 1),
    }
    assert steps == {step: ("succeeded", 1) for step in STEPS if step not in EMAIL_STEPS}
    errors = {s["name"]: s["lastError"] for s in body["steps"]}
    assert "421" in errors[CONFIRMATION_EMAIL] and "550" in errors[SHELTER_NOTICE]
    assert "PermanentFailure" in errors[SHELTER_NOTICE]
    assert drill.mailbox.refusals_for(customer.email) == 3  # every attempt reached the server
    assert drill.mailbox.refusals_for(shelter.contact_email) == 1  # 5xx: no point asking again
    assert drill.mailbox.received == [] and not SentEmail.objects.exists()
    assert customer_client.get(f"/api/pets/{pet.id}").json()["status"] == "adopted"
    assert completions(adoption_id) == 0

    drill.mailbox.accept_everything()
    output = io.StringIO()
    call_command("redrive_dead_letters", stdout=output)
    assert output.getvalue().strip() == "redriven 2 dead deliveries"
    body = drill.wait(adoption_in(customer_client, adoption_id, "completed"), what="completion")

    assert steps_of(body) == {step: ("succeeded", 1) for step in STEPS}  # a redrive starts afresh
    assert sorted(m["To"] for m in drill.mailbox.received) == sorted([customer.email, shelter.contact_email])
    assert ledger(drill.mailbox, drill.media) == Ledger()
    assert completions(adoption_id) == 1


# --------------------------------------------------------------------------- 3. SIGKILL


def kill_pool_child(drill: Drill, name: str) -> None:
    """SIGKILL the only pool process of worker `name`: the worker itself lives on."""
    (child,) = children_of(drill.workers[name].pid)
    os.kill(child, signal.SIGKILL)


def kill_whole_worker(drill: Drill, name: str) -> None:
    """SIGKILL the worker and its pool at once, then start another in its place."""
    worker = drill.workers[name]
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    drill.start_worker(f"{name}-2", queues=["certificates"], concurrency=1, CERTIFICATE_EXTRA_SECONDS="1")


@pytest.mark.parametrize("kill", [kill_pool_child, kill_whole_worker], ids=["pool-child", "whole-worker"])
def test_worker_killed_mid_certificate_leaves_exactly_one_certificate(drill, kill, shelter, customer):
    pet = register_pet(shelter=shelter)
    others = [q for q in settings.PETSTORE_HANDLER_QUEUES if q != "certificates"]
    drill.start_worker("steps", queues=others)
    drill.start_worker("certificates", queues=["certificates"], concurrency=1, CERTIFICATE_EXTRA_SECONDS="5")

    adoption = adopt_pet(pet=pet, customer=customer).adoption
    event_id = adoption.adopted_event_id
    running = Delivery.objects.filter(handler=CERTIFICATE, event_id=event_id, status="running")
    drill.wait(running.exists, what="the certificate to be in progress")
    kill(drill, "certificates")
    drill.wait(
        lambda: Adoption.objects.filter(id=adoption.id, status="completed").exists(),
        what="the adoption to complete after the kill",
    )

    certificate = deliveries_of(event_id)[CERTIFICATE]
    assert (certificate.status, certificate.attempts) == ("succeeded", 2)  # redelivered, ran again
    assert Certificate.objects.filter(adoption=adoption).count() == 1
    (pdf,) = drill.media.glob("certificates/*")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert ledger(drill.mailbox, drill.media) == Ledger()
    assert completions(adoption.id) == 1
    if kill is kill_pool_child:  # the same worker noticed and put the message back
        assert "signal 9 (SIGKILL)" in drill.log("certificates")


# --------------------------------------------------------------------------- 4. duplicates


def test_a_fan_out_delivered_twice_has_its_effects_once(drill, shelter, customer):
    pet = register_pet(shelter=shelter)
    # A slow certificate makes its second copy arrive while the first still runs: the copy is
    # about the tenth message, delivered once six others are acknowledged, which on a busy
    # machine can take seconds.
    drill.start_worker("worker", concurrency=4, CERTIFICATE_EXTRA_SECONDS="6")

    with transaction.atomic():  # both copies committed together: published in one batch
        adoption = adopt_pet(pet=pet, customer=customer).adoption
        for step in STEPS:
            outbox.enqueue_handler(HANDLERS[step], adoption.adopted_event_id, at=timezone.now())
    completed = Adoption.objects.filter(id=adoption.id, status="completed")
    drill.wait(completed.exists, what="the adoption to complete")
    drill.wait(
        lambda: set(task_results(drill.log("worker"), "skipped")) == set(STEPS),
        what="every duplicate to be skipped",
    )

    # The relay dies between the broker's confirm and mark-sent: the whole fan-out again.
    fan_out = OutboxMessage.objects.filter(event_id=adoption.adopted_event_id, handler="")
    assert fan_out.update(published_at=None) == 1
    drill.wait(
        lambda: min(task_results(drill.log("worker"), "skipped")[step] for step in STEPS) >= 2,
        what="the re-sent fan-out to be skipped",
    )

    assert task_results(drill.log("worker"), "skipped") == {step: 2 for step in STEPS}
    assert task_results(drill.log("worker"), "busy")[CERTIFICATE] >= 1  # the lock held it off
    deliveries = deliveries_of(adoption.adopted_event_id)
    assert {h: (d.status, d.attempts) for h, d in deliveries.items()} == {
        step: ("succeeded", 1) for step in STEPS
    }
    assert ledger(drill.mailbox, drill.media) == Ledger()
    assert len(drill.mailbox.received) == 2
    assert completions(adoption.id) == 1


# --------------------------------------------------------------------------- 5. poison


def unreadable_pet_adopted() -> uuid.UUID:
    """Commit a PetAdopted event whose payload no handler can parse, with its outbox row."""
    now = timezone.now()
    with transaction.atomic():
        row = StoredEvent(
            stream_type="pet",
            stream_id=uuid.uuid4(),
            stream_version=1,
            event_type="PetAdopted",
            schema_version=1,
            payload={"adoption_id": "not-a-uuid"},
            metadata={},
            recorded_at=now,
        )
        row.save()
        OutboxMessage.objects.create(
            event_id=row.event_id,
            message_name="PetAdopted",
            routing_key="pet.adopted",
            payload=row.payload,
            created_at=now,
            available_at=now,
        )
    return row.event_id


def test_poison_events_go_dead_while_other_adoptions_complete(drill, shelter, customer, other_customer):
    pets = [register_pet(shelter=shelter, name=f"Pet {n}") for n in range(3)]
    bouncing = CustomerFactory(email="no-such-user@example.com")
    drill.mailbox.refuse_rcpt = {bouncing.email: f"550 5.1.1 <{bouncing.email}>: user unknown"}
    drill.start_worker("worker", concurrency=4)

    poison = unreadable_pet_adopted()
    bounced = adopt_pet(pet=pets[0], customer=bouncing).adoption
    fine = [
        adopt_pet(pet=pet, customer=who).adoption
        for pet, who in zip(pets[1:], [customer, other_customer], strict=True)
    ]

    completed = Adoption.objects.filter(id__in=[a.id for a in fine], status="completed")
    drill.wait(lambda: completed.count() == 2, what="the other adoptions to complete")
    drill.wait(
        lambda: (
            Adoption.objects.filter(id=bounced.id, status="needs_attention").exists()
            and Delivery.objects.filter(event_id=poison, status="dead").count() == len(STEPS)
        ),
        what="the poison deliveries to go dead",
    )

    unreadable = deliveries_of(poison)
    assert {h: (d.status, d.attempts) for h, d in unreadable.items()} == {step: ("dead", 1) for step in STEPS}
    schema_error = "InvalidMessage: PetAdopted v1 does not match its schema: adoption_id"
    assert all(d.last_error.startswith(schema_error) for d in unreadable.values())
    bounce = deliveries_of(bounced.adopted_event_id)
    # An unknown recipient is a 5xx: dead at the first refusal, never asked again.
    assert (bounce[CONFIRMATION_EMAIL].status, bounce[CONFIRMATION_EMAIL].attempts) == ("dead", 1)
    assert "PermanentFailure" in bounce[CONFIRMATION_EMAIL].last_error
    assert "550" in bounce[CONFIRMATION_EMAIL].last_error
    assert drill.mailbox.refusals_for(bouncing.email) == 1
    expected = Ledger(lost={(bounced.adopted_event_id, CONFIRMATION_EMAIL)})
    assert ledger(drill.mailbox, drill.media) == expected  # that step alone: dead, no effect
    assert [completions(a.id) for a in (*fine, bounced)] == [1, 1, 0]
    assert not StoredEvent.objects.filter(event_type="AdoptionCompleted", stream_id=poison).exists()
    assert drill.workers["worker"].poll() is None  # the worker survived every poison message


def test_a_step_that_kills_its_worker_goes_dead_and_the_worker_lives_on(drill, shelter, customer):
    """Every run of the analytics step ends the pool process running it (os._exit)."""
    drill.start_worker("worker", concurrency=2, PETSTORE_HANDLER_CRASH=ANALYTICS)  # 3 attempts

    adoption = adopt_pet(pet=register_pet(shelter=shelter), customer=customer).adoption
    needs_attention = Adoption.objects.filter(id=adoption.id, status="needs_attention")
    drill.wait(needs_attention.exists, what="the adoption to need attention", timeout=60)

    deliveries = deliveries_of(adoption.adopted_event_id)
    analytics = deliveries.pop(ANALYTICS)
    # Three runs each killed a process and came back from RabbitMQ; the fourth claim gave up.
    assert (analytics.status, analytics.attempts) == ("dead", 4)
    assert "WorkerLost: gave up after 3 attempts" in analytics.last_error
    assert {d.status for d in deliveries.values()} == {"succeeded"}
    assert drill.log("worker").count("exited with 'exitcode 17'") == 3
    assert drill.workers["worker"].poll() is None  # the worker lives on with fresh pool processes


# --------------------------------------------------------------------------- 6. database restart


def cut_every_other_database_connection() -> int:
    """Do to every other client what a PostgreSQL restart does: end its backend. Returns how
    many (the worker's pool processes, the relay's connection and its LISTEN connection)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_connections_cut_by_a_database_restart_lose_no_step(drill, shelter, customer_client):
    drill.start_worker("worker", concurrency=2)
    before = adopt_through_api(customer_client, register_pet(shelter=shelter, name="Before"))
    drill.wait(adoption_in(customer_client, before, "completed"), what="the first adoption to complete")

    cut = cut_every_other_database_connection()
    pets = [register_pet(shelter=shelter, name=f"After {n}") for n in range(3)]
    after = [adopt_through_api(customer_client, pet) for pet in pets]

    for adoption_id in after:
        completed = adoption_in(customer_client, adoption_id, "completed")
        body = drill.wait(completed, what="the adoptions after the cut to complete")
        assert {status for status, _ in steps_of(body).values()} == {"succeeded"}
    assert cut >= 3, cut
    # The first task on each dead connection could record nothing: it went back to the broker.
    assert re.search(r"retry: Retry in [\d.]+s: (OperationalError|InterfaceError)", drill.log("worker"))
    assert ledger(drill.mailbox, drill.media) == Ledger()  # every step of all four, once
    assert [completions(a) for a in (before, *after)] == [1, 1, 1, 1]


# --------------------------------------------------------------------------- 7. broker lost


def cut_off(proxy: TcpProxy) -> None:
    """Reset the connections, as a broker that died would; listen again at once."""
    proxy.stop()
    proxy.start()  # on the same port: the worker reconnects by itself


def paused(proxy: TcpProxy) -> None:
    """Forward nothing for a few heartbeats, as a paused broker or a cut network would."""
    proxy.freeze()
    time.sleep(8)  # four heartbeats of 2 s: both sides give the connection up
    proxy.thaw()


@pytest.mark.parametrize("fault", [cut_off, paused], ids=["cut-off", "paused"])
def test_a_broker_connection_lost_mid_certificate_reruns_it_once(drill, fault, shelter, customer):
    upstream = urlsplit(drill.broker)
    proxy = TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 5672)).start()
    try:
        others = [q for q in settings.PETSTORE_HANDLER_QUEUES if q != "certificates"]
        drill.start_worker("steps", queues=others)
        drill.start_worker(
            "certificates",
            queues=["certificates"],
            concurrency=1,
            CERTIFICATE_EXTRA_SECONDS="5",
            CELERY_BROKER_URL=proxy.url_for(drill.broker),
            CELERY_BROKER_HEARTBEAT="2",
        )
        adoption = adopt_pet(pet=register_pet(shelter=shelter), customer=customer).adoption
        event_id = adoption.adopted_event_id
        started = Delivery.objects.filter(event_id=event_id, handler=CERTIFICATE, status="running")
        drill.wait(started.exists, what="the certificate to start")

        fault(proxy)  # the worker loses RabbitMQ: its unacknowledged message goes back to the queue
        completed = Adoption.objects.filter(id=adoption.id, status="completed")
        drill.wait(completed.exists, what="the adoption to complete", timeout=60)
    finally:
        proxy.stop()

    certificate = deliveries_of(event_id)[CERTIFICATE]
    assert (certificate.status, certificate.attempts) == ("succeeded", 2)  # stopped, then run again
    assert "cannot be acknowledged after a connection loss" in drill.log("certificates")
    assert Certificate.objects.filter(adoption=adoption).count() == 1
    assert ledger(drill.mailbox, drill.media) == Ledger()
    assert completions(adoption.id) == 1


# --------------------------------------------------------------------------- 8. tasks in hand


def test_a_worker_killed_with_tasks_in_hand_loses_none_of_them(drill, shelter):
    """SIGKILL a whole worker halfway through forty queued emails; another one takes over."""
    drill.mailbox.delay = 0.1  # each email takes a moment, so the kill lands mid-queue
    adoptions = [
        adopt_pet(pet=register_pet(shelter=shelter, name=f"Pet {n}"), customer=CustomerFactory()).adoption
        for n in range(20)
    ]
    expected = {(a.adopted_event_id, step) for a in adoptions for step in EMAIL_STEPS}
    email_queues = ["emails", "shelter-notices"]

    first = drill.start_worker("first", queues=email_queues, concurrency=2)
    drill.wait(lambda: len(drill.mailbox.received) >= 10, what="the first emails")
    os.killpg(first.pid, signal.SIGKILL)  # with a task in each pool process, unacknowledged
    first.wait(timeout=10)
    assert len(drill.mailbox.received) < len(expected)
    drill.start_worker("second", queues=email_queues, concurrency=2)

    done = Delivery.objects.filter(handler__in=EMAIL_STEPS, status="succeeded")
    drill.wait(lambda: done.count() == len(expected), what="every email step to succeed", timeout=60)

    received = Counter(message_key(m) for m in drill.mailbox.received)
    assert set(received) == expected  # none lost, none unexpected
    assert set(SentEmail.objects.values_list("event_id", "handler")) == expected
    # A kill after the server took a message but before our commit sends it again, with the
    # same Message-ID, so the receiving system can drop the copy: at most one per task in hand.
    assert sum(count - 1 for count in received.values()) <= 2

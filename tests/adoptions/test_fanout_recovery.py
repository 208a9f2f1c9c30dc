"""Recovery drills: an SMTP server that comes back within the attempts, a web process without a broker.

The first drill runs as tests/adoptions/test_fanout_faults.py does (its `drill` fixture: a relay
thread, a real Celery worker, RabbitMQ, PostgreSQL and an SMTP server the test owns). The second
runs the web process as deployed (gunicorn, a child process configured from its environment)
with its broker address on a listener that accepts connections and never answers: a request
that tried the broker would hang there until its connect timeout, and the listener counts it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from adoptions.models import Adoption
from events.broker import ConfirmingPublisher
from events.models import OutboxMessage
from events.relay import Relay
from notifications.handlers import CONFIRMATION_EMAIL
from notifications.models import SentEmail
from tests.adoptions import test_fanout_faults
from tests.adoptions.test_fanout_faults import (
    STEPS,
    Ledger,
    adopt_through_api,
    adoption_in,
    completions,
    deliveries_of,
    ledger,
    message_key,
    steps_of,
)
from tests.factories import register_pet
from tests.support.processes import child_env, start, stop
from tests.support.rabbit import bind_queue, delete_queue, deliveries, fetch_all, purge_queues
from tests.support.tcp_proxy import free_port
from tests.support.threads import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

drill = test_fanout_faults.drill  # the fixture: relay thread, SMTP server, clean handler queues


# --------------------------------------------------------------------------- 1. SMTP recovers


class RefusedAtFirst(dict):
    """A Mailbox.refuse_data whose reply to each recipient is given `times` times, then no more."""

    def __init__(self, replies: dict[str, str], *, times: int) -> None:
        super().__init__(replies)
        self.left = dict.fromkeys(replies, times)

    def get(self, recipient, default=None):
        if self.left.get(recipient, 0) <= 0:
            return default
        self.left[recipient] -= 1
        return super().get(recipient, default)


def test_an_email_refused_twice_with_421_is_sent_once_on_the_third_attempt(
    drill, shelter, customer, customer_client
):
    pet = register_pet(shelter=shelter)
    drill.mailbox.refuse_data = RefusedAtFirst(
        {customer.email: "421 4.3.2 Service not available, try again later"}, times=2
    )
    drill.start_worker("worker")  # three attempts, retried within 0.2 s, then 0.4 s

    adoption_id = adopt_through_api(customer_client, pet)
    body = drill.wait(adoption_in(customer_client, adoption_id, "completed"), what="completed")

    steps = steps_of(body)
    assert steps.pop(CONFIRMATION_EMAIL) == ("succeeded", 3)  # the last attempt allowed
    assert steps == {step: ("succeeded", 1) for step in STEPS if step != CONFIRMATION_EMAIL}
    assert drill.mailbox.refusals_for(customer.email) == 2
    event_id = Adoption.objects.get(id=adoption_id).adopted_event_id
    message_id = f"<{event_id}.{CONFIRMATION_EMAIL}@petstore-events>"
    confirmations = [m for m in drill.mailbox.received if message_key(m) == (event_id, CONFIRMATION_EMAIL)]
    assert [(m["Message-ID"].strip(), m["To"]) for m in confirmations] == [(message_id, customer.email)]
    sent = SentEmail.objects.filter(event_id=event_id, handler=CONFIRMATION_EMAIL)
    assert list(sent.values_list("to", "message_id")) == [(customer.email, message_id)]
    assert "421" in deliveries_of(event_id)[CONFIRMATION_EMAIL].last_error  # why it took three
    no_retry_left = OutboxMessage.objects.filter(handler=CONFIRMATION_EMAIL, published_at__isnull=True)
    assert not no_retry_left.exists()  # nothing still scheduled that could send it again
    assert ledger(drill.mailbox, drill.media) == Ledger()  # every step of the adoption, once
    assert completions(adoption_id) == 1


# --------------------------------------------------------------------------- 2. no broker in the web


class SilentBroker:
    """Listen on a local port, accept every connection, never answer; count who came."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        for sock in (*self.accepted, self.listener):
            sock.close()

    def _accept(self) -> None:
        while self._running:
            with contextlib.suppress(TimeoutError):
                self.accepted.append(self.listener.accept()[0])


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    silent = SilentBroker()
    try:
        yield silent
    finally:
        silent.close()


@contextlib.contextmanager
def web_process(log: Path, **env: str) -> Iterator[str]:
    """Run gunicorn as the Procfile does (one worker) on a free port; yield its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "petstore.wsgi", "--bind", f"127.0.0.1:{port}"]
    web = start([*command, "--workers", "1", "--access-logfile", "-"], env=child_env(**env), log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/api/adoptions/{uuid.uuid4()}"), timeout=30, what="gunicorn")
        yield base
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- gunicorn:\n{log.read_text(errors='replace')[-3000:]}") from None
    finally:
        stop(web)


def _answers(url: str) -> bool:
    """Whether the server answers at all (a 404 will do): Django is loaded and serving."""
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def post_adoption(base: str, token: str, pet_id: uuid.UUID) -> tuple[int, dict, float]:
    """POST /api/adoptions over HTTP; return the status, the JSON body and the seconds it took."""
    request = urllib.request.Request(
        f"{base}/api/adoptions",
        data=json.dumps({"petId": str(pet_id)}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        method="POST",
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, json.loads(body or b"{}"), time.monotonic() - started


def test_adoptions_answer_202_at_once_from_a_web_process_whose_broker_never_answers(
    require_postgres, broker, silent_broker, settings, shelter, customer, tmp_path
):
    pets = [register_pet(shelter=shelter, name=f"Pet {n}") for n in range(30)]
    token = Token.objects.create(user=customer.user).key
    pending_before = OutboxMessage.objects.count()

    web_env = {"CELERY_BROKER_URL": silent_broker.url, "PETSTORE_VAR_DIR": str(tmp_path)}
    with web_process(tmp_path / "web.log", **web_env) as web:
        answers = [post_adoption(web, token, pet.id) for pet in pets]

    assert [status for status, _, _ in answers] == [202] * 30, [body for _, body, _ in answers]
    # A connect to the silent broker would take CELERY_BROKER_CONNECTION_TIMEOUT (5 s); an
    # answer takes milliseconds, and 1 s leaves room for a busy machine.
    assert max(seconds for _, _, seconds in answers) < 1.0, [round(s, 3) for _, _, s in answers]
    assert silent_broker.accepted == []  # no process of the web side ever dialled its broker
    adoptions = Adoption.objects.filter(id__in=[body["adoptionId"] for _, body, _ in answers])
    event_ids = {str(event_id) for event_id in adoptions.values_list("adopted_event_id", flat=True)}
    assert len(event_ids) == 30
    adopted = OutboxMessage.objects.filter(routing_key="pet.adopted", published_at__isnull=True)
    assert {str(e) for e in adopted.values_list("event_id", flat=True)} == event_ids
    assert not OutboxMessage.objects.filter(published_at__isnull=False).exists()
    pending = OutboxMessage.objects.count()
    assert pending == pending_before + 30

    queue = f"test.adopted.{uuid.uuid4().hex[:8]}"
    bind_queue(broker, queue, "pet.adopted")
    relay = Relay(ConfirmingPublisher(broker))
    try:
        assert relay.drain(timeout=30) == pending
        consumed = deliveries(fetch_all(broker, queue, at_least=30))
    finally:
        relay.publisher.close()
        delete_queue(broker, queue)
        purge_queues(broker, settings.PETSTORE_HANDLER_QUEUES)  # the tasks no worker here runs
    assert consumed == {(event_id, "pet.adopted"): 1 for event_id in event_ids}
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()

"""PostgreSQL out of reach for a while, with an adoption's steps in flight on a real worker.

The drill of tests/adoptions/test_fanout_faults.py (its `drill` fixture: a relay thread, an
SMTP server, clean handler queues) with a TCP proxy between the Celery worker and PostgreSQL:
the worker's DATABASE_URL names the proxy, while the test and its relay keep their direct
connections. Twenty adoptions are queued and the worker starts on them; part way through, the
proxy resets every connection and refuses new ones for OUTAGE_SECONDS, as a database host gone
from the network would. Nothing can be recorded then, so each task must go back to the broker
(`autoretry_for` in events/handlers.py, backoff capped at 30 s) until PostgreSQL answers again.

The cut comes while both pool processes are inside a (slowed) certificate, whose rerun is safe
by design. An email cut between the server's acceptance and our commit would be sent again
with the same Message-ID, which the README states SMTP cannot avoid; the SIGKILL drill of
test_fanout_faults.py covers that window, this one the database's.

Oracle: the fan-out drill's ledger (each of the seven steps of every adoption done once),
every adoption completed once, no delivery dead, the worker alive, and every task that was
republished finished in the end.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from adoptions.models import Adoption, AdoptionStats, ShelterInventory
from events.models import Delivery, StoredEvent
from tests.adoptions import test_fanout_faults
from tests.adoptions.test_fanout_faults import (
    CERTIFICATE,
    EMAIL_STEPS,
    STEPS,
    Drill,
    Ledger,
    adopt_through_api,
    adoption_json,
    ledger,
    message_key,
)
from tests.factories import register_pet
from tests.support.processes import database_url
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

drill = test_fanout_faults.drill  # the fixture: relay thread, SMTP server, clean handler queues

ADOPTIONS = 20
TOTAL = ADOPTIONS * len(STEPS)
CONCURRENCY = 2
# Long enough for every task to be sent back four times or more (1, 2, 4, 8 s at most, jittered
# down), short enough that the backoff it is then on (16 s, or the 30 s cap) ends in time.
OUTAGE_SECONDS = 16
SETTLE_AFTER_OUTAGE = 50  # the longest backoff (30 s) and the work left, with room to spare
CERTIFICATE_SECONDS = 0.5  # each certificate takes this long: the cut lands inside two of them

RETRY = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] retry: Retry in [\d.]+s: (\w+)\((.*)\)$", re.M)
SUCCEEDED = re.compile(r"Task [\w.]+\[([0-9a-f-]+)\] succeeded in ", re.M)


# --------------------------------------------------------------------------- the proxy


@pytest.fixture
def database_proxy() -> Iterator[TcpProxy]:
    """A TCP proxy to the test database, stopped however the test ends."""
    db = connection.settings_dict
    proxy = TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def cut(proxy: TcpProxy) -> None:
    """Reset every connection through the proxy and refuse new ones: the database is gone."""
    proxy.stop()  # closes its listener before the resets, so no reconnect slips in between


def restore(proxy: TcpProxy) -> None:
    """Listen again on the same port: the worker's next connection goes through."""
    proxy.start()


# --------------------------------------------------------------------------- what happened


@dataclass
class Outage:
    at_cut: Counter[str]  # each step of each adoption by status, just after the cut
    in_hand: dict[tuple[uuid.UUID, str], int]  # claimed, not finished at the cut: attempts so far
    at_end: Counter[str]  # the same as at_cut, just before the database came back
    worker_alive: bool  # at the end of the outage


def step_states(events: set[uuid.UUID]) -> Counter[str]:
    """Each step of each adoption by its delivery's status ("not started": no record yet)."""
    deliveries = Delivery.objects.filter(event_id__in=events, handler__in=STEPS)
    states = Counter(deliveries.values_list("status", flat=True))
    states["not started"] = len(events) * len(STEPS) - states.total()
    return +states


def running(events: set[uuid.UUID]) -> dict[tuple[uuid.UUID, str], int]:
    """The steps claimed and not finished, with the attempts counted so far."""
    rows = Delivery.objects.filter(event_id__in=events, handler__in=STEPS, status="running")
    return {(d.event_id, d.handler): d.attempts for d in rows}


def inside_certificates(events: set[uuid.UUID]) -> bool:
    """Whether some steps are done and every pool process is early in a certificate."""
    if step_states(events)["succeeded"] < 15:
        return False
    # Far enough from its end that neither process can be in an email by the time the cut comes
    recently = timezone.now() - timedelta(seconds=CERTIFICATE_SECONDS - 0.1)
    rows = Delivery.objects.filter(event_id__in=events, handler__in=STEPS, status="running")
    return len(rows) == CONCURRENCY and all(
        d.handler == CERTIFICATE and d.started_at > recently for d in rows
    )


def database_outage(drill: Drill, proxy: TcpProxy, events: set[uuid.UUID]) -> Outage:
    """Cut the worker off PostgreSQL part way through the steps; bring it back after the outage."""
    drill.wait(lambda: inside_certificates(events), what="both pool processes to be in a certificate")
    cut(proxy)
    began = time.monotonic()
    time.sleep(0.5)  # the tasks in hand meet the cut; nothing of the worker's gets through now
    at_cut, in_hand = step_states(events), running(events)
    time.sleep(OUTAGE_SECONDS - (time.monotonic() - began))
    outage = Outage(at_cut, in_hand, step_states(events), drill.workers["worker"].poll() is None)
    restore(proxy)
    return outage


def retries(log: str) -> list[tuple[str, str, str, str]]:
    """(task name, task id, exception class, its text) for each "retry: Retry in …" line."""
    return RETRY.findall(log)


def tasks_still_sent_back(drill: Drill) -> set[str]:
    """Ids of tasks Celery sent back that have not succeeded yet (the PetRegistered inventory
    steps among them: no adoption waits for those)."""
    log = drill.log("worker")
    return {task_id for _, task_id, _, _ in retries(log)} - set(SUCCEEDED.findall(log))


def log_lines(drill: Drill, pattern: str, *, first: int = 10) -> str:
    """The worker's first log lines matching `pattern`, to show in a failure."""
    found = [line for line in drill.log("worker").splitlines() if re.search(pattern, line)]
    return "\n".join(found[:first])


# --------------------------------------------------------------------------- the oracle


def assert_the_outage_hit_work_in_flight(drill: Drill, outage: Outage) -> None:
    """Steps were done, running and waiting at the cut, and none was recorded during it."""
    assert 0 < outage.at_cut["succeeded"] < TOTAL, outage.at_cut
    assert outage.at_cut["not started"] > 0, outage.at_cut
    assert {handler for _, handler in outage.in_hand} == {CERTIFICATE}, outage.in_hand
    assert outage.at_end == outage.at_cut  # the worker really could not reach the database
    for event_id, handler in outage.in_hand:  # each met the cut mid-run and let it through
        met = rf"{handler} failed on {event_id} \(attempt \d+\): (OperationalError|InterfaceError)"
        assert re.search(met, drill.log("worker")), log_lines(drill, "failed on")
    refused = [r for r in retries(drill.log("worker")) if "Connection refused" in r[3]]
    assert refused, log_lines(drill, "retry:")  # tasks arrived, found no database, went back


def assert_every_task_sent_back_finished(drill: Drill) -> None:
    """Celery republished the tasks for as long as it took, and each one finished in the end."""
    log = drill.log("worker")
    sent_back = Counter(task_id for _, task_id, _, _ in retries(log))
    assert {kind for _, _, kind, _ in retries(log)} <= {"OperationalError", "InterfaceError"}
    assert max(sent_back.values()) >= 3, sent_back.most_common(3)  # again and again, not once
    missing = tasks_still_sent_back(drill)
    assert not missing, (sorted(missing)[:10], log_lines(drill, "|".join(sorted(missing)[:3]), first=30))
    assert "raised unexpected" not in log, log_lines(drill, "raised unexpected|Traceback", first=30)


def assert_each_step_done_once(drill: Drill, events: set[uuid.UUID], outage: Outage, *, customer, shelter):
    """The ledger, and the same spelled out: one delivery, email, row or count per step."""
    assert ledger(drill.mailbox, drill.media) == Ledger()
    unfinished = Delivery.objects.exclude(status="succeeded")
    assert not unfinished.exists(), list(unfinished.values_list("handler", "event_id", "status", "attempts"))
    attempts = {(d.event_id, d.handler): d.attempts for d in Delivery.objects.filter(event_id__in=events)}
    assert len(attempts) == TOTAL
    assert Delivery.objects.count() == TOTAL + ADOPTIONS  # and each pet's registration, counted once
    assert all(attempts[key] == n + 1 for key, n in outage.in_hand.items()), (outage.in_hand, attempts)
    emails = Counter(message_key(m) for m in drill.mailbox.received)
    assert emails == {(event, step): 1 for event in events for step in EMAIL_STEPS}
    recipients = Counter(m["To"] for m in drill.mailbox.received)
    assert recipients == {customer.email: ADOPTIONS, shelter.contact_email: ADOPTIONS}
    assert AdoptionStats.objects.aggregate(n=Sum("adoptions"))["n"] == ADOPTIONS
    inventory = ShelterInventory.objects.aggregate(available=Sum("available"), adopted=Sum("adopted"))
    assert inventory == {"available": 0, "adopted": ADOPTIONS}


# --------------------------------------------------------------------------- the test


def test_steps_in_flight_survive_the_database_out_of_reach_for_sixteen_seconds(
    drill, database_proxy, shelter, customer, customer_client
):
    # Given twenty adoptions queued, and a worker whose only way to PostgreSQL is the proxy
    pets = [register_pet(shelter=shelter, name=f"Pet {n}") for n in range(ADOPTIONS)]
    adoption_ids = [adopt_through_api(customer_client, pet) for pet in pets]
    events = set(Adoption.objects.values_list("adopted_event_id", flat=True))
    drill.start_worker(
        "worker",
        concurrency=CONCURRENCY,
        DATABASE_URL=database_proxy.url_for(database_url()),
        CERTIFICATE_EXTRA_SECONDS=str(CERTIFICATE_SECONDS),
    )

    # When the database drops out of the worker's reach part way through, then comes back
    outage = database_outage(drill, database_proxy, events)
    completed = Adoption.objects.filter(id__in=adoption_ids, status="completed")
    drill.wait(
        lambda: completed.count() == ADOPTIONS and not tasks_still_sent_back(drill),
        what="every adoption to complete and every task sent back to finish",
        timeout=SETTLE_AFTER_OUTAGE,
    )

    # Then the outage hit steps in flight, Celery sent their tasks back until they could run,
    assert_the_outage_hit_work_in_flight(drill, outage)
    assert_every_task_sent_back_finished(drill)
    assert outage.worker_alive and drill.workers["worker"].poll() is None, drill.log("worker")[-3000:]
    # and each step of each adoption was done exactly once, none dead
    assert_each_step_done_once(drill, events, outage, customer=customer, shelter=shelter)
    completions = StoredEvent.objects.filter(event_type="AdoptionCompleted", stream_id__in=adoption_ids)
    assert Counter(completions.values_list("stream_id", flat=True)) == dict.fromkeys(adoption_ids, 1)
    for adoption_id in adoption_ids:  # as the customer sees it
        body = adoption_json(customer_client, adoption_id)
        assert (body["status"], {step["status"] for step in body["steps"]}) == ("completed", {"succeeded"})

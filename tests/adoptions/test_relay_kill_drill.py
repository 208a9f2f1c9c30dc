"""Kill -9 the real relay process in the middle of a backlog while a real worker runs the steps.

The two halves of survey §8.5 meet here: relay processes (`manage.py relay_outbox`) die with
a backlog of adoptions half published, one of them between the broker's confirm and
mark-sent (its crash hook), so task messages the worker already ran are published again; the
worker's inbox must turn every copy into a "skipped" delivery, never a second effect.

Oracle: the ledger of tests/adoptions/test_fanout_faults.py (each of the seven steps of every
adoption done exactly once), every adoption completed once, every outbox row published.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator

import kombu
import pytest
from django.conf import settings
from django.db.models import Sum

from adoptions.models import Adoption, AdoptionStats, ShelterInventory
from events.broker import broker_connection
from events.handlers import HANDLERS
from events.models import Delivery, OutboxMessage, StoredEvent
from events.relay import Relay
from tests.adoptions.test_fanout_faults import (
    CONFIRMATION_EMAIL,
    EMAIL_STEPS,
    INVENTORY,
    SHELTER_NOTICE,
    STEPS,
    Drill,
    Ledger,
    adopt_through_api,
    drill_world,
    ledger,
    message_key,
)
from tests.factories import register_pet
from tests.support.processes import child_env, start
from tests.support.rabbit import bind_queue, delete_queue, fetch_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

ADOPTIONS = 100
KILL_BATCH = 2  # rows per batch while killing: ~50 confirms for the backlog, a wide window
CRASH_BATCH = 10  # the crash hook's one batch: 70 task messages run, then published again
ADOPTED = "pet.adopted"
LEASE_SECONDS = 1  # a dead relay's claim expires at once: its successor takes the rows over


# --------------------------------------------------------------------------- the drill


@pytest.fixture
def relay_drill(require_postgres, broker, settings, tmp_path) -> Iterator[Drill]:
    """The fan-out drill's world without its relay thread: the test runs relay processes (kept
    with the drill's workers, so they are stopped with them)."""
    with drill_world(broker, settings, tmp_path) as world:
        yield world


@pytest.fixture
def taps(broker) -> Iterator[dict[str, str]]:
    """Queues of the test's own beside each step's queue and on pet.adopted: a copy of every
    task message and PetAdopted event the broker took, to count what the relays published."""
    suffix = uuid.uuid4().hex[:8]
    names = {step: f"test.tap.{step}.{suffix}" for step in STEPS}
    with broker_connection(broker) as conn:
        channel = conn.channel()
        for step, name in names.items():
            queue = HANDLERS[step].queue  # each step's queue has a direct exchange of its name
            exchange = kombu.Exchange(queue, type="direct", durable=True)
            kombu.Queue(name, exchange, routing_key=queue, durable=True)(channel).declare()
    names[ADOPTED] = f"test.tap.adopted.{suffix}"
    bind_queue(broker, names[ADOPTED], ADOPTED)
    yield names
    for name in names.values():
        delete_queue(broker, name)


def start_relay(drill: Drill, name: str, *, batch_size: int, **env: str) -> subprocess.Popen:
    """Start `manage.py relay_outbox` in its own process group, its log beside the workers'."""
    command = [sys.executable, "manage.py", "relay_outbox", f"--batch-size={batch_size}"]
    environment = child_env(RELAY_LEASE_SECONDS=str(LEASE_SECONDS), **env)
    relay = start(command, env=environment, log=drill.var_dir / f"{name}.log")
    drill.workers[name] = relay  # stopped with them, and its log shown when a wait fails
    return relay


def adopted_rows():
    return OutboxMessage.objects.filter(routing_key=ADOPTED, handler="")


def crash_relay_after_confirm(drill: Drill) -> set[uuid.UUID]:
    """Run a relay whose first batch is confirmed and never marked; return those events."""
    relay = start_relay(drill, "relay-crash", batch_size=CRASH_BATCH, PETSTORE_RELAY_CRASH_AFTER_CONFIRM="1")
    assert relay.wait(timeout=30) == 17, drill.log("relay-crash")
    assert not adopted_rows().filter(published_at__isnull=False).exists()
    leased = adopted_rows().filter(claim_token__isnull=False)  # the dead relay's claim, expiring
    return set(leased.values_list("event_id", flat=True))


def kill_relay_midway(drill: Drill, name: str, *, once_published: int) -> int:
    """Start a relay, SIGKILL its whole group once `once_published` adoptions are marked
    published; return how many were when it died."""
    relay = start_relay(drill, name, batch_size=KILL_BATCH)
    published = adopted_rows().filter(published_at__isnull=False)
    drill.wait(lambda: published.count() >= once_published, what=f"{name} to publish", timeout=30)
    os.killpg(relay.pid, signal.SIGKILL)  # no warm shutdown: wherever it is in its batch
    relay.wait(timeout=10)
    return published.count()


def announce_pets(shelter, count: int) -> list:
    """Register `count` pets and publish their announcements: a shelter open for a while."""
    pets = [register_pet(shelter=shelter, name=f"Pet {n}") for n in range(count)]
    relay = Relay()
    try:
        relay.drain(timeout=30)
    finally:
        relay.publisher.close()
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()
    return pets


def tapped(broker: str, taps: list[str]) -> list[int]:
    """How many messages each tap holds (nobody consumes them: every copy the broker routed)."""
    with broker_connection(broker) as conn:
        channel = conn.channel()
        return [
            kombu.Queue(tap, no_declare=True)(channel).queue_declare(passive=True).message_count
            for tap in taps
        ]


def steps_run(drill: Drill) -> dict[str, Counter[str]]:
    """Per step, how many of its tasks the worker ran, by what deliver() returned."""
    pattern = r"Task ([\w.]+)\[[0-9a-f-]+\] succeeded in [\d.e-]+s: '(\w+)'"
    outcomes = Counter(re.findall(pattern, drill.log("worker")))
    return {
        step: Counter({result: n for (task, result), n in outcomes.items() if task == step}) for step in STEPS
    }


def every_copy_run(drill: Drill, taps: dict[str, str]) -> bool:
    """Whether the worker ran as many tasks of each step as the relays had published."""
    ran = [outcomes.total() for outcomes in steps_run(drill).values()]
    return tapped(drill.broker, [taps[step] for step in STEPS]) == ran


def settle(drill: Drill, adoption_ids: list[uuid.UUID], taps: dict[str, str]) -> None:
    """Wait for every adoption to complete, the outbox to drain and every task to be run."""
    completed = Adoption.objects.filter(id__in=adoption_ids, status="completed")
    drill.wait(lambda: completed.count() == len(adoption_ids), what="every adoption to complete", timeout=60)
    pending = OutboxMessage.objects.filter(published_at__isnull=True)
    drill.wait(lambda: not pending.exists(), what="the outbox to drain")  # completions, busy retries
    drill.wait(lambda: every_copy_run(drill, taps), what="every task message to be run")
    drill.stop_workers()


def assert_each_step_done_once(drill: Drill, events: set[uuid.UUID], *, customer, shelter) -> None:
    """The ledger, and the same spelled out: one delivery, email, row or count per step."""
    assert ledger(drill.mailbox, drill.media) == Ledger()
    deliveries = Delivery.objects.filter(event_id__in=events)
    assert Counter((d.status, d.attempts) for d in deliveries) == {("succeeded", 1): len(events) * len(STEPS)}
    assert not Delivery.objects.exclude(status="succeeded").exists()  # none failed, dead or stuck
    emails = Counter(message_key(m) for m in drill.mailbox.received)
    assert emails == {(event, step): 1 for event in events for step in EMAIL_STEPS}
    recipients = {(message_key(m)[1], m["To"]) for m in drill.mailbox.received}
    assert recipients == {(CONFIRMATION_EMAIL, customer.email), (SHELTER_NOTICE, shelter.contact_email)}
    assert AdoptionStats.objects.aggregate(n=Sum("adoptions"))["n"] == len(events)
    assert ShelterInventory.objects.aggregate(n=Sum("adopted"))["n"] == len(events)


# --------------------------------------------------------------------------- the test


def test_relays_killed_mid_backlog_leave_every_step_of_every_adoption_done_once(
    relay_drill, taps, shelter, customer, customer_client
):
    drill = relay_drill
    pets = announce_pets(shelter, ADOPTIONS)
    adoption_ids = [adopt_through_api(customer_client, pet) for pet in pets]  # no relay runs
    assert adopted_rows().filter(published_at__isnull=True).count() == ADOPTIONS
    drill.start_worker("worker", concurrency=3)

    confirmed_unmarked = crash_relay_after_confirm(drill)
    killed_at = [
        kill_relay_midway(drill, "relay-killed-1", once_published=ADOPTIONS // 4),
        kill_relay_midway(drill, "relay-killed-2", once_published=ADOPTIONS * 3 // 5),
    ]
    start_relay(drill, "relay", batch_size=settings.RELAY_BATCH_SIZE)  # takes the leases over
    settle(drill, adoption_ids, taps)

    # The relays died mid-backlog, so there was something to repair: no vacuous pass.
    assert len(confirmed_unmarked) == CRASH_BATCH
    assert 0 < killed_at[0] < killed_at[1] < ADOPTIONS, killed_at
    events = set(Adoption.objects.values_list("adopted_event_id", flat=True))
    sent = Counter(
        m.properties["message_id"] for m in fetch_all(drill.broker, taps[ADOPTED], at_least=ADOPTIONS)
    )
    assert set(sent) == {str(e) for e in events}  # every PetAdopted published, none unexpected
    assert {uuid.UUID(e) for e, n in sent.items() if n > 1} >= confirmed_unmarked  # published again
    # Each step ran once per adoption; every copy of its task beyond the first was skipped (or
    # found the first still running: "busy", sent again a moment later, then skipped).
    copies = dict(zip(STEPS, tapped(drill.broker, [taps[step] for step in STEPS]), strict=True))
    for step, ran in steps_run(drill).items():
        assert ran.total() == copies[step], (step, copies[step], ran)  # each copy run once
        registrations = ADOPTIONS if step == INVENTORY else 0  # it counts every PetRegistered too
        assert ran["succeeded"] == ADOPTIONS + registrations, (step, ran)
        assert ran["skipped"] >= len(confirmed_unmarked), (step, ran)
        assert set(ran) <= {"succeeded", "skipped", "busy"}, (step, ran)
    assert_each_step_done_once(drill, events, customer=customer, shelter=shelter)
    completions = StoredEvent.objects.filter(event_type="AdoptionCompleted", stream_id__in=adoption_ids)
    assert Counter(completions.values_list("stream_id", flat=True)) == dict.fromkeys(adoption_ids, 1)
    assert set(Adoption.objects.values_list("status", flat=True)) == {"completed"}
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()

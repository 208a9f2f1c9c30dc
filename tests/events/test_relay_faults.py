"""Fault drills for the relay: the broker goes away, stops answering, or the relay dies.

Oracle after each drill (the "ledger"): every committed outbox row was consumed at least once,
nothing was consumed that was never committed, and no row was marked sent without a confirm.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from events import outbox
from events.broker import ConfirmingPublisher
from events.models import OutboxMessage
from tests.factories import adopt_pet, register_pet
from tests.support.processes import child_env, manage
from tests.support.rabbit import deliveries, fetch_all
from tests.support.threads import relay_running, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CONFIRM_TIMEOUT = 2.0


def outbox_rows(**filters) -> set[tuple[str, str]]:
    rows = OutboxMessage.objects.filter(**filters).values_list("event_id", "routing_key")
    return {(str(event_id), key) for event_id, key in rows}


def proxied_publisher(url: str, proxy) -> ConfirmingPublisher:
    return ConfirmingPublisher(proxy.url_for(url), confirm_timeout=CONFIRM_TIMEOUT)


def adopt_through_api(client, pet) -> float:
    """POST an adoption; return how long the answer took."""
    started = time.monotonic()
    response = client.post("/api/adoptions", {"petId": str(pet.id)}, format="json")
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.content
    return elapsed


def test_commands_are_accepted_while_the_broker_is_down_and_the_relay_catches_up(
    broker, broker_proxy, events_queue, make_relay, require_postgres, shelter, customer_client
):
    pets = [register_pet(shelter=shelter, name=f"Pet {n}") for n in range(10)]
    relay = make_relay(proxied_publisher(broker, broker_proxy))
    with relay_running(relay):
        wait_until(lambda: outbox.backlog().pending == 0, timeout=10, what="registrations relayed")

        broker_proxy.stop()
        pending = OutboxMessage.objects.filter(published_at__isnull=True)
        answer_times = [adopt_through_api(customer_client, pet) for pet in pets]

        # The request path never waits for the broker: a few ms each; 3 s leaves room for a busy CI.
        assert max(answer_times) < 3.0, answer_times
        assert outbox.backlog().pending == 10
        wait_until(
            lambda: pending.filter(last_error__startswith="broker unavailable").exists(),
            timeout=10,
            what="the relay to try the dead broker",
        )
        adopted = OutboxMessage.objects.filter(routing_key="pet.adopted")
        assert adopted.count() == 10 and not adopted.filter(published_at__isnull=False).exists()

        broker_proxy.start()  # same port: the running relay must find it again by itself
        wait_until(lambda: outbox.backlog().pending == 0, timeout=30, what="the backlog to drain")

    consumed = deliveries(fetch_all(broker, events_queue, at_least=30))
    assert set(consumed) == outbox_rows()  # nothing lost, nothing unexpected
    assert len(outbox_rows(routing_key="pet.adopted")) == 10


def test_relay_gives_up_on_a_broker_that_stops_answering_and_marks_nothing_sent(
    broker, broker_proxy, events_queue, make_relay, shelter
):
    relay = make_relay(proxied_publisher(broker, broker_proxy))
    register_pet(shelter=shelter, name="Before")
    assert relay.drain(timeout=10) == 2  # connected through the proxy
    stuck = register_pet(shelter=shelter, name="During")

    broker_proxy.freeze()  # like a paused broker: the socket stays open, nothing comes back
    try:
        started = time.monotonic()
        sent = relay.run_once()
        elapsed = time.monotonic() - started
    finally:
        broker_proxy.thaw()

    assert sent == 0
    # The confirm wait and the close are bounded (about 2 x CONFIRM_TIMEOUT): no hang.
    assert elapsed < 10 * CONFIRM_TIMEOUT
    unsent = OutboxMessage.objects.filter(published_at__isnull=True)
    assert {(row.routing_key, row.payload["petId"]) for row in unsent} == {
        ("pet.registered", str(stuck.id)),
        ("pet.available", str(stuck.id)),
    }
    gave_up = re.compile(r"broker unavailable: .*(timed out|no confirm)")
    assert all(gave_up.search(row.last_error) for row in unsent)

    assert relay.drain(timeout=20) == 2
    consumed = deliveries(fetch_all(broker, events_queue, at_least=4))
    # Publishes held by the frozen connection may still arrive after the thaw: at least once.
    assert set(consumed) == outbox_rows() and min(consumed.values()) >= 1
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0


def test_relay_that_dies_between_confirm_and_mark_sent_is_repaired_by_republishing(
    broker, events_queue, make_relay, require_postgres, shelter, customer
):
    for n in range(3):
        register_pet(shelter=shelter, name=f"Pet {n}")
    adopt_pet(pet=register_pet(shelter=shelter, name="Adopted"), customer=customer)
    committed = outbox_rows()
    assert len(committed) == 9

    crashed = manage(
        "relay_outbox",
        "--once",
        env=child_env(PETSTORE_RELAY_CRASH_AFTER_CONFIRM="1", RELAY_LEASE_SECONDS="1"),
    )

    assert crashed.returncode == 17, crashed.stdout + crashed.stderr
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 9  # never marked
    first = deliveries(fetch_all(broker, events_queue, at_least=9))
    assert first == {key: 1 for key in committed}  # yet the broker had confirmed them all

    wait_until(outbox.has_due, timeout=10, what="the dead relay's lease to expire")
    assert make_relay(ConfirmingPublisher(broker)).drain(timeout=10) == 9

    second = deliveries(fetch_all(broker, events_queue, at_least=9))
    assert (first + second) == {key: 2 for key in committed}  # duplicates by design, none lost
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0


# ---------------------------------------------------------------- memory alarm (node-wide)


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


def _watermark_args() -> list[str]:
    """Return the arguments that set the node's current memory watermark back."""
    current = _rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", current)
    if absolute:
        return ["absolute", absolute.group(1)]
    if float(current) < 0.01:  # a previous drill left the alarm on: restore the configured value
        environment = _rabbitmqctl("environment")
        configured = re.search(r"\{vm_memory_high_watermark,\s*([\d.]+)\}", environment)
        return [configured.group(1) if configured else "0.4"]
    return [current]


def _memory_alarm_on() -> bool:
    return "memory" in _rabbitmqctl("eval", "rabbit_alarm:get_alarms().")


@pytest.mark.skipif(
    os.environ.get("PETSTORE_TEST_NODE_ALARMS") != "1",
    reason="raises a node-wide RabbitMQ memory alarm that blocks every publisher on the node: "
    "opt in with PETSTORE_TEST_NODE_ALARMS=1 on a node of your own (rabbitmqctl follows "
    "RABBITMQ_NODENAME)",
)
def test_relay_under_a_memory_alarm_times_out_and_the_api_still_answers(
    broker, events_queue, make_relay, shelter, customer_client
):
    pets = [register_pet(shelter=shelter, name=f"Pet {n}") for n in range(3)]
    relay = make_relay(ConfirmingPublisher(broker, confirm_timeout=CONFIRM_TIMEOUT))
    assert relay.drain(timeout=10) == 6
    restore = _watermark_args()
    try:
        _rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
        wait_until(_memory_alarm_on, timeout=10, what="the memory alarm")

        answer_times = [adopt_through_api(customer_client, pet) for pet in pets]
        started = time.monotonic()
        sent = relay.run_once()
        elapsed = time.monotonic() - started
    finally:
        _rabbitmqctl("set_vm_memory_high_watermark", *restore)
    wait_until(lambda: not _memory_alarm_on(), timeout=10, what="the alarm to clear")

    assert max(answer_times) < 3.0, answer_times  # a publish under the alarm would block for good
    assert sent == 0 and elapsed < 10 * CONFIRM_TIMEOUT
    adopted = OutboxMessage.objects.filter(routing_key="pet.adopted")
    assert adopted.count() == 3 and not adopted.filter(published_at__isnull=False).exists()
    assert relay.drain(timeout=20) == 3
    consumed = deliveries(fetch_all(broker, events_queue, at_least=9))
    assert set(consumed) == outbox_rows()

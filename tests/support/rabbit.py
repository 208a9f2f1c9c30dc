"""Read what the relay published, through kombu, from RabbitMQ or the embedded broker."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from urllib.parse import urlsplit

import kombu

from events.broker import broker_connection, declare_topology, events_exchange


def bind_queue(url: str, name: str, routing_key: str) -> None:
    """Declare the relay's topology plus a durable queue bound to petstore.events."""
    with broker_connection(url) as conn:
        channel = conn.channel()
        declare_topology(channel)
        queue = kombu.Queue(name, events_exchange(), routing_key=routing_key, durable=True)
        queue(channel).declare()


def declare_topology_on(url: str) -> None:
    with broker_connection(url) as conn:
        declare_topology(conn.channel())


def delete_queue(url: str, name: str) -> None:
    with broker_connection(url) as conn:
        kombu.Queue(name)(conn.channel()).delete()


def fetch_all(url: str, queue: str, *, at_least: int = 0, timeout: float = 10.0) -> list[kombu.Message]:
    """Take every message in `queue`, waiting up to `timeout` for at least `at_least` of them."""
    messages: list[kombu.Message] = []
    deadline = time.monotonic() + timeout
    with broker_connection(url) as conn:
        bound = kombu.Queue(queue, no_declare=True)(conn.channel())
        while True:
            message = bound.get(no_ack=True)
            if message is not None:
                messages.append(message)
            elif len(messages) >= at_least or time.monotonic() > deadline:
                return messages
            else:
                time.sleep(0.05)


def deliveries(messages: list[kombu.Message]) -> Counter[tuple[str, str]]:
    """Count deliveries per (event id, routing key): one outbox row each."""
    return Counter((m.properties["message_id"], m.delivery_info["routing_key"]) for m in messages)


def purge_queues(url: str, names: list[str]) -> None:
    """Declare the topology and empty `names`, so no message of an earlier test is left over."""
    with broker_connection(url) as conn:
        channel = conn.channel()
        declare_topology(channel)
        for name in names:
            kombu.Queue(name, no_declare=True)(channel).purge()


def queue_report(url: str) -> str:
    """What RabbitMQ holds for the vhost of `url`: per queue, messages ready and unacknowledged
    and its consumers (with their connections), for a drill's failure message: a message no
    worker ran is either still queued, or held unacknowledged by some consumer."""
    vhost = urlsplit(url).path[1:] or "/"
    reports = []
    for args in (
        ["list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged", "consumers"],
        ["list_consumers", "-p", vhost, "queue_name", "channel_pid", "prefetch_count"],
        ["list_connections", "vhost", "pid", "peer_port", "state"],  # every vhost's: no -p here
    ):
        try:
            done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=30)
            reports.append(f"$ rabbitmqctl {' '.join(args)}\n{done.stdout or done.stderr}")
        except (OSError, subprocess.TimeoutExpired) as error:
            reports.append(f"rabbitmqctl {args[0]}: {error}")
    return "\n".join(reports)

"""Plain py-amqp helpers for the bench's own vhost: connect, bind a queue, publish with confirms."""

from __future__ import annotations

import time
from urllib.parse import unquote, urlsplit

import amqp
from django.conf import settings

from events.broker import declare_topology, envelopes_for, events_exchange


def connect(url: str) -> amqp.Connection:
    parts = urlsplit(url)
    connection = amqp.Connection(
        host=f"{parts.hostname}:{parts.port or 5672}",
        userid=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=unquote(parts.path[1:]) or "/",
        connect_timeout=5,
    )
    connection.connect()
    return connection


def bind_queue(url: str, queue: str, pattern: str) -> None:
    """Declare the product's topology and a queue bound to `pattern`, emptied."""
    import kombu

    with kombu.Connection(url) as conn:
        channel = conn.channel()
        declare_topology(channel, stream=settings.EVENTS_STREAM_ENABLED)
        kombu.Queue(queue, events_exchange(), routing_key=pattern, durable=True)(channel).declare()
        channel.queue_purge(queue)


def queue_depth(url: str, queue: str) -> int:
    connection = connect(url)
    try:
        return connection.channel().queue_declare(queue, passive=True).message_count
    finally:
        connection.close()


def purge(url: str, queue: str) -> None:
    connection = connect(url)
    try:
        connection.channel().queue_purge(queue)
    finally:
        connection.close()


def delete_queue(url: str, queue: str) -> None:
    connection = connect(url)
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


class BatchConfirmPublisher:
    """Publish outbox messages as the relay would, minus the database: batches, then confirms."""

    def __init__(self, url: str) -> None:
        self.connection = connect(url)
        self.channel = self.connection.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.tag = 0
        self.pending: set[int] = set()
        self.nacked = 0

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self.pending -= {t for t in self.pending if t <= tag} if multiple else {tag}

    def _on_nack(self, tag: int, multiple: bool) -> None:
        settled = {t for t in self.pending if t <= tag} if multiple else {tag}
        self.nacked += len(settled & self.pending)
        self.pending -= settled

    def publish_batch(self, messages, *, timeout: float = 10.0) -> None:
        """Publish each row's envelopes (the very AMQP messages the relay sends), then wait.

        The relay also copies each event to the stream when it is enabled: so does this.
        """
        for message in messages:
            for envelope in envelopes_for(message, stream=settings.EVENTS_STREAM_ENABLED):
                self.tag += 1
                self.pending.add(self.tag)
                self.channel.basic_publish(
                    amqp.Message(envelope.body, **envelope.properties),
                    exchange=envelope.exchange,
                    routing_key=envelope.routing_key,
                    mandatory=True,
                )
        deadline = time.monotonic() + timeout
        while self.pending:
            self.connection.drain_events(timeout=max(0.01, deadline - time.monotonic()))

    def close(self) -> None:
        self.connection.close()

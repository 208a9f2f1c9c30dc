"""RabbitMQ topology and the publishers the relay uses.

On AMQP the relay publishes a whole batch with `mandatory` set on a channel in confirm mode
and then waits for the broker's acks: one round trip per batch instead of one per message.
A message no queue is bound for goes to the alternate exchange and its `petstore.unrouted`
queue (kept, visible to operators); if even that fails, the broker returns it and the row
stays unsent. Every event is also appended, in the same batch, to the RabbitMQ stream
`petstore.events.stream` (a replayable log, see events/stream.py) through its own fanout
exchange. Other kombu transports (the embedded filesystem broker) have no confirms and no streams.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Protocol

import amqp
import kombu
from django.conf import settings
from kombu.exceptions import KombuError

from .handlers import HANDLERS, Handler, handlers_for
from .models import OutboxMessage

logger = logging.getLogger(__name__)

UNROUTED_QUEUE = "petstore.unrouted"
CONNECTION_ERRORS = (OSError, socket.timeout, amqp.exceptions.AMQPError, KombuError)


def events_exchange() -> kombu.Exchange:
    return kombu.Exchange(
        settings.EVENTS_EXCHANGE,
        type="topic",
        durable=True,
        arguments={"alternate-exchange": settings.EVENTS_UNROUTED_EXCHANGE},
    )


def unrouted_queue() -> kombu.Queue:
    """Events no queue was bound for, kept for operators to look at — for a while, and up to a
    number: until another service binds to petstore.events, that is every event, and the
    stream already keeps them all (the oldest are dropped first)."""
    exchange = kombu.Exchange(settings.EVENTS_UNROUTED_EXCHANGE, type="fanout", durable=True)
    limits = {
        "x-message-ttl": round(settings.EVENTS_UNROUTED_KEEP_HOURS * 3_600_000),
        "x-max-length": settings.EVENTS_UNROUTED_MAX_LENGTH,
    }
    return kombu.Queue(
        UNROUTED_QUEUE, exchange, durable=True, queue_arguments={k: v for k, v in limits.items() if v}
    )


def events_stream() -> kombu.Queue:
    """The replayable log: a RabbitMQ stream of every event, kept for EVENTS_STREAM_MAX_AGE.

    It hangs off a fanout exchange of its own, not off petstore.events with `#`: such a
    binding would make every routing key routable and the alternate exchange would never
    see an unroutable event again.
    """
    exchange = kombu.Exchange(settings.EVENTS_STREAM_EXCHANGE, type="fanout", durable=True)
    arguments = {"x-queue-type": "stream", "x-max-age": settings.EVENTS_STREAM_MAX_AGE}
    return kombu.Queue(settings.EVENTS_STREAM_NAME, exchange, durable=True, queue_arguments=arguments)


def declare_topology(channel, *, stream: bool | None = None) -> None:
    """Declare the exchanges and queues the relay's messages rely on (idempotent).

    Infrastructure declares them, not consumers starting up: a handler queue must exist
    before its first task is published, or the message would have nowhere to go.
    """
    unrouted_queue()(channel).declare()
    events_exchange()(channel).declare()
    for queue in settings.CELERY_TASK_QUEUES:
        queue(channel).declare()
    if stream is None:  # streams are RabbitMQ's: the embedded broker has none
        stream = settings.EVENTS_STREAM_ENABLED and isinstance(channel, amqp.Channel)
    if stream:
        events_stream()(channel).declare()


def is_rabbitmq(url: str) -> bool:
    """Whether the broker URL names RabbitMQ (else an embedded kombu transport)."""
    return url.startswith(("amqp", "pyamqp"))


def broker_connection(url: str | None = None, *, timeout: float | None = None) -> kombu.Connection:
    url = url or settings.CELERY_BROKER_URL
    timeout = timeout or settings.RELAY_CONFIRM_TIMEOUT_SECONDS
    if is_rabbitmq(url):
        return kombu.Connection(
            url,
            heartbeat=settings.CELERY_BROKER_HEARTBEAT,
            connect_timeout=5,
            transport_options={"read_timeout": timeout, "write_timeout": timeout},
        )
    return kombu.Connection(url, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS)


@dataclass
class PublishResult:
    confirmed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    connection_lost: bool = False


class Publisher(Protocol):
    def publish(self, messages: list[OutboxMessage]) -> PublishResult: ...
    def keep_alive(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Envelope:
    """One AMQP message to publish for an outbox row."""

    row_id: int
    exchange: str
    routing_key: str
    body: str
    properties: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.exchange}|{self.properties.get('message_id')}|{self.routing_key}"


def event_envelope(message: OutboxMessage) -> Envelope:
    """The event itself, on its channel of the topic exchange, for any subscriber."""
    properties = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "message_id": str(message.event_id),
        "type": message.message_name,
        "timestamp": int(message.created_at.timestamp()),
        "correlation_id": message.headers.get("correlation-id") or None,
        "application_headers": message.headers,
    }
    body = json.dumps(message.payload, separators=(",", ":"))
    return Envelope(message.id, settings.EVENTS_EXCHANGE, message.routing_key, body, properties)


def task_envelope(row_id: int, handler: Handler, event_id) -> Envelope:
    """A Celery task message (protocol 2, built by Celery itself) for one handler's queue."""
    from petstore.celery import app

    task_id = str(uuid.uuid4())
    # The Delivery row is the task's outcome: the header must say so, or it overrides the task's
    # own ignore_result and every step also writes a result row nobody reads.
    args = (str(event_id),)
    # repr() of one string is what Celery's saferepr would write, at a fraction of the cost.
    task = app.amqp.as_task_v2(
        task_id, handler.name, args=args, ignore_result=True, argsrepr=repr(args), kwargsrepr="{}"
    )
    properties = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "message_id": task_id,
        "application_headers": task.headers,
        **task.properties,
    }
    body = json.dumps(task.body, separators=(",", ":"))
    return Envelope(row_id, handler.queue, handler.queue, body, properties)


def envelopes_for(message: OutboxMessage, *, stream: bool = False) -> list[Envelope]:
    """An event row fans out to its channel (and the stream) and every subscribed handler.

    A handler row is one task message, for one handler's queue.
    """
    if message.handler:
        return [task_envelope(message.id, HANDLERS[message.handler], message.event_id)]
    event = event_envelope(message)
    # The stream gets the same message again; its fanout exchange keeps the routing key.
    events = [event, replace(event, exchange=settings.EVENTS_STREAM_EXCHANGE)] if stream else [event]
    handlers = handlers_for(message.message_name)
    return events + [task_envelope(message.id, handler, message.event_id) for handler in handlers]


def settle(messages: list[OutboxMessage], failures: dict[int, str]) -> PublishResult:
    """A row counts as published only when every one of its envelopes was confirmed."""
    result = PublishResult()
    for message in messages:
        if message.id in failures:
            result.failed[message.id] = failures[message.id]
        else:
            result.confirmed.append(message.id)
    return result


class ConfirmingPublisher:
    """Publish batches on one AMQP channel in confirm mode; (re)connect on demand."""

    def __init__(self, url: str | None = None, *, confirm_timeout: float | None = None) -> None:
        self.url = url
        self.confirm_timeout = confirm_timeout or settings.RELAY_CONFIRM_TIMEOUT_SECONDS
        self.stream = settings.EVENTS_STREAM_ENABLED
        self.connection: kombu.Connection | None = None
        self.channel = None
        self._next_tag = 0
        self._outstanding: set[int] = set()  # this batch's delivery tags not yet confirmed
        self._nacked: set[int] = set()
        self._returned: dict[str, str] = {}
        self._next_keep_alive = 0.0

    def _connect(self) -> None:
        self.connection = broker_connection(self.url, timeout=self.confirm_timeout)
        self.connection.connect()
        self.channel = self.connection.channel()
        declare_topology(self.channel, stream=self.stream)
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)
        self._next_tag = 0

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, nacked=False)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, nacked=True)

    def _settle(self, tag: int, multiple: bool, *, nacked: bool) -> None:
        """Resolve one tag, or with `multiple` every outstanding tag up to it."""
        settled = {t for t in self._outstanding if t <= tag} if multiple else {tag} & self._outstanding
        self._outstanding -= settled
        if nacked:
            self._nacked |= settled

    def _on_return(self, error, exchange, routing_key, message) -> None:
        # py-amqp calls basic_return handlers with (exception, exchange, routing_key, message).
        key = f"{exchange}|{message.properties.get('message_id')}|{routing_key}"
        reason = f"{error.reply_code} {error.reply_text}"
        self._returned[key] = f"unroutable ({reason}) on {exchange}/{routing_key}"

    def publish(self, messages: list[OutboxMessage]) -> PublishResult:
        """Publish the batch and return which messages the broker confirmed."""
        try:
            if self.connection is None:
                self._connect()
            return self._publish_and_confirm(messages)
        except CONNECTION_ERRORS as error:
            logger.warning("broker unavailable: %s", error)
            self.close()
            reason = f"broker unavailable: {error!r}"
            return PublishResult(failed={m.id: reason for m in messages}, connection_lost=True)

    def _publish_and_confirm(self, messages: list[OutboxMessage]) -> PublishResult:
        self._outstanding.clear(), self._nacked.clear(), self._returned.clear()
        tags: dict[int, Envelope] = {}
        for message in messages:
            for envelope in envelopes_for(message, stream=self.stream):
                self._next_tag += 1
                tags[self._next_tag] = envelope
                self._outstanding.add(self._next_tag)
                self.channel.basic_publish(
                    amqp.Message(envelope.body, **envelope.properties),
                    exchange=envelope.exchange,
                    routing_key=envelope.routing_key,
                    mandatory=True,
                )
        deadline = time.monotonic() + self.confirm_timeout
        while self._outstanding:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no confirm within {self.confirm_timeout}s")
            self.connection.drain_events(timeout=remaining)
        failures: dict[int, str] = {}
        for tag, envelope in tags.items():
            if tag in self._nacked:
                failures[envelope.row_id] = "nacked by the broker"
            elif envelope.key in self._returned:
                failures[envelope.row_id] = self._returned[envelope.key]
        return settle(messages, failures)

    def keep_alive(self) -> None:
        """Send a heartbeat if one is due, between batches.

        An idle relay's connection is otherwise silent, and RabbitMQ closes a connection that
        misses two heartbeats: the next batch would fail once and wait for a reconnect. A
        connection found dead here is dropped, and the next batch opens a new one.
        """
        if self.connection is None or time.monotonic() < self._next_keep_alive:
            return
        self._next_keep_alive = time.monotonic() + min(1.0, settings.CELERY_BROKER_HEARTBEAT / 4)
        try:
            try:  # the broker's heartbeats count only once read
                self.connection.drain_events(timeout=0.001)
            except TimeoutError:  # nothing more to read
                pass
            self.connection.heartbeat_check()
        except CONNECTION_ERRORS as error:
            logger.info("broker connection lost while idle (%s); the next batch reconnects", error)
            self.close()

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:  # closing a dead connection may fail; it is gone either way
                logger.debug("error closing broker connection", exc_info=True)
        self.connection = self.channel = None


class KombuPublisher:
    """Publish through any kombu transport without confirms or a stream (the embedded broker)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self.connection: kombu.Connection | None = None
        self.producer: kombu.Producer | None = None

    def publish(self, messages: list[OutboxMessage]) -> PublishResult:
        try:
            if self.producer is None:
                self.connection = broker_connection(self.url)
                channel = self.connection.channel()
                declare_topology(channel, stream=False)
                self.producer = kombu.Producer(channel)
            for message in messages:
                for envelope in envelopes_for(message):
                    properties = dict(envelope.properties)
                    headers = properties.pop("application_headers", {})
                    exchange, routing_key = self._route(envelope)
                    self.producer.publish(
                        envelope.body,
                        exchange=exchange,
                        routing_key=routing_key,
                        headers=headers,
                        **properties,
                    )
        except CONNECTION_ERRORS as error:
            self.close()
            return PublishResult(failed={m.id: repr(error) for m in messages}, connection_lost=True)
        return PublishResult(confirmed=[m.id for m in messages])

    def keep_alive(self) -> None:
        """Nothing to do: the embedded transports have no heartbeats."""

    def _route(self, envelope: Envelope) -> tuple[str, str]:
        """Play the alternate exchange: the embedded broker would drop an unbound message."""
        if envelope.exchange != settings.EVENTS_EXCHANGE:
            return envelope.exchange, envelope.routing_key
        channel = self.producer.channel
        table = channel.get_table(envelope.exchange)
        bound = channel.typeof(envelope.exchange).lookup(table, envelope.exchange, envelope.routing_key, None)
        unrouted = (settings.EVENTS_UNROUTED_EXCHANGE, envelope.routing_key)  # fanout keeps the key
        return (envelope.exchange, envelope.routing_key) if bound else unrouted

    def close(self) -> None:
        if self.connection is not None:
            self.connection.release()
        self.connection = self.producer = None


def make_publisher(url: str | None = None) -> Publisher:
    url = url or settings.CELERY_BROKER_URL
    if is_rabbitmq(url):
        return ConfirmingPublisher(url)
    return KombuPublisher(url)
